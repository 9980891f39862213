"""The policies `envpipe iam` prints, proven under enforcement.

moto's server checks IAM policies for S3 once ``INITIAL_NO_AUTH_ACTION_COUNT`` calls
have been made. Each test starts its own server (the setting is process-wide, so the
shared fixture's server must never see it) with the count equal to the set-up calls
that create an administrator; the administrator then creates one IAM user per stage
with exactly the policy `envpipe iam` prints, and every stage runs as a subprocess with
its user's keys.

Where moto authorizes differently from AWS, the difference is bridged here, in the
test set-up, never in the policies users get (``moto_policies``):

* moto evaluates no ``s3:prefix`` condition: a statement with a condition it cannot
  evaluate counts as an explicit deny. The ``ListBucket`` statement's condition is
  dropped, so these tests prove the resource scoping of object access only.
* moto checks a batch delete (DeleteObjects) as ``s3:DeleteObject`` on the bucket
  ARN, where AWS checks each key: a user whose policy deletes anything is also
  allowed that bucket-level action.
* moto does not check a copy's source read (AWS needs ``s3:GetObject`` there); it
  only lets more through, so nothing is bridged.
* moto authorizes every CloudFormation call against the resource ``*``, not the
  stack's ARN: the stack statement's actions are granted on ``*`` as well, so for
  CloudFormation these tests prove that the policy lists every call envpipe makes,
  not the stack scoping.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping

import boto3
import pytest
from botocore.exceptions import ClientError

from conftest import REGION, run_envpipe

BUCKET = "our-project-repository"
REPOSITORY = f"s3://{BUCKET}/pipelines"
# The administrator's set-up: bucket, user, its policy, its access key.
SETUP_CALLS = 4

CONFIG = f"""\
project: our-project
source: infra
repository: {REPOSITORY}
version: "1.0.{{build}}"
environments:
  - name: test
  - name: staging
  - name: production
    approval: manual
tests:
  path: tests/
"""

SERVER = """\
import sys, time
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()  # until the test closes our stdin
server.stop()
"""


@pytest.fixture
def enforcing_server() -> Iterator[str]:
    """A moto server of its own that enforces IAM after SETUP_CALLS calls."""
    environ = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_CALLS)}
    process = subprocess.Popen([sys.executable, "-c", SERVER], env=environ, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _client(service: str, endpoint: str, keys: Mapping[str, str]):
    return boto3.client(service, region_name=REGION, endpoint_url=endpoint,
                        aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"])


def moto_policies(document: Dict[str, Any]) -> Dict[str, Any]:
    """``document`` as moto can evaluate it; see the module's docstring."""
    statements = []
    deletes = False
    for statement in document["Statement"]:
        statement = {k: v for k, v in statement.items() if k != "Condition"}
        deletes = deletes or (statement["Effect"] == "Allow" and "s3:DeleteObject" in statement["Action"])
        statements.append(statement)
        stack_actions = [a for a in statement["Action"] if a.startswith("cloudformation:")]
        if stack_actions and statement["Effect"] == "Allow":
            statements.append({"Sid": f"Moto{statement['Sid']}", "Effect": "Allow", "Action": stack_actions,
                               "Resource": ["*"]})
    if deletes:
        statements.append({"Sid": "MotoBatchDelete", "Effect": "Allow", "Action": ["s3:DeleteObject"],
                           "Resource": [f"arn:aws:s3:::{BUCKET}"]})
    return {**document, "Statement": statements}


class Account:
    """The enforcing server's account: an administrator, and users made from policies."""

    def __init__(self, endpoint: str, admin: Mapping[str, str]) -> None:
        self.endpoint = endpoint
        self.admin = dict(admin)
        self.iam = _client("iam", endpoint, admin)

    def user(self, name: str, *documents: Dict[str, Any]) -> Dict[str, str]:
        """A user carrying ``documents`` (as managed policies, as the README says); its keys."""
        self.iam.create_user(UserName=name)
        for index, document in enumerate(documents):
            arn = self.iam.create_policy(PolicyName=f"envpipe-{name}-{index}",
                                         PolicyDocument=json.dumps(moto_policies(document)))["Policy"]["Arn"]
            self.iam.attach_user_policy(UserName=name, PolicyArn=arn)
        key = self.iam.create_access_key(UserName=name)["AccessKey"]
        return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}

    def s3(self, keys: Mapping[str, str] = None):
        return _client("s3", self.endpoint, keys or self.admin)


