"""verify, and keys that would escape a work folder, whoever put them there (SPEC §3)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import boto3
import pytest

from conftest import REGION, list_repository, read_repository_file
from envpipe_agent.errors import IntegrityError, UnsafePath
from envpipe_agent.manifest import FileEntry, check_folder, content_digest
from envpipe_agent.repository import open_repository
from envpipe_agent.stages.promote import promote
from envpipe_agent.stages.publish import publish

MANIFEST = ".envpipe/manifest.json"
S3_ONLY = pytest.mark.parametrize("repository_url", ["s3"], indirect=True)

FOLDER_ONLY = pytest.mark.parametrize("repository_url", ["folder"], indirect=True)


@pytest.fixture
def promoted(project):
    """1.0.1 published and promoted into test, in process."""
    project.write("modules/net/net.tf", "# net\n")
    ctx = project.context()
    publish(ctx, version="1.0.1")
    promote(ctx, "test", "1.0.1")
    return open_repository(project.repository, dict(os.environ))


def plant(project, key: str, body: bytes) -> None:
    """Put an object straight into the bucket or folder, bypassing envpipe's checks."""
    if project.repository.startswith("s3://"):
        bucket, _, prefix = project.repository[5:].partition("/")
        boto3.client("s3", region_name=REGION).put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=body)
    else:
        path = Path(project.repository, *key.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)


def test_verify_passes_an_intact_version_and_environment(project, promoted):
    result = json.loads(project.envpipe("--json", "verify", "1.0.1", check=0).stdout)
    assert (result["ok"], result["files"], result["version"]) == (True, 2, "1.0.1")
    verified = project.envpipe("verify", "test", check=0)
    # One success line, on stdout; nothing else says it again in other words.
    assert verified.stdout == "test: version 1.0.1 verified (2 files match its manifest)\n"
    assert "match" not in verified.stderr


def test_tampered_environment_file_of_the_same_size_is_caught(project, promoted):
    original = promoted.read("test/main.tf")
    promoted.write("test/main.tf", b"#" * len(original))
    result = project.envpipe("verify", "test", check=3)
    assert "altered: main.tf" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_and_extra_files_are_named(project, promoted):
    promoted.delete(["test/modules/net/net.tf"])
    promoted.write("test/backdoor.tf", b"# planted\n")
    result = project.envpipe("verify", "test", check=3)
    assert "missing: modules/net/net.tf" in result.stderr and "extra: backdoor.tf" in result.stderr


def test_an_edited_manifest_is_refused(project, promoted):
    manifest = json.loads(promoted.read(f"test/{MANIFEST}"))
    manifest["files"]["main.tf"]["sha256"] = "0" * 64
    promoted.write(f"test/{MANIFEST}", json.dumps(manifest).encode())
    assert "manifest digest does not match" in project.envpipe("verify", "test", check=3).stderr


@FOLDER_ONLY
def test_verify_of_nothing_or_of_nonsense_is_a_usage_error(project, promoted):
    assert "has no manifest" in project.envpipe("verify", "9.9.9", check=2).stderr
    assert "not in envpipe.yml" in project.envpipe("verify", "qa", check=2).stderr
    assert "neither a version nor an environment" in project.envpipe("verify", "_x", check=2).stderr


@S3_ONLY
def test_planted_dot_dot_key_in_an_environment_is_refused(project, promoted):
    plant(project, "test/../evil", b"evil")
    result = project.envpipe("verify", "test", check=3)
    assert "unsafe key '../evil'" in result.stderr
    project.write("main.tf", "# 1.0.2\n")
    project.envpipe("publish", "--version", "1.0.2", check=0)
    assert "unsafe key" in project.envpipe("promote", "1.0.2", "--to", "test", check=3).stderr
    assert json.loads(read_repository_file(project.repository, f"test/{MANIFEST}"))["version"] == "1.0.1"


def test_planted_backslash_key_in_a_version_is_refused(project, promoted):
    plant(project, "1.0.1/a\\b", b"x")
    result = project.envpipe("verify", "1.0.1", check=3)
    assert "backslash" in result.stderr


def test_manifest_listing_a_path_outside_the_folder_is_refused(project):
    files = {"../x": FileEntry(size=1, sha256="0" * 64), "main.tf": FileEntry(size=1, sha256="1" * 64)}
    manifest = {"format": 1, "project": "our-project", "version": "1.0.9", "digest": content_digest(files),
                "published": {}, "files": {p: e.as_dict() for p, e in files.items()}}
    plant(project, f"1.0.9/{MANIFEST}", json.dumps(manifest).encode())
    plant(project, "1.0.9/main.tf", b"x")
    assert "unsafe key '../x'" in project.envpipe("verify", "1.0.9", check=3).stderr
    assert "unsafe key '../x'" in project.envpipe("promote", "1.0.9", "--to", "test", check=3).stderr
    assert list_repository(project.repository, "test/") == {}


def test_fetching_a_folder_downloads_exactly_the_manifests_files(project, promoted, tmp_path):
    destination = tmp_path / "fetched"
    destination.mkdir()
    manifest, result = check_folder(promoted, "test", destination)
    assert result.ok and manifest.version == "1.0.1"
    fetched = {p.relative_to(destination).as_posix() for p in destination.rglob("*") if p.is_file()}
    assert fetched == {"main.tf", "modules/net/net.tf"}


def test_fetching_a_tampered_folder_refuses_naming_the_file(project, promoted, tmp_path):
    promoted.write("test/main.tf", b"# tampered\n")
    with pytest.raises(IntegrityError, match="main.tf"):
        check_folder(promoted, "test", tmp_path)


def test_fetching_a_folder_with_an_unsafe_key_refuses(project, promoted, tmp_path):
    plant(project, "test/x\\y", b"x")
    with pytest.raises(UnsafePath):
        check_folder(promoted, "test", tmp_path)


def test_an_environment_manifest_copied_from_another_environment_is_refused(project, promoted):
    for info in list(promoted.list("test/")):
        promoted.write("staging/" + info.key[len("test/"):], promoted.read(info.key))
    result = project.envpipe("verify", "staging", check=3)
    assert "holds the manifest of 'test', not 'staging'" in result.stderr
