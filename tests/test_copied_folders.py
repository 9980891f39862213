"""A folder copied by hand is not a promoted one: verify, apply and test refuse it alike,
and promoting again repairs it (SPEC §3: apply verifies before it runs)."""
from __future__ import annotations

import json
import os

import pytest

from conftest import list_repository, read_repository_file
from envpipe_agent.errors import IntegrityError
from envpipe_agent.manifest import Manifest, check_folder, read_manifest
from envpipe_agent.repository import open_repository
from envpipe_agent.stages.promote import promote
from envpipe_agent.stages.publish import publish

MANIFEST = ".envpipe/manifest.json"
FOLDER_ONLY = pytest.mark.parametrize("repository_url", ["folder"], indirect=True)


def copy_folder(repository, source: str, target: str) -> None:
    """What `cp -r repo/<source> repo/<target>` (or `aws s3 sync`) does: every object, manifest included."""
    for info in list(repository.list(f"{source}/")):
        relative = info.key[len(source) + 1:]
        if relative != ".envpipe/claim.json":
            repository.write(f"{target}/{relative}", repository.read(info.key))


@pytest.fixture
def published(project):
    """1.0.1 published, in process; the repository opened directly."""
    project.write("modules/net/net.tf", "# net\n")
    publish(project.context(), version="1.0.1")
    return open_repository(project.repository, dict(os.environ))


def test_a_version_copied_into_an_environment_is_refused_by_verify_and_apply_alike(project, published):
    copy_folder(published, "1.0.1", "test")
    verified = project.envpipe("verify", "test", check=3)
    applied = project.envpipe("apply", "test", check=3)
    for result in (verified, applied):
        assert "holds the manifest of '1.0.1', not 'test'" in result.stderr
        assert "envpipe promote VERSION --to test" in result.stderr
    recorded = json.loads(read_repository_file(project.repository, ".envpipe/summary/test/apply.json"))
    assert recorded["result"] == "refused"  # on the record, and Terraform never ran:
    assert list_repository(project.repository, ".envpipe/state/") == {}


def test_promoting_again_repairs_a_version_copied_into_an_environment(project, published):
    copy_folder(published, "1.0.1", "test")
    outcome = json.loads(project.envpipe("--json", "promote", "1.0.1", "--to", "test", check=0).stdout)
    assert outcome["copied"] == 0 and outcome["unchanged"] == 2  # the files were right; the manifest was not
    assert json.loads(read_repository_file(project.repository, f"test/{MANIFEST}"))["environment"] == "test"
    project.envpipe("verify", "test", check=0)
    assert json.loads(read_repository_file(project.repository, ".envpipe/summary/test/promote.json"))["result"] == "done"


@FOLDER_ONLY
def test_a_forced_promote_repairs_an_environment_copied_from_another_and_says_it_was_forced(project, published):
    ctx = project.context()
    promote(ctx, "test", "1.0.1")
    copy_folder(published, "test", "staging")
    assert "holds the manifest of 'test', not 'staging'" in project.envpipe("verify", "staging", check=3).stderr
    outcome = json.loads(project.envpipe("--json", "promote", "1.0.1", "--to", "staging", "--force",
                                         "--reason", "repair a hand-made copy", check=0).stdout)
    assert outcome["forced"] is True and outcome["copied"] == 0
    assert read_repository_file(project.repository, ".envpipe/summary/staging/override.json") is not None
    stored = json.loads(read_repository_file(project.repository, f"staging/{MANIFEST}"))
    assert (stored["environment"], stored["promoted"]["reason"]) == ("staging", "repair a hand-made copy")
    project.envpipe("verify", "staging", check=0)
    # and now it is the environment's own: promoting again is the no-op it should be
    again = json.loads(project.envpipe("--json", "promote", "1.0.1", "--to", "staging", "--force",
                                       "--reason", "again", check=0).stdout)
    assert again["copied"] == 0 and again["forced"] is False


@FOLDER_ONLY
def test_the_test_stage_refuses_an_environment_holding_a_versions_manifest(project, published):
    (project.root / "envpipe.yml").write_text(
        (project.root / "envpipe.yml").read_text() + "tests:\n  path: tests/\n")
    project.write("tests/test_ok.py", "def test_ok():\n    assert True\n")
    ctx = project.context()
    publish(ctx, version="1.0.2")
    promote(ctx, "test", "1.0.2")
    ctx.records.write("test", "apply", "1.0.2", "done", {"outputs": {}})
    project.envpipe("test", "test", check=0)  # the folder as promoted passes
    published.write(f"test/{MANIFEST}", published.read(f"1.0.2/{MANIFEST}"))  # the files still match it
    result = project.envpipe("test", "test", check=3)
    assert "holds the manifest of '1.0.2', not 'test'" in result.stderr


def test_a_version_folder_holding_an_environments_manifest_or_another_project_is_refused(project, published,
                                                                                         tmp_path):
    promote(project.context(), "test", "1.0.1")
    copy_folder(published, "test", "1.0.7")
    with pytest.raises(IntegrityError, match="holds the manifest of 'test', not '1.0.7'"):
        check_folder(published, "1.0.7", tmp_path / "a")
    assert "publish the definition under a new version" in project.envpipe("verify", "1.0.7", check=3).stderr

    theirs = read_manifest(published, "1.0.1")
    other = Manifest.build("other-project", "1.0.1", theirs.files, {})
    published.write(f"1.0.1/{MANIFEST}", other.to_json())
    check_folder(published, "1.0.1", tmp_path / "b")  # the project is not known here
    with pytest.raises(IntegrityError, match="project 'other-project', not 'our-project'"):
        check_folder(published, "1.0.1", tmp_path / "c", project="our-project")
    assert "another project's repository" in project.envpipe("verify", "1.0.1", check=3).stderr
    assert not any(p.is_file() for p in (tmp_path / "c").rglob("*"))  # refused before a file was fetched
