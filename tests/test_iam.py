"""`envpipe iam`: the policy documents derived from envpipe.yml (SPEC §11).

That the policies are enough, and no more, is proven on an enforcing server in
test_iam_enforced.py; these tests read the documents themselves.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest

from conftest import run_envpipe
from envpipe_agent.config import parse_config
from envpipe_agent.errors import UsageError
from envpipe_agent.iam import environment_policies, stage_policy

BASE = {
    "project": "our-project",
    "repository": "s3://our-project-repository/pipelines",
    "environments": [{"name": "test"}, {"name": "staging"}, {"name": "production", "approval": "manual"}],
}


def config(**overrides: Any):
    return parse_config({**BASE, **overrides}, Path("/work/envpipe.yml"))


def grants(document: Dict[str, Any]) -> Dict[str, List[str]]:
    """{action: [resources]} over every statement."""
    result: Dict[str, List[str]] = {}
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        for action in statement["Action"]:
            result.setdefault(action, []).extend(statement["Resource"])
    return result


def listed(document: Dict[str, Any]) -> List[str]:
    (statement,) = [s for s in document["Statement"] if s["Action"] == ["s3:ListBucket"]]
    assert statement["Resource"] == ["arn:aws:s3:::our-project-repository"]
    return statement["Condition"]["StringLike"]["s3:prefix"]


OBJECTS = "arn:aws:s3:::our-project-repository/pipelines/"


def test_publish_writes_version_folders_only():
    document = stage_policy(config(), BASE["repository"], "publish")
    versions = [f"{OBJECTS}{digit}*" for digit in "0123456789"]
    assert grants(document) == {"s3:ListBucket": ["arn:aws:s3:::our-project-repository"],
                                "s3:AbortMultipartUpload": versions, "s3:DeleteObject": versions,
                                "s3:GetObject": versions, "s3:PutObject": versions}
    assert listed(document) == [f"pipelines/{digit}*" for digit in "0123456789"]


def test_an_environment_policy_never_reaches_another_environment():
    for env in ("test", "staging", "production"):
        document = environment_policies(config(), BASE["repository"])[env]
        others = {"test", "staging", "production"} - {env}
        text = json.dumps(document)
        for other in others:
            for where in (f"pipelines/{other}/", f"locks/{other}.json", f"records/{other}/", f"summary/{other}/",
                          f"state/{other}/"):
                assert where not in text, (env, where)
        assert f"{OBJECTS}.envpipe/state/{env}/terraform.tfstate" in grants(document)["s3:PutObject"]


def test_promote_reads_only_the_previous_environments_results_for_its_gate():
    document = stage_policy(config(), BASE["repository"], "promote", "production")
    assert f"{OBJECTS}.envpipe/results/staging/*" in grants(document)["s3:GetObject"]
    assert not any("results" in r for r in grants(document)["s3:PutObject"])
    assert not any("state" in r for resources in grants(document).values() for r in resources)


def test_status_is_read_only_and_never_reads_state():
    document = stage_policy(config(), BASE["repository"], "status")
    assert {a for a in grants(document) if a.startswith("s3:")} == {
        "s3:ListBucket", "s3:GetObject", "s3:GetBucketOwnershipControls", "s3:GetBucketPolicy",
        "s3:GetBucketPublicAccessBlock", "s3:GetBucketVersioning", "s3:GetEncryptionConfiguration"}
    assert not any("state" in r or "templates" in r for r in grants(document)["s3:GetObject"] + listed(document))


def test_a_role_takes_over_the_tool_and_the_state_role_the_state():
    cfg = config(environments=[
        {"name": "test"},
        {"name": "production", "role_arn": "arn:aws:iam::210987654321:role/deployer",
         "state": {"bucket": "production-state", "key": "our-project/terraform.tfstate",
                   "role_arn": "arn:aws:iam::210987654321:role/state"}}])
    bound = stage_policy(cfg, BASE["repository"], "apply", "production")
    assert grants(bound)["sts:AssumeRole"] == ["arn:aws:iam::210987654321:role/deployer"]
    assert "production-state" not in json.dumps(bound)
    role = stage_policy(cfg, BASE["repository"], "role", "production")
    assert grants(role) == {"sts:AssumeRole": ["arn:aws:iam::210987654321:role/state"]}
    state = stage_policy(cfg, BASE["repository"], "state-role", "production")
    assert grants(state)["s3:PutObject"] == ["arn:aws:s3:::production-state/our-project/terraform.tfstate",
                                             "arn:aws:s3:::production-state/our-project/terraform.tfstate.tflock"]
    with pytest.raises(UsageError, match="no role_arn"):
        stage_policy(cfg, BASE["repository"], "role", "test")


def test_kms_key_and_cloudformation_stack_are_derived_from_the_config():
    cfg = config(tool="cloudformation", repository_encryption={
        "kms_key_id": "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"},
        ci={"variables": {"AWS_DEFAULT_REGION": "eu-west-1"}},
        environments=[{"name": "test", "account_id": "123456789012"}])
    document = grants(stage_policy(cfg, BASE["repository"], "apply", "test"))
    assert document["kms:GenerateDataKey"] == [cfg.repository_encryption.kms_key_id]
    assert document["cloudformation:ExecuteChangeSet"] == [
        "arn:aws:cloudformation:eu-west-1:123456789012:stack/our-project-test/*"]
    assert f"{OBJECTS}.envpipe/templates/test/*" in document["s3:PutObject"]
    status = grants(stage_policy(cfg, BASE["repository"], "status"))
    assert status["kms:Decrypt"] == [cfg.repository_encryption.kms_key_id] and "kms:GenerateDataKey" not in status


def test_cli_prints_deterministic_json_and_refuses_a_folder_repository(tmp_path):
    (tmp_path / "envpipe.yml").write_text(json.dumps(BASE))
    first = run_envpipe(["iam", "--role-per-environment"], cwd=tmp_path, check=0).stdout
    assert first == run_envpipe(["iam", "--role-per-environment"], cwd=tmp_path, check=0).stdout
    assert list(json.loads(first)) == ["test", "staging", "production"]
    assert json.loads(run_envpipe(["iam", "unlock", "test"], cwd=tmp_path, check=0).stdout)["Version"] == "2012-10-17"
    refused = run_envpipe(["iam", "publish", "--repo", str(tmp_path / "repository")], cwd=tmp_path, check=2)
    assert refused.stderr.count("\n") == 1 and "s3://" in refused.stderr
    assert "needs an environment" in run_envpipe(["iam", "apply"], cwd=tmp_path, check=2).stderr


ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("rendered, binding", [
    ("Jenkinsfile.example", "usernamePassword(credentialsId: "),
    ("examples/gocd/our-project.gocd.yaml", "AWS_ACCESS_KEY_ID: "),
    ("examples/gocd/pipelines.xml", '<variable name="AWS_ACCESS_KEY_ID"'),
    ("examples/on-demand/Jenkinsfile.reap", "usernamePassword(credentialsId: "),
    ("examples/on-demand/our-project-environments.gocd.yaml", "AWS_ACCESS_KEY_ID: "),
])
def test_each_credential_binding_names_the_policy_it_should_carry(rendered, binding):
    lines = (ROOT / rendered).read_text().splitlines()
    bound = [i for i, line in enumerate(lines) if binding in line]
    assert bound
    for index in bound:
        comment = " ".join(lines[index - 2:index])
        assert "envpipe iam" in comment and "role-per-environment" in comment, lines[index]
        # the on-demand jobs bind the like environment's credentials for instances too
        assert ("envpipe iam on-demand" in comment) == ("on-demand/" in rendered), lines[index]


def test_the_readme_shows_the_examples_production_policy_as_printed():
    printed = run_envpipe(["--config", "examples/envpipe.yml", "iam", "--role-per-environment"], cwd=ROOT, check=0)
    readme = (ROOT / "README.md").read_text()
    shown = readme.split("<details><summary>production</summary>\n\n```json\n", 1)[1].split("```", 1)[0]
    assert json.loads(shown) == json.loads(printed.stdout)["production"]


def test_on_demand_grants_instances_by_pattern_and_denies_the_other_path_environments():
    document = stage_policy(config(), BASE["repository"], "on-demand")
    allowed = grants({"Statement": [s for s in document["Statement"] if s["Effect"] == "Allow"]})
    assert f"{OBJECTS}a*" in allowed["s3:PutObject"] and f"{OBJECTS}.envpipe/on-demand/*" in allowed["s3:DeleteObject"]
    assert not any(r.startswith(f"{OBJECTS}0") for r in allowed["s3:PutObject"])  # versions: read only
    denied = {r for s in document["Statement"] if s["Effect"] == "Deny" for r in s["Resource"]}
    for env in ("staging", "production"):  # test is on_demand.like: its own policy covers it
        assert {f"{OBJECTS}{env}/*", f"{OBJECTS}.envpipe/locks/{env}.json",
                f"{OBJECTS}.envpipe/state/{env}/*"} <= denied
    assert not any("/test/" in r or "test.json" in r for r in denied)
