"""unlock ENV --state: a Terraform state lock left by a killed apply is removed, on the
record, and only while envpipe's own environment lock is free (SPEC §4)."""
from __future__ import annotations

import json
import os

import pytest

from conftest import list_repository, read_repository_file
from envpipe_agent.ci_context import CIContext
from envpipe_agent.locking import environment_lock
from envpipe_agent.repository import open_repository

S3_ONLY = pytest.mark.parametrize("repository_url", ["s3"], indirect=True)
STATE_LOCK = ".envpipe/state/test/terraform.tfstate.tflock"
TERRAFORM_LOCK_INFO = {"ID": "5f1c2a9e-0000-4000-8000-000000000001", "Operation": "OperationTypeApply",
                       "Info": "", "Who": "jenkins@agent-3", "Version": "1.9.8",
                       "Created": "2026-11-29T03:12:44.123Z", "Path": "our-project-repository/x"}


def records(project, action):
    return [json.loads(body) for body in list_repository(project.repository, ".envpipe/records/test/").values()
            if json.loads(body)["action"] == action]


@S3_ONLY
def test_a_stale_state_lock_fails_apply_with_the_way_out_and_unlock_state_removes_it(project):
    project.envpipe("publish", "--version", "1.0.1", check=0)
    project.envpipe("promote", "1.0.1", "--to", "test", check=0)
    repository = open_repository(project.repository, dict(os.environ))
    repository.write(STATE_LOCK, json.dumps(TERRAFORM_LOCK_INFO).encode())

    failed = project.envpipe("apply", "test", check=1, timeout=300)
    last = failed.stderr.strip().splitlines()[-1]
    assert "state lock" in last and "envpipe unlock test --state --reason" in last

    assert "--state needs --reason" in project.envpipe("unlock", "test", "--state", check=2).stderr
    assert read_repository_file(project.repository, STATE_LOCK) is not None

    removed = project.envpipe("unlock", "test", "--state", "--reason", "agent-3 was killed", check=0)
    assert "5f1c2a9e" in removed.stdout and "jenkins@agent-3" in removed.stdout
    assert read_repository_file(project.repository, STATE_LOCK) is None
    [record] = records(project, "unlock")
    assert record["reason"] == "agent-3 was killed" and record["state_lock"]["Who"] == "jenkins@agent-3"

    project.envpipe("apply", "test", check=0, timeout=300)
    assert "was not locked" in project.envpipe("unlock", "test", "--state", "--reason", "again", check=0).stdout


@S3_ONLY
def test_unlock_state_refuses_while_the_environment_is_locked(project):
    repository = open_repository(project.repository, dict(os.environ))
    repository.write(STATE_LOCK, json.dumps(TERRAFORM_LOCK_INFO).encode())
    with environment_lock(repository, "test", "apply", CIContext(server="jenkins", user="bob", host="agent-9")):
        result = project.envpipe("unlock", "test", "--state", "--reason", "stuck", check=3)
    assert "locked by bob@agent-9" in result.stderr
    assert read_repository_file(project.repository, STATE_LOCK) is not None
    assert records(project, "unlock") == []


@pytest.mark.parametrize("repository_url", ["folder"], indirect=True)
def test_unlock_records_a_reason_when_given(project):
    repository = open_repository(project.repository, dict(os.environ))
    with environment_lock(repository, "test", "apply", CIContext(server="jenkins", user="bob", host="agent-9")):
        project.envpipe("unlock", "test", "--reason", "agent-9 is gone", check=0)
    [record] = records(project, "unlock")
    assert record["reason"] == "agent-9 is gone" and record["lock"]["holder"] == "bob@agent-9"
