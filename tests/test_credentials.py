"""Role assumption and the account guard, against moto's STS (default account 123456789012)."""
from __future__ import annotations

import json
import os

import pytest
from conftest import list_repository

from envpipe_agent import StageContext, promote, publish
from envpipe_agent.aws_credentials import client, environment_credentials
from envpipe_agent.ci_context import detect
from envpipe_agent.config import Environment
from envpipe_agent.errors import AccountMismatch

JENKINS = {"JENKINS_URL": "https://ci.example/", "JOB_NAME": "infra/main", "BUILD_NUMBER": "42"}


@pytest.fixture
def sts_environ(s3) -> dict:
    """The agent's environment, with AWS_ENDPOINT_URL pointing at moto (set by the s3 fixture)."""
    return {**os.environ, **JENKINS}


def test_role_is_assumed_with_a_session_named_after_the_ci_build(sts_environ):
    env = Environment(name="production", role_arn="arn:aws:iam::123456789012:role/deployer",
                      account_id="123456789012")
    credentials = environment_credentials(env, sts_environ, detect(sts_environ))
    assert credentials.arn == "arn:aws:sts::123456789012:assumed-role/deployer/envpipe-jenkins-infra-main-42"
    assert credentials.environ["AWS_ACCESS_KEY_ID"] != sts_environ["AWS_ACCESS_KEY_ID"]
    assert credentials.environ["AWS_SESSION_TOKEN"] in credentials.secrets
    # boto3 clients built from the returned mapping act as the role.
    identity = client("sts", credentials.environ).get_caller_identity()
    assert identity["Arn"] == credentials.arn


def test_role_in_another_account_passes_its_own_account_guard(sts_environ):
    env = Environment(name="production", role_arn="arn:aws:iam::111111111111:role/deployer",
                      account_id="111111111111")
    assert environment_credentials(env, sts_environ, detect(sts_environ)).account == "111111111111"


def test_credentials_for_another_account_are_refused_with_exit_3(sts_environ):
    env = Environment(name="production", account_id="999999999999")
    with pytest.raises(AccountMismatch) as raised:
        environment_credentials(env, sts_environ, detect(sts_environ))
    assert raised.value.exit_code == 3
    assert "AWS account 999999999999, but the credentials are for account 123456789012" in str(raised.value)


def test_environment_without_role_or_account_uses_the_agents_credentials_unchanged(sts_environ):
    credentials = environment_credentials(Environment(name="test"), sts_environ, detect(sts_environ))
    assert dict(credentials.environ) == sts_environ and credentials.account is None


ROLE_CONFIG = """\
project: our-project
source: infra
repository: {repository}
environments:
  - name: test
    role_arn: arn:aws:iam::123456789012:role/deployer
    account_id: "{account}"
"""


def _project_with_role(tmp_path, account: str):
    from conftest import Project

    root = tmp_path / "work"
    root.mkdir()
    (root / "envpipe.yml").write_text(ROLE_CONFIG.format(repository=tmp_path / "repository", account=account))
    project = Project(root=root, repository=str(tmp_path / "repository"))
    project.write("main.tf", 'resource "terraform_data" "example" {}\n')
    ctx = StageContext.load(root / "envpipe.yml", environ=dict(os.environ))
    publish(ctx, version="1.0.1")
    promote(ctx, "test", "1.0.1")
    return project


def test_apply_under_an_assumed_role_records_the_identity(s3, tmp_path):
    project = _project_with_role(tmp_path, "123456789012")
    project.envpipe("apply", "test", env=JENKINS, check=0)
    record = json.loads(list_repository(project.repository, ".envpipe/summary/test/")["apply.json"])
    assert record["aws"] == {"account": "123456789012", "role_arn": "arn:aws:iam::123456789012:role/deployer",
                             "identity": "arn:aws:sts::123456789012:assumed-role/deployer/"
                                         "envpipe-jenkins-infra-main-42"}
    text = json.dumps(record)
    assert "AWS_SESSION_TOKEN" not in text and "testing-secret" not in text


def test_apply_in_the_wrong_account_is_refused_before_terraform_runs(s3, tmp_path):
    project = _project_with_role(tmp_path, "999999999999")
    result = project.envpipe("apply", "test", env=JENKINS, check=3)
    assert result.stderr.strip().splitlines()[-1].startswith(
        "envpipe: error: environment 'test' is AWS account 999999999999, but the credentials are for account "
        "123456789012")
    assert "Terraform" not in result.stderr  # nothing ran
    assert list_repository(project.repository, ".envpipe/state/") == {}
    assert list_repository(project.repository, ".envpipe/locks/") == {}
    record = json.loads(list_repository(project.repository, ".envpipe/summary/test/")["apply.json"])
    assert record["result"] == "refused"