@pytest.fixture
def account(enforcing_server: str, monkeypatch: pytest.MonkeyPatch) -> Account:
    monkeypatch.setenv("AWS_ENDPOINT_URL", enforcing_server)
    anonymous = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret"}
    # The SETUP_CALLS calls moto lets through unchecked.
    _client("s3", enforcing_server, anonymous).create_bucket(Bucket=BUCKET)
    iam = _client("iam", enforcing_server, anonymous)
    iam.create_user(UserName="admin")
    iam.put_user_policy(UserName="admin", PolicyName="admin", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="admin")["AccessKey"]
    admin = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    created = Account(enforcing_server, admin)
    # From here on every call is checked: the anonymous keys belong to nobody.
    with pytest.raises(ClientError):
        _client("s3", enforcing_server, anonymous).list_objects_v2(Bucket=BUCKET)
    return created


@pytest.fixture
def working_copy(tmp_path: Path) -> Path:
    root = tmp_path / "work"
    (root / "infra" / "tests").mkdir(parents=True)
    (root / "envpipe.yml").write_text(CONFIG)
    (root / "infra" / "main.tf").write_text(textwrap.dedent("""\
        variable "envpipe_environment" {}
        resource "terraform_data" "example" { input = var.envpipe_environment }
        output "environment" { value = terraform_data.example.output }
    """))
    (root / "infra" / "tests" / "test_environment.py").write_text(textwrap.dedent("""\
        import os
        def test_outputs_name_the_environment():
            assert os.environ["ENVPIPE_OUTPUT_ENVIRONMENT"] == os.environ["ENVPIPE_ENVIRONMENT"]
    """))
    return root


def policy(root: Path, *args: str) -> Dict[str, Any]:
    return json.loads(run_envpipe(["iam", *args], cwd=root, check=0).stdout)


def envpipe_as(keys: Mapping[str, str], root: Path, *args: str, check=None, build: str = "7"):
    # ENVPIPE_APPROVER: production is approval: manual, as generated pipelines set it
    return run_envpipe(args, cwd=root, env={**keys, "BUILD_NUMBER": build, "JOB_NAME": "our-project",
                                            "ENVPIPE_APPROVER": "alice"},
                       check=check, timeout=300)


def assert_denied(result: subprocess.CompletedProcess, action: str, key: str) -> None:
    """Refused with one clear line naming the IAM action and the key; no traceback."""
    assert result.returncode in (1, 3), result.stderr
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert lines[-1].startswith("envpipe: error: ") and "access denied" in lines[-1], result.stderr
    assert action in lines[-1] and key in lines[-1], lines[-1]


