"""Local files (generated pipelines, JUnit reports, the status page, saved plans) are
replaced in one step: whole or not at all, nothing left behind, the mode kept."""
from __future__ import annotations

import pytest

from envpipe_agent.files import replacing, write_file


def test_a_new_file_is_written_whole_with_the_usual_mode(tmp_path):
    path = write_file(tmp_path / "Jenkinsfile", "pipeline {}\n")
    assert path.read_text() == "pipeline {}\n"
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["Jenkinsfile"]


def test_a_replaced_file_keeps_its_mode_unless_one_is_given(tmp_path):
    path = tmp_path / "report.xml"
    path.write_bytes(b"old")
    path.chmod(0o640)
    write_file(path, b"new")
    assert (path.read_bytes(), path.stat().st_mode & 0o777) == (b"new", 0o640)
    write_file(path, b"plan", mode=0o600)
    assert (path.read_bytes(), path.stat().st_mode & 0o777) == (b"plan", 0o600)


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "status.html"
    path.write_text("old page")
    with pytest.raises(RuntimeError):
        with replacing(path) as stream:
            stream.write(b"half a pa")
            raise RuntimeError("rendering failed")
    assert path.read_text() == "old page"
    assert [p.name for p in tmp_path.iterdir()] == ["status.html"]
