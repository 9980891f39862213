"""envpipe bluegreen end to end (SPEC §9), as subprocesses with real Terraform
(terraform_data) on a folder repository and on moto S3: releases swap blue -> green
-> blue through a router stack, the old instance goes (or is kept and rolled back
to), failing tests and a failing router never move traffic, and a release cut short
at any step is completed by the next run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from conftest import REGION, list_repository, read_repository_file

INSTANCE = """\
variable "envpipe_environment" {}
variable "envpipe_version" {}
resource "terraform_data" "app" {
  input = "${var.envpipe_environment}@${var.envpipe_version}"
}
output "endpoint" {
  value = "https://${var.envpipe_environment}.example.com"
}
output "served" {
  value = terraform_data.app.output
}
"""
# The router records which instance is live, as a real one would point a DNS record
# or a listener rule at it.
ROUTER = """\
variable "envpipe_live_color" {}
variable "envpipe_live_environment" {}
variable "envpipe_live_outputs" {}
resource "terraform_data" "route" {
  input = {
    color    = var.envpipe_live_color
    instance = var.envpipe_live_environment
    endpoint = jsondecode(var.envpipe_live_outputs)["endpoint"]
  }
}
output "live_color" {
  value = terraform_data.route.output.color
}
output "live_endpoint" {
  value = terraform_data.route.output.endpoint
}
"""
TESTS = """\
import os

def test_serves_its_own_version():
    # production's tests run against its live instance (production-blue@1.0.1, say).
    served = os.environ["ENVPIPE_OUTPUT_SERVED"]
    assert served.startswith(os.environ["ENVPIPE_ENVIRONMENT"]) and served.endswith("@" + os.environ["ENVPIPE_VERSION"])
    assert {failing}
"""
CONFIG = """\
project: our-project
source: infra
repository: {repository}
environments:
  - name: test
  - name: production
    bluegreen: {{router: router/}}
tests:
  path: tests/
"""
FOLDER_ONLY = pytest.mark.parametrize("repository_url", ["folder"], indirect=True)
FORCE = ("--force", "--reason", "released without test in these tests")


@pytest.fixture
def bg(project):
    (project.root / "envpipe.yml").write_text(CONFIG.format(repository=project.repository))
    project.write("main.tf", INSTANCE)
    project.write("router/main.tf", ROUTER)
    return project


def publish(project, version: str, failing: bool = False, router: str = ROUTER) -> None:
    project.write("tests/test_app.py", TESTS.format(failing="False" if failing else "True"))
    project.write("router/main.tf", router)
    project.envpipe("publish", "--version", version, check=0)


def live(project) -> dict:
    return json.loads(read_repository_file(project.repository, ".envpipe/live/production.json"))


def records(project, environment: str, action: str) -> list:
    found = list_repository(project.repository, f".envpipe/records/{environment}/")
    return [json.loads(body) for key, body in sorted(found.items()) if f"-{action}-" in key]


def routed(project) -> dict:
    """The outputs of the router's last apply: where traffic goes."""
    return [r for r in records(project, "production-router", "apply") if r["result"] == "done"][-1]["outputs"]


def holds(project, folder: str) -> str:
    raw = read_repository_file(project.repository, f"{folder}/.envpipe/manifest.json")
    return json.loads(raw)["version"] if raw else None


def test_two_releases_swap_blue_green_blue_and_destroy_the_old_instance(bg, terraform):
    publish(bg, "1.0.1")
    first = bg.envpipe("--json", "bluegreen", "production", "1.0.1", *FORCE, check=0)
    assert json.loads(first.stdout)["live"] == "blue"
    assert live(bg)["color"] == "blue" and live(bg)["version"] == "1.0.1" and live(bg)["release"] is None
    assert routed(bg) == {"live_color": "blue", "live_endpoint": "https://production-blue.example.com"}
    assert holds(bg, "production") == "1.0.1"

    publish(bg, "1.0.2")
    second = bg.envpipe("bluegreen", "production", "1.0.2", *FORCE, check=0)
    assert "live on production-green (was production-blue; production-blue destroyed" in second.stdout
    assert routed(bg)["live_color"] == "green"
    assert holds(bg, "production") == "1.0.2" and holds(bg, "production-blue") is None
    # The old instance's state is gone with it; the live one's is there.
    assert not list_repository(bg.repository, ".envpipe/state/production-blue/")
    assert list_repository(bg.repository, ".envpipe/state/production-green/")

    publish(bg, "1.0.3")
    bg.envpipe("bluegreen", "production", "1.0.3", *FORCE, check=0)
    assert routed(bg)["live_color"] == "blue" and live(bg)["version"] == "1.0.3"
    assert holds(bg, "production-green") is None

    # ENV holds V for gates, status and tests: its test result and outputs are the live instance's.
    tests = records(bg, "production", "test")
    assert [(t["version"], t["result"], t["bluegreen"]) for t in tests] == [
        ("1.0.1", "passed", "production-blue"), ("1.0.2", "passed", "production-green"),
        ("1.0.3", "passed", "production-blue")]
    steps = [r["step"] for r in records(bg, "production", "bluegreen") if r["version"] == "1.0.3"]
    assert steps == ["gate", "deploy", "test", "swap", "record", "destroy-old", "released"]
    # Testing production tests the live instance.
    bg.envpipe("test", "production", check=0)