def test_each_stage_runs_the_path_to_production_with_exactly_its_own_policy(account, working_copy):
    root = working_copy
    users = {"publish": account.user("publish", policy(root, "publish")),
             "status": account.user("status", policy(root, "status"))}
    for env in ("test", "staging", "production"):
        for stage in ("promote", "apply", "test", "unlock"):
            users[f"{stage}-{env}"] = account.user(f"{stage}-{env}", policy(root, stage, env))

    assert envpipe_as(users["publish"], root, "publish", check=0).stdout.strip() == "1.0.7"
    for env in ("test", "staging", "production"):
        envpipe_as(users[f"promote-{env}"], root, "promote", "1.0.7", "--to", env, check=0)
        envpipe_as(users[f"apply-{env}"], root, "apply", env, check=0)
        envpipe_as(users[f"test-{env}"], root, "test", env, check=0)
        # apply's own policy also plans (drift check) and reads its records for that
        envpipe_as(users[f"apply-{env}"], root, "plan", env, check=0)

    # Freezing is its own policy's; a frozen environment refuses promote (exit 3).
    freezer = account.user("freeze-production", policy(root, "freeze", "production"))
    envpipe_as(freezer, root, "freeze", "production", "--reason", "release weekend", check=0)
    assert "frozen" in envpipe_as(users["promote-production"], root, "promote", "1.0.7", "--to", "production",
                                  check=3).stderr
    envpipe_as(freezer, root, "unfreeze", "production", check=0)

    # A stale lock is broken with unlock's policy, and that is recorded.
    s3 = account.s3()
    s3.put_object(Bucket=BUCKET, Key="pipelines/.envpipe/locks/production.json",
                  Body=json.dumps({"holder": "dead-agent", "expires": "2099-01-01T00:00:00Z"}).encode())
    envpipe_as(users["unlock-production"], root, "unlock", "production", check=0)
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="pipelines/.envpipe/locks/")
    # ... and so is a Terraform lock file a killed apply left beside the state.
    tflock = "pipelines/.envpipe/state/production/terraform.tfstate.tflock"
    s3.put_object(Bucket=BUCKET, Key=tflock, Body=json.dumps({"ID": "stale", "Who": "dead-agent"}).encode())
    envpipe_as(users["unlock-production"], root, "unlock", "production", "--state", "--reason", "agent died",
               check=0)
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=tflock)["KeyCount"] == 0

    status = json.loads(envpipe_as(users["status"], root, "status", "--json", check=0).stdout)
    assert [(e["environment"], e["version"], e["last"]["test"]["result"]) for e in status["environments"]] == [
        ("test", "1.0.7", "passed"), ("staging", "1.0.7", "passed"), ("production", "1.0.7", "passed")]
    envpipe_as(users["status"], root, "history", "production", check=0)
    envpipe_as(users["status"], root, "verify", "production", check=0)

    # destroy is part of apply's policy: the infrastructure goes, the folder is emptied.
    envpipe_as(users["apply-test"], root, "destroy", "test", check=0)
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="pipelines/test/")
    # Each environment's state is where its apply put it, one per environment.
    states = [item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET, Prefix="pipelines/.envpipe/state/")
              ["Contents"] if item["Key"].endswith(".tfstate")]
    assert states == [f"pipelines/.envpipe/state/{env}/terraform.tfstate" for env in ("production", "staging", "test")]


def test_an_environment_credentials_cannot_touch_production(account, working_copy):
    root = working_copy
    policies = policy(root, "--role-per-environment")
    test_keys = account.user("pipeline-test", policies["test"])
    production_keys = account.user("pipeline-production", policies["production"])
    admin = {**account.admin}
    # The path up to production, run by an administrator.
    envpipe_as(admin, root, "publish", check=0)
    for env in ("test", "staging", "production"):
        envpipe_as(admin, root, "promote", "1.0.7", "--to", env, "--force", "--reason", "set-up", check=0)
    envpipe_as(admin, root, "apply", "production", check=0)

    # The test environment's credentials: production's folder, state and lock are out of reach.
    s3 = account.s3(test_keys)
    for call, arguments in [
        (s3.put_object, {"Key": "pipelines/production/main.tf", "Body": b"# replaced"}),
        (s3.get_object, {"Key": "pipelines/.envpipe/state/production/terraform.tfstate"}),
        (s3.put_object, {"Key": "pipelines/.envpipe/locks/production.json", "Body": b"{}"}),
        (s3.put_object, {"Key": "pipelines/.envpipe/records/production/forged.json", "Body": b"{}"}),
    ]:
        with pytest.raises(ClientError, match="AccessDenied"):
            call(Bucket=BUCKET, **arguments)

    # ... and envpipe says so in one line, naming the action and the key.
    assert_denied(envpipe_as(test_keys, root, "apply", "production"),
                  "s3:GetObject", "pipelines/production/.envpipe/manifest.json")
    assert_denied(envpipe_as(test_keys, root, "unlock", "production"),
                  "s3:GetObject", "pipelines/.envpipe/locks/production.json")
    # taking production's lock (unlock --state holds it while it works)
    assert_denied(envpipe_as(test_keys, root, "unlock", "production", "--state", "--reason", "trying"),
                  "s3:PutObject", "pipelines/.envpipe/locks/production.json")
    assert_denied(envpipe_as(test_keys, root, "promote", "1.0.7", "--to", "production", "--force",
                             "--reason", "trying"),
                  "s3:GetObject", "pipelines/.envpipe/results/staging/1.0.7.json")
    # A version folder is written only by publish, which the test credential carries
    # (generated pipelines bind it for Publish); production's credential cannot.
    assert_denied(envpipe_as(production_keys, root, "publish", build="8"), "s3:", "pipelines/1.0.8")

    # Nothing of production changed, and its own credential still works.
    assert account.s3().get_object(Bucket=BUCKET, Key="pipelines/production/main.tf")["Body"].read() \
        == (root / "infra" / "main.tf").read_bytes()
    envpipe_as(production_keys, root, "plan", "production", check=0)


