"""envpipe sandbox up|test|destroy end to end (SPEC §9): the working copy, unpublished,
applied to a developer's own instance with real Terraform, on both backends."""
from __future__ import annotations

import json

import boto3
import pytest
from conftest import REGION, list_repository, read_repository_file, run_envpipe

from envpipe_agent.ci_context import detect
from envpipe_agent.manifest import content_digest
from envpipe_agent.registrations import registration_key
from envpipe_agent.source import read_definition
from envpipe_agent.stages.sandbox import default_name
from test_on_demand import CFN_TEMPLATE, DEFINITION, cfn_working_copy, left_of, one_line  # noqa: F401 - a fixture

FOLDER_ONLY = pytest.mark.parametrize("repository_url", ["folder"], indirect=True)
SUITE = """\
import json, os

def test_it_runs_against_the_sandbox():
    assert os.environ["ENVPIPE_ENVIRONMENT"] == "sandbox-tester"
    assert os.environ["ENVPIPE_VERSION"].startswith("wc-")
    assert json.load(open(os.environ["ENVPIPE_OUTPUTS"]))["name"].startswith("sandbox-tester-")
"""


def with_tests(project) -> None:
    config = project.root / "envpipe.yml"
    config.write_text(config.read_text() + "tests: {path: tests}\n")
    project.write("main.tf", DEFINITION)
    project.write("tests/test_sandbox.py", SUITE)


def working_copy_version(project) -> str:
    return "wc-" + content_digest({f.path: f.entry for f in read_definition(project.source)})[len("sha256:"):][:12]


def test_a_developer_brings_a_sandbox_up_from_an_edited_working_copy(project):
    with_tests(project)
    first = json.loads(project.envpipe("--json", "sandbox", "up", "--test", check=0).stdout)

    assert first["name"] == "sandbox-tester" and first["version"] == working_copy_version(project)
    assert (first["uploaded"], first["unchanged"]) == (2, 0)
    assert first["applied"]["outputs"] == {"name": "sandbox-tester-0"}
    assert first["tested"]["passed"] is True
    manifest = json.loads(read_repository_file(project.repository, "sandbox-tester/.envpipe/manifest.json"))
    assert (manifest["version"], manifest["environment"]) == (first["version"], "sandbox-tester")
    assert not [key for key in list_repository(project.repository, "") if key.startswith("wc-")]  # not published
    assert json.loads(read_repository_file(project.repository, registration_key("sandbox-tester")))["kind"] == "sandbox"

    project.write("main.tf", DEFINITION.replace("-${var", "-edited-${var"))
    second = json.loads(project.envpipe("--json", "sandbox", "up", check=0).stdout)

    assert second["version"] == working_copy_version(project) != first["version"]
    assert (second["uploaded"], second["deleted"], second["unchanged"]) == (1, 0, 1)  # only what changed
    assert second["applied"]["outputs"] == {"name": "sandbox-tester-edited-0"}
    assert second["expires"] == first["expires"]
    listed = json.loads(project.envpipe("env", "list", "--json", check=0).stdout)
    assert [(i["name"], i["kind"], i["version"]) for i in listed] == [("sandbox-tester", "sandbox", second["version"])]
    assert "changed since" not in project.envpipe("sandbox", "test", check=0).stderr
    project.envpipe("verify", "sandbox-tester", check=0)
    project.write("main.tf", DEFINITION + "# not brought up yet\n")
    assert "changed since the last 'sandbox up'" in project.envpipe("sandbox", "test", check=0).stderr

    destroyed = project.envpipe("sandbox", "destroy", check=0)

    assert "sandbox-tester: destroyed (1 resources destroyed" in destroyed.stdout
    assert left_of(project, "sandbox-tester") == {}


@FOLDER_ONLY
def test_an_unchanged_working_copy_uploads_nothing(project):
    project.envpipe("sandbox", "up", "mine", check=0)

    again = json.loads(project.envpipe("--json", "sandbox", "up", "mine", check=0).stdout)

    assert (again["uploaded"], again["deleted"], again["applied"]["changed"]) == (0, 0, False)


@FOLDER_ONLY
@pytest.mark.parametrize("name, content", [(".env", "DB_PASSWORD=hunter22\n"),
                                           ("terraform.tfstate", "{}\n"),
                                           ("keys.txt", "aws_access_key_id = AKIAQWERTYUIOPASDFGH\n")])
def test_a_working_copy_holding_secrets_is_refused_and_nothing_is_written(project, name, content):
    project.write(name, content)

    refused = project.envpipe("sandbox", "up", check=3)

    assert name in one_line(refused.stderr)
    assert list_repository(project.repository, "") == {}


@FOLDER_ONLY
def test_sandbox_commands_on_what_is_no_sandbox_exit_2(project):
    assert "no sandbox named 'sandbox-tester'" in one_line(project.envpipe("sandbox", "test", check=2).stderr)
    assert "no sandbox named 'x'" in one_line(project.envpipe("sandbox", "destroy", "x", check=2).stderr)
    assert "invalid name 'Mine'" in one_line(project.envpipe("sandbox", "up", "Mine", check=2).stderr)
    assert "environment of the path" in one_line(project.envpipe("sandbox", "up", "staging", check=2).stderr)
    assert list_repository(project.repository, "") == {}


def test_the_default_name_is_the_ci_user_made_a_valid_name():
    jenkins = {"JENKINS_URL": "http://ci/", "BUILD_USER_ID": "Alice.Smith@Example.com"}
    assert default_name(detect(jenkins).user) == "sandbox-alice-smith-example-com"
    assert default_name(detect({"USER": "bob"}).user) == "sandbox-bob"
    assert default_name(None) == "sandbox-unknown"


def test_a_cloudformation_sandbox_is_created_updated_and_deleted(cfn_working_copy, moto_server):
    root = cfn_working_copy
    cloudformation = boto3.client("cloudformation", region_name=REGION, endpoint_url=moto_server)
    ssm = boto3.client("ssm", region_name=REGION, endpoint_url=moto_server)

    first = json.loads(run_envpipe(["--json", "sandbox", "up"], cwd=root, check=0).stdout)

    stack = cloudformation.describe_stacks(StackName="our-project-sandbox-tester")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    assert ssm.get_parameter(Name="/our-project/sandbox-tester/version")["Parameter"]["Value"] == first["version"]

    (root / "infra" / "stack.yaml").write_text(CFN_TEMPLATE.replace("Default: 0", "Default: 2"))
    second = json.loads(run_envpipe(["--json", "sandbox", "up"], cwd=root, check=0).stdout)

    assert second["version"] != first["version"] and second["uploaded"] == 1
    assert ssm.get_parameter(Name="/our-project/sandbox-tester/version")["Parameter"]["Value"] == second["version"]

    run_envpipe(["sandbox", "destroy"], cwd=root, check=0)

    assert not [s for s in cloudformation.list_stacks()["StackSummaries"]
                if s["StackName"] == "our-project-sandbox-tester" and s["StackStatus"] != "DELETE_COMPLETE"]