@FOLDER_ONLY
def test_failing_tests_leave_traffic_and_the_live_instance_alone(bg):
    publish(bg, "1.0.1")
    bg.envpipe("bluegreen", "production", "1.0.1", *FORCE, check=0)
    publish(bg, "1.0.2", failing=True)
    failed = bg.envpipe("bluegreen", "production", "1.0.2", *FORCE, check=1)
    assert "failed its tests in production-green" in failed.stderr
    assert "traffic stays on production-blue" in failed.stderr
    assert live(bg)["color"] == "blue" and live(bg)["version"] == "1.0.1"
    assert live(bg)["release"]["state"] == "failed" and live(bg)["release"]["step"] == "test"
    assert routed(bg)["live_color"] == "blue"
    assert holds(bg, "production") == "1.0.1" and holds(bg, "production-blue") == "1.0.1"
    assert holds(bg, "production-green") == "1.0.2"  # kept for inspection
    status = json.loads(bg.envpipe("--json", "status", check=0).stdout)
    production = [e for e in status["environments"] if e["environment"] == "production"][0]
    assert production["bluegreen"]["live"] == "blue"
    assert production["bluegreen"]["release"]["state"] == "failed"
    assert production["bluegreen"]["idle"] == "production-green" and production["bluegreen"]["idle_version"] == "1.0.2"
    table = bg.envpipe("status", "--html", str(bg.root / "status.html"), check=0).stdout
    assert "LIVE blue 1.0.1; idle production-green 1.0.2; release of 1.0.2 failed at test: traffic on " \
           "production-blue" in table
    page = (bg.root / "status.html").read_text()
    assert 'data-live="blue"' in page and "Release of 1.0.2 into production-green failed at step test" in page

    # The next good release goes into the same idle instance, and then completes.
    publish(bg, "1.0.3")
    bg.envpipe("bluegreen", "production", "1.0.3", *FORCE, check=0)
    assert live(bg)["color"] == "green" and live(bg)["release"] is None


@FOLDER_ONLY
def test_a_failing_router_reports_traffic_not_swapped_and_destroys_nothing(bg):
    publish(bg, "1.0.1")
    bg.envpipe("bluegreen", "production", "1.0.1", *FORCE, check=0)
    publish(bg, "1.0.2", router=ROUTER.replace('["endpoint"]', '["no_such_output"]'))
    failed = bg.envpipe("bluegreen", "production", "1.0.2", *FORCE, check=1)
    assert "traffic was not swapped to production-green (nothing was destroyed)" in failed.stderr
    assert live(bg)["color"] == "blue" and live(bg)["release"]["step"] == "swap"
    assert holds(bg, "production-blue") == "1.0.1" and holds(bg, "production-green") == "1.0.2"
    assert holds(bg, "production") == "1.0.1"


@FOLDER_ONLY
def test_a_manual_environment_needs_an_approver_recorded_with_the_release(bg):
    (bg.root / "envpipe.yml").write_text(CONFIG.format(repository=bg.repository).replace(
        "    bluegreen:", "    approval: manual\n    bluegreen:"))
    publish(bg, "1.0.1")
    refused = bg.envpipe("bluegreen", "production", "1.0.1", *FORCE, check=3)
    assert "needs an approver" in refused.stderr
    assert read_repository_file(bg.repository, ".envpipe/live/production.json") is None
    bg.envpipe("bluegreen", "production", "1.0.1", *FORCE, "--approved-by", "alice", check=0)
    released = records(bg, "production", "bluegreen")[-1]
    assert released["step"] == "released" and released["approved_by"] == "alice"
    bg.envpipe("bluegreen", "production", "--finish", check=3)  # --finish changes production too