CLOUDFORMATION_CONFIG = f"""\
project: our-project
source: infra
repository: {REPOSITORY}
tool: cloudformation
cloudformation: {{template: template.yaml}}
environments:
  - name: test
  - name: production
    approval: manual
tests:
  path: tests/
"""
TEMPLATE = """\
Parameters:
  EnvpipeEnvironment: {Type: String}
Resources:
  Version:
    Type: AWS::SSM::Parameter
    Properties: {Name: !Sub "/our-project/${EnvpipeEnvironment}/marker", Type: String, Value: !Ref EnvpipeEnvironment}
"""


def test_a_cloudformation_environment_runs_with_its_stages_policies(account, working_copy):
    root = working_copy
    (root / "envpipe.yml").write_text(CLOUDFORMATION_CONFIG)
    (root / "infra" / "main.tf").unlink()
    (root / "infra" / "template.yaml").write_text(TEMPLATE)
    (root / "infra" / "tests" / "test_environment.py").write_text(
        "import os\n\ndef test_environment():\n    assert os.environ['ENVPIPE_ENVIRONMENT'] == 'test'\n")
    users = {stage: account.user(f"{stage}-test", policy(root, stage, "test"))
             for stage in ("promote", "apply", "test", "unlock")}
    users["publish"] = account.user("publish", policy(root, "publish"))
    users["status"] = account.user("status", policy(root, "status"))

    envpipe_as(users["publish"], root, "publish", check=0)
    envpipe_as(users["promote"], root, "promote", "1.0.7", "--to", "test", check=0)
    envpipe_as(users["apply"], root, "apply", "test", check=0)
    envpipe_as(users["test"], root, "test", "test", check=0)
    envpipe_as(users["apply"], root, "plan", "test", check=0)
    envpipe_as(users["unlock"], root, "unlock", "test", check=0)
    status = json.loads(envpipe_as(users["status"], root, "status", "--json", check=0).stdout)
    assert status["environments"][0]["last"]["test"]["result"] == "passed"
    cloudformation = _client("cloudformation", account.endpoint, account.admin)
    assert cloudformation.describe_stacks(StackName="our-project-test")["Stacks"][0]["StackStatus"] \
        == "CREATE_COMPLETE"
    envpipe_as(users["apply"], root, "destroy", "test", check=0)
    assert not [stack for stack in cloudformation.list_stacks()["StackSummaries"]
                if stack["StackName"] == "our-project-test" and stack["StackStatus"] != "DELETE_COMPLETE"]
    # The stack of another environment is not test's to touch (the bridge above
    # widens CloudFormation for moto, so this is checked on the document itself).
    assert "stack/our-project-production/" not in json.dumps(policy(root, "apply", "test"))


def test_on_demand_environments_run_with_the_like_environments_credentials_and_reach_no_other(account,
                                                                                              working_copy):
    root = working_copy
    tester = account.user("pipeline-test", policy(root, "--role-per-environment")["test"], policy(root, "on-demand"))
    envpipe_as(tester, root, "publish", check=0)
    envpipe_as(tester, root, "env", "create", "demo", "--version", "1.0.7", "--test", check=0)
    listed = json.loads(envpipe_as(tester, root, "env", "list", "--json", check=0).stdout)
    assert [(e["name"], e["version"]) for e in listed] == [("demo", "1.0.7")]
    envpipe_as(tester, root, "sandbox", "up", "sandbox-tester", check=0)
    envpipe_as(tester, root, "sandbox", "destroy", "sandbox-tester", check=0)
    envpipe_as(tester, root, "env", "destroy", "demo", check=0)
    assert "Contents" not in account.s3().list_objects_v2(Bucket=BUCKET, Prefix="pipelines/demo/")
    # Instance names are granted by pattern; the path's other environments are denied outright.
    s3 = account.s3(tester)
    for key in ("pipelines/production/main.tf", "pipelines/.envpipe/locks/staging.json",
                "pipelines/.envpipe/records/production/forged.json", "pipelines/.envpipe/state/production/x"):
        with pytest.raises(ClientError, match="AccessDenied"):
            s3.put_object(Bucket=BUCKET, Key=key, Body=b"{}")
    with pytest.raises(ClientError, match="AccessDenied"):
        s3.get_object(Bucket=BUCKET, Key="pipelines/.envpipe/state/production/terraform.tfstate")


