"""Symlinks in the source folder: followed inside it, refused when they lead out of it
(they would publish whatever they point at on the agent), unless .envpipeignore'd."""
from __future__ import annotations

from pathlib import Path

import pytest

from envpipe_agent.errors import UnsafeSource
from envpipe_agent.source import read_definition


def source(tmp_path: Path) -> Path:
    root = tmp_path / "infra"
    root.mkdir()
    (root / "main.tf").write_text("# main\n")
    outside = tmp_path / "elsewhere"
    (outside / "net").mkdir(parents=True)
    (outside / "net" / "net.tf").write_text("# shared\n")
    (outside / "credentials").write_text("[default]\n")
    return root


def test_folder_link_leading_outside_the_source_is_refused_and_named(tmp_path):
    root = source(tmp_path)
    (root / "modules").symlink_to(tmp_path / "elsewhere", target_is_directory=True)

    with pytest.raises(UnsafeSource) as caught:
        read_definition(root)
    message = str(caught.value)
    assert f"modules/ -> {(tmp_path / 'elsewhere').resolve()}" in message
    assert ".envpipeignore" in message
    assert caught.value.exit_code == 3


def test_file_link_leading_outside_the_source_is_refused_and_named(tmp_path):
    root = source(tmp_path)
    (root / "aws.ini").symlink_to(tmp_path / "elsewhere" / "credentials")

    with pytest.raises(UnsafeSource, match=r"aws\.ini -> .*elsewhere/credentials"):
        read_definition(root)


def test_ignored_outside_links_are_left_out(tmp_path):
    root = source(tmp_path)
    (root / "modules").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "aws.ini").symlink_to(tmp_path / "elsewhere" / "credentials")
    (root / ".envpipeignore").write_text("modules/\naws.ini\n")

    assert [f.path for f in read_definition(root)] == [".envpipeignore", "main.tf"]


def test_file_link_inside_the_source_is_published(tmp_path):
    root = source(tmp_path)
    (root / "alias.tf").symlink_to(root / "main.tf")

    assert [f.path for f in read_definition(root)] == ["alias.tf", "main.tf"]


def test_publish_with_an_outside_link_exits_3_and_uploads_nothing(project, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "id").write_text("x\n")
    (project.source / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)

    result = project.envpipe("publish", "--version", "1.0.1", check=3)

    assert "linked/ ->" in result.stderr.strip().splitlines()[-1]
    assert project.envpipe("verify", "1.0.1").returncode != 0