@FOLDER_ONLY
def test_keep_old_then_rollback_and_finish(bg):
    publish(bg, "1.0.1")
    bg.envpipe("bluegreen", "production", "1.0.1", *FORCE, check=0)
    again = bg.envpipe("bluegreen", "production", "1.0.1", *FORCE, check=0)  # a retried stage
    assert "version 1.0.1 is already live on production-blue: nothing to do" in again.stdout
    none = bg.envpipe("bluegreen", "production", "--rollback", check=3)
    assert "no old instance to roll back to" in none.stderr
    publish(bg, "1.0.2")
    kept = bg.envpipe("bluegreen", "production", "1.0.2", "--keep-old", *FORCE, check=0)
    assert "production-blue kept for --rollback" in kept.stdout
    assert holds(bg, "production-blue") == "1.0.1"

    back = bg.envpipe("bluegreen", "production", "--rollback", check=0)
    assert "traffic on production-blue (version 1.0.1); production-green kept" in back.stdout
    assert routed(bg)["live_color"] == "blue"
    assert live(bg)["version"] == "1.0.1" and live(bg)["old"] == {"color": "green", "version": "1.0.2"}
    assert holds(bg, "production") == "1.0.1"

    bg.envpipe("bluegreen", "production", "--finish", check=0)
    assert holds(bg, "production-green") is None and live(bg)["old"] is None
    bg.envpipe("bluegreen", "production", "--rollback", check=3)


@FOLDER_ONLY
def test_guards(bg):
    publish(bg, "1.0.1")
    gate = bg.envpipe("bluegreen", "production", "1.0.1", check=3)
    assert "has not passed its tests in test" in gate.stderr and "envpipe bluegreen production 1.0.1 --force" \
        in gate.stderr
    check = bg.envpipe("bluegreen", "production", "1.0.1", "--check", check=3)
    assert "would be refused now" in check.stderr
    assert read_repository_file(bg.repository, ".envpipe/live/production.json") is None
    for args in (("promote", "1.0.1", "--to", "production"), ("apply", "production")):
        refused = bg.envpipe(*args, check=2)
        assert "production is released blue-green" in refused.stderr and "envpipe bluegreen production" \
            in refused.stderr
    for name in ("production", "production-blue"):
        refused = bg.envpipe("destroy", name, check=2)
        assert "production is released blue-green" in refused.stderr
    bg.envpipe("bluegreen", "test", "1.0.1", check=2)  # not a blue-green environment
    bg.envpipe("bluegreen", "production", "1.0.1", "--force", check=2)  # --force needs --reason
    # A second release while one holds the lock.
    lock = Path(bg.repository) / ".envpipe/locks/production.json"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"id": "x", "environment": "production", "action": "bluegreen",
                                "holder": "someone@agent", "acquired": "2026-11-29T20:00:00Z",
                                "expires": "2999-01-01T00:00:00Z"}))
    held = bg.envpipe("bluegreen", "production", "1.0.1", *FORCE, check=3)
    assert "someone@agent" in held.stderr


@FOLDER_ONLY
def test_a_router_folder_without_a_stack_is_refused(bg):
    publish(bg, "1.0.1")
    (bg.source / "router" / "main.tf").unlink()
    (bg.source / "router" / "README").write_text("no stack\n")
    refused = bg.envpipe("publish", "--version", "1.0.2", check=2)
    assert "environments[1].bluegreen.router: the definition has no router/*.tf" in refused.stderr
    assert read_repository_file(bg.repository, "1.0.2/.envpipe/manifest.json") is None
    # A version published before production went blue-green has no router either.
    (bg.root / "envpipe.yml").write_text(CONFIG.format(repository=bg.repository).replace(
        "    bluegreen: {router: router/}\n", ""))
    bg.envpipe("publish", "--version", "1.0.2", check=0)
    (bg.root / "envpipe.yml").write_text(CONFIG.format(repository=bg.repository))
    refused = bg.envpipe("bluegreen", "production", "1.0.2", *FORCE, check=2)
    assert "version 1.0.2 has no router/*.tf" in refused.stderr
    config = bg.root / "envpipe.yml"
    config.write_text(CONFIG.format(repository=bg.repository).replace("router/", "../router"))
    assert "must be a relative path inside the definition" in bg.envpipe("status", check=2).stderr