ROLES_CONFIG = f"""\
project: our-project
source: infra
repository: {REPOSITORY}
environments:
  - name: test
  - name: production
    approval: manual
    role_arn: arn:aws:iam::123456789012:role/deployer
    state: {{bucket: production-state, region: {REGION}, role_arn: "arn:aws:iam::123456789012:role/state"}}
"""


def test_production_applies_through_its_role_with_its_state_behind_a_role_of_its_own(account, working_copy):
    """The bound credentials reach the repository and assume production's role; the role
    runs Terraform, whose backend assumes the state's role; each holds only its policy.
    moto matches no assumed-role session against a role ARN in a trust policy, so the
    roles trust any principal of the account here (the permission policies are as printed)."""
    root = working_copy
    (root / "envpipe.yml").write_text(ROLES_CONFIG)
    account.s3().create_bucket(Bucket="production-state")
    trust = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]})
    for role, stage in (("deployer", "role"), ("state", "state-role")):
        account.iam.create_role(RoleName=role, AssumeRolePolicyDocument=trust)
        arn = account.iam.create_policy(PolicyName=f"envpipe-{role}", PolicyDocument=json.dumps(
            moto_policies(policy(root, stage, "production"))))["Policy"]["Arn"]
        account.iam.attach_role_policy(RoleName=role, PolicyArn=arn)
    bound = account.user("pipeline-production", policy(root, "apply", "production"))

    envpipe_as(account.admin, root, "publish", check=0)
    envpipe_as(account.admin, root, "promote", "1.0.7", "--to", "test", check=0)
    envpipe_as(account.admin, root, "promote", "1.0.7", "--to", "production", "--force", "--reason", "set-up",
               check=0)
    envpipe_as(bound, root, "apply", "production", check=0)
    state = account.s3().get_object(Bucket="production-state", Key="production/terraform.tfstate")["Body"].read()
    assert b'"terraform_data"' in state
    applied = json.loads(account.s3().get_object(Bucket=BUCKET, Key="pipelines/.envpipe/summary/production/apply.json")
                         ["Body"].read())
    assert applied["aws"]["role_arn"] == "arn:aws:iam::123456789012:role/deployer"
    assert ":assumed-role/deployer/" in applied["aws"]["identity"]
    # The bound credentials themselves never reach the state.
    with pytest.raises(ClientError, match="AccessDenied"):
        account.s3(bound).get_object(Bucket="production-state", Key="production/terraform.tfstate")


BLUEGREEN_CONFIG = f"""\
project: our-project
source: infra
repository: {REPOSITORY}
version: "1.0.{{build}}"
environments:
  - name: test
  - name: production
    approval: manual
    bluegreen: {{router: router/}}
tests:
  path: tests/
"""
ROUTER = """\
variable "envpipe_live_color" {}
variable "envpipe_live_environment" {}
variable "envpipe_live_outputs" {}
resource "terraform_data" "route" { input = var.envpipe_live_environment }
"""


def test_a_blue_green_release_runs_with_the_environments_own_policy(account, working_copy):
    root = working_copy
    (root / "envpipe.yml").write_text(BLUEGREEN_CONFIG)
    (root / "infra" / "router").mkdir()
    (root / "infra" / "router" / "main.tf").write_text(ROUTER)
    production = account.user("pipeline-production", policy(root, "--role-per-environment")["production"])
    status = account.user("status", policy(root, "status"))
    for build in ("7", "8"):
        envpipe_as(account.admin, root, "publish", check=0, build=build)
        for stage in ("promote", "apply", "test"):
            envpipe_as(account.admin, root, *((stage, f"1.0.{build}", "--to", "test") if stage == "promote"
                                              else (stage, "test")), check=0, build=build)
        # the second release swaps to green and destroys blue, the old instance
        envpipe_as(production, root, "bluegreen", "production", f"1.0.{build}", check=0, build=build)
    entries = json.loads(envpipe_as(status, root, "status", "--json", check=0).stdout)["environments"]
    assert [(e["environment"], e["version"]) for e in entries] == [("test", "1.0.8"), ("production", "1.0.8")]
    s3 = account.s3()
    live = json.loads(s3.get_object(Bucket=BUCKET, Key="pipelines/.envpipe/live/production.json")["Body"].read())
    assert (live["color"], live["version"]) == ("green", "1.0.8")
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="pipelines/production-blue/")
