"""kill -9 at the worst moments of publish, promote and apply (ENVPIPE_PAUSE_AT stops
envpipe there): no half version becomes visible, no mixed folder is applied, nothing
is lost, and what is left says what happened and how to go on."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import list_repository, read_repository_file

BOTH = pytest.mark.parametrize("repository_url", ["folder", "s3"], indirect=True)
S3_ONLY = pytest.mark.parametrize("repository_url", ["s3"], indirect=True)


def killed_at(project, point: str, *args: str) -> str:
    """Run envpipe until it pauses at ``point``, kill -9 it there; its stderr so far."""
    env = {**os.environ, "ENVPIPE_PAUSE_AT": point, "ENVPIPE_PAUSE_SECONDS": "120"}
    process = subprocess.Popen([sys.executable, "-m", "envpipe_agent", *args], cwd=project.root, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = []
    assert process.stderr is not None
    for line in process.stderr:
        seen.append(line)
        if f"paused at {point}" in line:
            break
    process.kill()
    process.wait(timeout=30)
    process.stderr.close()
    assert any(f"paused at {point}" in line for line in seen), "".join(seen)
    return "".join(seen)


def last_line(result) -> str:
    return result.stderr.strip().splitlines()[-1]


@BOTH
@pytest.mark.parametrize("point", ["publish:claimed", "publish:uploaded"])
def test_a_killed_publish_leaves_no_visible_version_and_a_rerun_completes_it(project, point):
    project.write("vars.tf", 'variable "instance_count" {\n  default = 1\n}\n')
    killed_at(project, point, "publish", "--version", "1.0.1")
    assert read_repository_file(project.repository, "1.0.1/.envpipe/manifest.json") is None
    assert "its publish was cut short" in last_line(project.envpipe("verify", "1.0.1", check=2))
    refused = project.envpipe("promote", "1.0.1", "--to", "test", check=2)
    assert "not published" in last_line(refused)
    project.envpipe("publish", "--version", "1.0.1", check=0)
    project.envpipe("verify", "1.0.1", check=0)
    # another source cannot take the version its first publisher claimed
    project.write("main.tf", 'resource "terraform_data" "other" {}\n')
    assert "other content" in last_line(project.envpipe("publish", "--version", "1.0.1", check=3))


def two_versions(project) -> None:
    project.envpipe("publish", "--version", "1.0.1", check=0)
    project.envpipe("promote", "1.0.1", "--to", "test", check=0)
    project.write("main.tf", 'resource "terraform_data" "example" {\n  input = "two"\n}\n')
    project.write("extra.tf", 'output "two" {\n  value = 2\n}\n')
    project.envpipe("publish", "--version", "1.0.2", check=0)


@BOTH
def test_a_promote_killed_after_copying_is_never_applied_and_says_how_to_complete(project):
    two_versions(project)
    killed_at(project, "promote:copied", "promote", "1.0.2", "--to", "test")
    # The folder holds 1.0.2's files under 1.0.1's manifest: a mixed folder.
    assert b"two" in read_repository_file(project.repository, "test/main.tf")

    verify = last_line(project.envpipe("verify", "test", check=3))
    assert "promote of version 1.0.2" in verify and "cut short" in verify
    assert "envpipe promote 1.0.2 --to test" in verify and "find out who changed it" not in verify

    # While the killed run's lease lasts, status cannot tell it from a slow one.
    status = project.envpipe("status", check=0).stdout
    assert "1.0.1 (promote of 1.0.2 unfinished)" in status
    assert "test: locked by" in status and "(promote," in status
    entry = json.loads(project.envpipe("status", "--json", check=0).stdout)["environments"][0]
    assert entry["interrupted_promote"]["version"] == "1.0.2" and entry["locked_by"]["action"] == "promote"

    # The killed run's lock stays until its lease runs out: a clear refusal, then unlock.
    assert "locked by" in last_line(project.envpipe("promote", "1.0.2", "--to", "test", check=3))
    project.envpipe("unlock", "test", "--reason", "the promote was killed", check=0)
    status = project.envpipe("status", check=0).stdout
    assert "1.0.1 (promote of 1.0.2 cut short)" in status and "complete it with 'envpipe promote 1.0.2" in status
    page = project.root / "status.html"
    project.envpipe("status", "--html", str(page), check=0)
    assert "was cut short" in page.read_text()
    refused = project.envpipe("apply", "test", check=3, timeout=300)
    assert "cut short" in last_line(refused)
    assert read_repository_file(project.repository, ".envpipe/state/test/terraform.tfstate") is None

    project.envpipe("promote", "1.0.2", "--to", "test", check=0)
    project.envpipe("verify", "test", check=0)
    assert "cut short" not in project.envpipe("status", check=0).stdout


@BOTH
def test_a_first_promote_killed_after_copying_is_named_by_verify(project):
    project.envpipe("publish", "--version", "1.0.1", check=0)
    killed_at(project, "promote:copied", "promote", "1.0.1", "--to", "test")
    assert "a promote into it was cut short" in last_line(project.envpipe("verify", "test", check=3))
    assert "holds no version" in last_line(project.envpipe("apply", "test", check=2))


@BOTH
def test_a_promote_killed_before_copying_leaves_the_old_version_whole(project):
    two_versions(project)
    killed_at(project, "promote:copying", "promote", "1.0.2", "--to", "test")
    project.envpipe("verify", "test", check=0)  # nothing changed yet: 1.0.1, whole
    assert "promote of 1.0.2 unfinished" in project.envpipe("status", check=0).stdout


@S3_ONLY
@pytest.mark.parametrize("point", ["apply:fetched", "apply:done"])
def test_a_killed_apply_leaves_its_lock_to_expire_or_unlock_and_nothing_is_lost(project, point, tmp_path):
    project.envpipe("publish", "--version", "1.0.1", check=0)
    project.envpipe("promote", "1.0.1", "--to", "test", check=0)
    work = tmp_path / "tmp"
    work.mkdir()
    killed_at(project, point, "apply", "test")
    lock = json.loads(read_repository_file(project.repository, ".envpipe/locks/test.json"))
    assert lock["action"] == "apply"
    refused = project.envpipe("apply", "test", check=3)
    assert "locked by" in last_line(refused) and "envpipe unlock test" in last_line(refused)
    project.envpipe("unlock", "test", "--reason", "agent killed", check=0)
    project.envpipe("apply", "test", check=0, timeout=300)
    records = [json.loads(body) for body in list_repository(project.repository, ".envpipe/records/test/").values()]
    assert [r["action"] for r in records if r["action"] in ("apply", "unlock")] == ["unlock", "apply"]
    assert read_repository_file(project.repository, ".envpipe/state/test/terraform.tfstate.tflock") is None