def _interrupted_at(bg, step: str, version: str) -> subprocess.CompletedProcess:
    """Run a release, SIGTERM it once it reaches ``step``, return how it ended."""
    env = dict(os.environ, ENVPIPE_PAUSE_AT=f"bluegreen:{step}", ENVPIPE_PAUSE_SECONDS="60")
    process = subprocess.Popen([sys.executable, "-m", "envpipe_agent", "bluegreen", "production", version, *FORCE],
                               cwd=bg.root, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    for line in process.stderr:
        if f"paused at bluegreen:{step}" in line:
            process.send_signal(signal.SIGTERM)
            break
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@FOLDER_ONLY
@pytest.mark.parametrize("step", ["deploy", "test", "swap", "record", "destroy-old"])
def test_sigterm_at_each_step_then_the_next_run_completes(bg, step):
    publish(bg, "1.0.1")
    bg.envpipe("bluegreen", "production", "1.0.1", *FORCE, check=0)
    publish(bg, "1.0.2")
    stopped = _interrupted_at(bg, step, "1.0.2")
    assert stopped.returncode == 130, stopped.stderr
    swapped = step in ("record", "destroy-old")
    state = live(bg)
    assert state["color"] == ("green" if swapped else "blue")
    assert state["release"]["step"] == step and state["release"]["state"] == "interrupted"
    assert routed(bg)["live_color"] == state["color"]  # traffic is where the live object says
    status = bg.envpipe("status", check=0).stdout
    assert f"interrupted at {step}" in status

    again = bg.envpipe("bluegreen", "production", "1.0.2", *FORCE, check=0)
    assert live(bg)["color"] == "green" and live(bg)["release"] is None
    assert routed(bg)["live_color"] == "green"
    assert holds(bg, "production") == "1.0.2" and holds(bg, "production-blue") is None
    assert ("completed a release cut short" in again.stdout) == swapped


# --- CloudFormation on moto --------------------------------------------------------

CFN_INSTANCE = """\
Parameters:
  EnvpipeEnvironment: {Type: String}
  EnvpipeVersion: {Type: String}
Resources:
  Version:
    Type: AWS::SSM::Parameter
    Properties:
      Name: !Sub "/our-project/${EnvpipeEnvironment}/version"
      Type: String
      Value: !Ref EnvpipeVersion
Outputs:
  Endpoint:
    Value: !Sub "https://${EnvpipeEnvironment}.example.com"
"""
CFN_ROUTER = """\
Parameters:
  EnvpipeLiveColor: {Type: String, AllowedValues: [blue, green]}
  EnvpipeLiveEnvironment: {Type: String}
  EnvpipeLiveOutputs: {Type: String}
Resources:
  Live:
    Type: AWS::SSM::Parameter
    Properties:
      Name: /our-project/production/live
      Type: String
      Value: !Ref EnvpipeLiveColor
  LiveInstance:
    Type: AWS::SSM::Parameter
    Properties:
      Name: /our-project/production/live-instance
      Type: String
      Value: !Ref EnvpipeLiveEnvironment
  LiveOutputs:
    Type: AWS::SSM::Parameter
    Properties:
      Name: /our-project/production/live-outputs
      Type: String
      Value: !Ref EnvpipeLiveOutputs
"""
CFN_CONFIG = """\
project: our-project
source: infra
repository: s3://our-project-repository
tool: cloudformation
cloudformation:
  template: stack.yaml
environments:
  - name: test
  - name: production
    bluegreen: {router: router}
tests:
  path: tests/
"""


@pytest.fixture
def moto_keeps_parameters(monkeypatch):
    """moto's ExecuteChangeSet updates a stack's template but not its parameters, so
    the next change set compared with the stale ones finds "no changes" where real
    CloudFormation changes the parameter's resources: the set-up bridges it (moto
    runs in this process)."""
    from moto.cloudformation.models import CloudFormationBackend

    execute = CloudFormationBackend.execute_change_set

    def execute_keeping_parameters(self, change_set_name, stack_name=None):
        execute(self, change_set_name, stack_name)
        for change_set in self.change_sets.values():
            if change_set_name in (change_set.change_set_id, change_set.change_set_name):
                self.stacks[change_set.stack_id].parameters = change_set.parameters

    monkeypatch.setattr(CloudFormationBackend, "execute_change_set", execute_keeping_parameters)


@pytest.mark.parametrize("repository_url", ["s3"], indirect=True)
def test_cloudformation_releases_swap_the_live_color_in_ssm(bg, cloudformation, moto_keeps_parameters):
    (bg.root / "envpipe.yml").write_text(CFN_CONFIG)
    (bg.source / "main.tf").unlink()
    (bg.source / "router" / "main.tf").unlink()
    bg.write("stack.yaml", CFN_INSTANCE)
    bg.write("router/stack.yaml", CFN_ROUTER)
    bg.write("tests/test_app.py", "import os\n\ndef test_instance():\n"
                                  "    assert os.environ['ENVPIPE_ENVIRONMENT'].startswith('production')\n")
    ssm = boto3.client("ssm", region_name=REGION)
    stacks = {s["StackName"] for s in cloudformation.list_stacks()["StackSummaries"]}

    def live_parameter() -> str:
        return ssm.get_parameter(Name="/our-project/production/live")["Parameter"]["Value"]

    def stacks_up() -> set:
        return {s["StackName"] for s in cloudformation.describe_stacks()["Stacks"]} - stacks

    for version, color in (("1.0.1", "blue"), ("1.0.2", "green"), ("1.0.3", "blue")):
        bg.envpipe("publish", "--version", version, check=0)
        released = bg.envpipe("bluegreen", "production", version, *FORCE, check=0)
        assert live_parameter() == color, released.stderr
        assert ssm.get_parameter(Name="/our-project/production/live-instance")["Parameter"]["Value"] == \
            f"production-{color}"
        # The instance's outputs as JSON (moto gives a stack made by a change set no
        # Outputs, so here it is the empty object).
        live_outputs = ssm.get_parameter(Name="/our-project/production/live-outputs")["Parameter"]["Value"]
        assert isinstance(json.loads(live_outputs), dict)
        assert stacks_up() == {f"our-project-production-{color}", "our-project-production-router"}
        assert ssm.get_parameter(Name=f"/our-project/production-{color}/version")["Parameter"]["Value"] == version

    # Kept and rolled back to: the parameter follows.
    bg.envpipe("publish", "--version", "1.0.4", check=0)
    bg.envpipe("bluegreen", "production", "1.0.4", "--keep-old", *FORCE, check=0)
    assert live_parameter() == "green"
    bg.envpipe("bluegreen", "production", "--rollback", check=0)
    assert live_parameter() == "blue"
    assert stacks_up() == {"our-project-production-blue", "our-project-production-green",
                           "our-project-production-router"}
    bg.envpipe("bluegreen", "production", "--finish", check=0)
    assert stacks_up() == {"our-project-production-blue", "our-project-production-router"}


# --- generated pipelines ----------------------------------------------------------


@FOLDER_ONLY
@pytest.mark.parametrize("target", ["jenkins", "gocd-xml", "gocd-yaml"])
def test_generated_pipelines_release_a_bluegreen_environment_with_bluegreen(bg, target):
    from envpipe_agent.config import load_config
    from envpipe_agent.generate import render

    (bg.root / "envpipe.yml").write_text(CONFIG.format(repository=bg.repository).replace(
        "    bluegreen:", "    approval: manual\n    bluegreen:") + "ci:\n  gocd: {git_url: https://git.example.com/x.git}\n")
    text = render(load_config(bg.root / "envpipe.yml"), target)
    # the check before the approval, then one release command with the idle instance's JUnit report
    # The commands' words, whether a shell line (Jenkins), <arg>s (GoCD XML) or a YAML list.
    words = [w for w in text.replace('"', " ").replace("'", " ").replace("<arg>", " ").replace("</arg>", " ").split()
             if w != "-"]
    pairs = list(zip(words, words[1:]))
    release = [i for i, word in enumerate(words) if word.endswith("bluegreen")]
    assert [words[i + 1] for i in release] == ["production"] * 2
    assert "--check" in words[release[0]:release[1]] and "--junit" in words[release[1]:]
    assert ("--to", "production") not in pairs and not {("apply", "production"), ("test", "production")} & set(pairs)
    assert "envpipe-reports/production.xml" in text
    assert ("--to", "test") in pairs  # the other environments as before


@FOLDER_ONLY
def test_the_plan_the_approvers_saw_is_what_the_new_instance_gets(bg):
    publish(bg, "1.0.1")
    bg.envpipe("bluegreen", "production", "1.0.1", *FORCE, check=0)
    publish(bg, "1.0.2")
    planned = bg.envpipe("plan", "production", "--version", "1.0.2", "--out", "production.plan", check=0)
    assert "production-green" in planned.stdout  # the instance the release goes into
    bg.envpipe("bluegreen", "production", "1.0.2", "--plan", "production.plan", *FORCE, check=0)
    (applied,) = [r for r in records(bg, "production-green", "apply") if r["result"] == "done"]
    (plan,) = records(bg, "production-green", "plan")
    assert applied["plan"]["sha256"] == plan["saved_plan"]["sha256"]
    # A plan of the instance that is now live is not one a release may apply.
    publish(bg, "1.0.3")
    refused = bg.envpipe("bluegreen", "production", "1.0.3", "--plan", "production.plan", *FORCE, check=3)
    assert live(bg)["color"] == "green" and routed(bg)["live_color"] == "green", refused.stderr
