"""The CloudFormation runner against moto's server: change sets, waiters, failed
stacks, large templates, parameters and tags; and ``envpipe apply``/``destroy`` end
to end for a CloudFormation definition."""
from __future__ import annotations

import hashlib
import logging
import os
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional

import boto3
import pytest
from moto.cloudformation.models import Event, cloudformation_backends

from conftest import REGION, read_repository_file, run_envpipe
from envpipe_agent import aws_credentials
from envpipe_agent.aws_credentials import ClientFactory
from envpipe_agent.ci_context import detect
from envpipe_agent.config import load_config
from envpipe_agent.context import StageContext
from envpipe_agent.errors import ConfigError, Refused, StageFailed, UsageError
from envpipe_agent.manifest import check_folder
from envpipe_agent.redact import Redactor
from envpipe_agent.repository import open_repository
from envpipe_agent.stages.promote import promote
from envpipe_agent.stages.publish import publish
from envpipe_agent.tools import cloudformation as cfn_module
from envpipe_agent.tools.base import RunRequest
from envpipe_agent.tools.cloudformation import INLINE_TEMPLATE_LIMIT, CloudFormationRunner
from envpipe_agent.tools.stack_states import StackState, blocking_reason, failure_reasons, stack_state

ACCOUNT = "123456789012"  # moto's default account
STACK = "our-project-test"
BUCKET = "our-project-repository"

TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Description: envpipe test stack
Parameters:
  EnvpipeEnvironment: {Type: String}
  EnvpipeVersion: {Type: String}
  QueueDelay: {Type: Number, Default: 0}
Resources:
  Version:
    Type: AWS::SSM::Parameter
    Properties:
      Name: !Sub "/our-project/${EnvpipeEnvironment}/version"
      Type: String
      Value: !Ref EnvpipeVersion
  Queue:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: !Sub "${AWS::StackName}-jobs"
      DelaySeconds: !Ref QueueDelay
"""

# moto runs a resource's creation synchronously, so a failure surfaces as an error
# from ExecuteChangeSet (real CloudFormation reports it through the stack's events).
FAILING_TEMPLATE = """\
Parameters:
  QueueDelay: {Type: Number, Default: 0}
Resources:
  Broken:
    Type: AWS::SSM::Parameter
    Properties: {Name: /our-project/broken, Type: NotAType, Value: x}
"""

CONFIG = """\
project: our-project
source: infra
repository: {repository}
tool: cloudformation
environments:
  - name: test
    vars: {{QueueDelay: 5}}
  - name: staging
cloudformation:
  template: stack.yaml
"""


class Pipeline:
    """A working copy whose definition is published, promoted and fetched for real."""

    def __init__(self, root: Path, repository: str, config_text: str = CONFIG) -> None:
        self.root = root
        self.repository_url = repository
        self.config_path = root / "envpipe.yml"
        self.config_path.write_text(config_text.format(repository=repository))
        environ = dict(os.environ)
        config = load_config(self.config_path)  # as the command line reads it: vars as written too
        self.ctx = StageContext(config=config, repository=open_repository(repository, environ),
                                ci=detect(environ), environ=environ, redactor=Redactor.from_environ(environ),
                                record_redactor=Redactor.for_records(environ, config.secrets))
        self.fetches = 0

    def release(self, version: str, template: str = TEMPLATE, environment: str = "test") -> None:
        """Publish ``template`` as ``version`` and promote it into ``environment``."""
        source = self.root / "infra"
        source.mkdir(exist_ok=True)
        (source / "stack.yaml").write_text(template)
        publish(self.ctx, source=source, version=version)
        promote(self.ctx, environment, version, force=environment != "test", reason="test setup")

    def request(self, environment: str = "test", **options: Any) -> RunRequest:
        """What the apply stage hands the runner: the verified definition in a work folder."""
        self.fetches += 1
        workdir = self.root / f"work-{self.fetches}"
        manifest, _ = check_folder(self.ctx.repository, environment, workdir)
        return RunRequest(config=self.ctx.config, environment=self.ctx.config.environment(environment),
                          version=manifest.version, manifest=manifest, workdir=workdir,
                          environ=self.ctx.environ, redactor=self.ctx.redactor,
                          repository=self.ctx.repository, ci=self.ctx.ci, options=options)


@pytest.fixture
def pipeline(s3_bucket: str, tmp_path: Path) -> Pipeline:
    return Pipeline(tmp_path, f"s3://{s3_bucket}/pipelines")


@pytest.fixture
def runner() -> CloudFormationRunner:
    return CloudFormationRunner()


@pytest.fixture
def runner_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The runner's log lines, whatever another test did to the package logger."""
    logger = logging.getLogger("envpipe_agent.tools")
    logger.addHandler(caplog.handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.setLevel(previous)


def stack(client, name: str = STACK) -> Optional[Dict[str, Any]]:
    try:
        found = client.describe_stacks(StackName=name)["Stacks"]
    except client.exceptions.ClientError:
        return None
    return found[0] if found and found[0]["StackStatus"] != "DELETE_COMPLETE" else None


def parameters(found: Mapping[str, Any]) -> Dict[str, str]:
    return {p["ParameterKey"]: p["ParameterValue"] for p in found.get("Parameters", [])}


def tags(found: Mapping[str, Any]) -> Dict[str, str]:
    return {t["Key"]: t["Value"] for t in found.get("Tags", [])}


def pending_change_sets(client, name: str = STACK) -> List[str]:
    """Change sets left unexecuted (moto keeps executed ones listed; AWS drops them)."""
    return [summary["ChangeSetName"] for summary in client.list_change_sets(StackName=name)["Summaries"]
            if summary.get("ExecutionStatus") != "EXECUTE_COMPLETE"]


def ssm_value(name: str) -> Optional[str]:
    client = boto3.client("ssm", region_name=REGION)
    try:
        return client.get_parameter(Name=name)["Parameter"]["Value"]
    except client.exceptions.ParameterNotFound:
        return None


def fail_first_creation(name: str, reason: str) -> None:
    """Put the stack where real CloudFormation leaves a failed first creation:
    ROLLBACK_COMPLETE, with the failing resource's reason in its events. moto's
    change sets never roll back, so the server's in-process state is set directly."""
    backend = cloudformation_backends[ACCOUNT][REGION]
    found = next(s for s in backend.stacks.values() if s.name == name)
    found.events.append(Event(stack_id=found.stack_id, stack_name=name, logical_resource_id="Queue",
                              physical_resource_id="", resource_type="AWS::SQS::Queue",
                              resource_status="CREATE_FAILED", resource_status_reason=reason,
                              resource_properties=None))
    found._add_stack_event("ROLLBACK_IN_PROGRESS", "The following resource(s) failed to create: [Queue].")
    found._add_stack_event("ROLLBACK_COMPLETE")
    found.status = "ROLLBACK_COMPLETE"


# --- the state enum ------------------------------------------------------------


@pytest.mark.parametrize("status, state", [
    ("CREATE_COMPLETE", StackState.COMPLETE),
    ("UPDATE_COMPLETE", StackState.COMPLETE),
    ("DELETE_COMPLETE", StackState.COMPLETE),
    ("ROLLBACK_COMPLETE", StackState.FAILED),
    ("UPDATE_ROLLBACK_COMPLETE", StackState.FAILED),
    ("IMPORT_ROLLBACK_COMPLETE", StackState.FAILED),
    ("CREATE_FAILED", StackState.FAILED),
    ("UPDATE_ROLLBACK_FAILED", StackState.FAILED),
    ("CREATE_IN_PROGRESS", StackState.IN_PROGRESS),
    ("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", StackState.IN_PROGRESS),
    ("UPDATE_ROLLBACK_IN_PROGRESS", StackState.IN_PROGRESS),
    ("REVIEW_IN_PROGRESS", StackState.PENDING),
])
def test_stack_statuses_reduce_to_four_states(status: str, state: StackState) -> None:
    assert stack_state(status) is state


def test_only_unrecoverable_states_block_a_change_set() -> None:
    assert blocking_reason("CREATE_COMPLETE") is None
    assert blocking_reason("UPDATE_ROLLBACK_COMPLETE") is None  # a failed update leaves it updatable
    assert "continue-update-rollback" in blocking_reason("UPDATE_ROLLBACK_FAILED")
    assert "wait for it to finish" in blocking_reason("UPDATE_IN_PROGRESS")


def test_failure_reasons_put_the_first_failure_first_without_repeats() -> None:
    events = [
        {"LogicalResourceId": "Stack", "ResourceType": "AWS::CloudFormation::Stack",
         "ResourceStatus": "CREATE_IN_PROGRESS", "ResourceStatusReason": "User Initiated"},
        {"LogicalResourceId": "Bucket", "ResourceType": "AWS::S3::Bucket",
         "ResourceStatus": "CREATE_FAILED", "ResourceStatusReason": "Bucket name taken"},
        {"LogicalResourceId": "Queue", "ResourceType": "AWS::SQS::Queue",
         "ResourceStatus": "CREATE_FAILED", "ResourceStatusReason": "Resource creation cancelled"},
        {"LogicalResourceId": "Bucket", "ResourceType": "AWS::S3::Bucket",
         "ResourceStatus": "CREATE_FAILED", "ResourceStatusReason": "Bucket name taken"},
    ]
    assert failure_reasons(events) == [
        "Bucket (AWS::S3::Bucket): Bucket name taken",
        "Queue (AWS::SQS::Queue): Resource creation cancelled",
    ]


# --- apply, plan, destroy on moto's server --------------------------------------------


def test_apply_creates_the_stack_with_parameters_tags_and_resources(
        pipeline: Pipeline, runner: CloudFormationRunner, cloudformation, runner_log) -> None:
    pipeline.release("1.0.1")

    outcome = runner.apply(pipeline.request())

    assert outcome.changed is True
    assert outcome.added == 2
    assert outcome.details["status"] == "CREATE_COMPLETE"
    found = stack(cloudformation)
    assert found["StackStatus"] == "CREATE_COMPLETE"
    assert parameters(found) == {"EnvpipeEnvironment": "test", "EnvpipeVersion": "1.0.1", "QueueDelay": "5"}
    assert tags(found) == {"envpipe:version": "1.0.1", "envpipe:environment": "test"}
    assert ssm_value("/our-project/test/version") == "1.0.1"
    queue_url = boto3.client("sqs", region_name=REGION).get_queue_url(QueueName=f"{STACK}-jobs")["QueueUrl"]
    attributes = boto3.client("sqs", region_name=REGION).get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["DelaySeconds"])["Attributes"]
    assert attributes["DelaySeconds"] == "5"
    # The stack's events were logged while waiting, so a CI log shows progress.
    assert any("CREATE_COMPLETE" in message and STACK in message for message in runner_log.messages)


def test_apply_of_an_unchanged_definition_is_a_no_op(
        pipeline: Pipeline, runner: CloudFormationRunner, cloudformation) -> None:
    pipeline.release("1.0.1")
    runner.apply(pipeline.request())
    events_before = len(cloudformation.describe_stack_events(StackName=STACK)["StackEvents"])

    outcome = runner.apply(pipeline.request())

    assert outcome.changed is False
    assert outcome.summary == f"stack {STACK}: no changes"
    assert stack(cloudformation)["StackStatus"] == "CREATE_COMPLETE"
    assert len(cloudformation.describe_stack_events(StackName=STACK)["StackEvents"]) == events_before
    assert pending_change_sets(cloudformation) == []


def test_a_no_op_reported_as_a_failed_change_set_is_recognised(
        pipeline: Pipeline, runner: CloudFormationRunner, cloudformation) -> None:
    # Without parameters, moto answers as real CloudFormation does: the change set is
    # created and FAILED "didn't contain changes" (with them, moto says ValidationError).
    pipeline.release("1.0.1", template=FAILING_TEMPLATE.replace("NotAType", "String").replace(
        "Parameters:\n  QueueDelay: {Type: Number, Default: 0}\n", ""), environment="staging")
    runner.apply(pipeline.request("staging"))

    outcome = runner.apply(pipeline.request("staging"))

    assert outcome.changed is False
    assert pending_change_sets(cloudformation, "our-project-staging") == []


def test_apply_of_a_new_version_updates_the_stack(
        pipeline: Pipeline, runner: CloudFormationRunner, cloudformation) -> None:
    pipeline.release("1.0.1")
    runner.apply(pipeline.request())
    stack_id = stack(cloudformation)["StackId"]
    # Resources is the template's last section, so a resource can be appended.
    extended = TEMPLATE + textwrap.indent(textwrap.dedent("""\
        Extra:
          Type: AWS::SSM::Parameter
          Properties: {Name: /our-project/test/extra, Type: String, Value: added}
    """), "  ")
    pipeline.release("1.0.2", template=extended)

    outcome = runner.apply(pipeline.request())

    assert outcome.changed is True
    assert outcome.details["change_set_type"] == "UPDATE"
    found = stack(cloudformation)
    assert (found["StackId"], found["StackStatus"]) == (stack_id, "UPDATE_COMPLETE")
    assert parameters(found)["EnvpipeVersion"] == "1.0.2"
    assert ssm_value("/our-project/test/version") == "1.0.2"
    assert ssm_value("/our-project/test/extra") == "added"


def test_plan_reports_changes_and_leaves_nothing_behind(
        pipeline: Pipeline, runner: CloudFormationRunner, cloudformation, runner_log) -> None:
    pipeline.release("1.0.1")

    before = runner.plan(pipeline.request())

    assert (before.changed, before.added) == (True, 2)
    assert "would be created" in before.summary
    assert any("Add" in message and "Queue (AWS::SQS::Queue)" in message for message in runner_log.messages)
    # The CREATE change set's empty stack is gone again: a plan changes nothing.
    assert stack(cloudformation) is None
    assert ssm_value("/our-project/test/version") is None

    runner.apply(pipeline.request())
    after = runner.plan(pipeline.request())

    assert after.changed is False
    assert pending_change_sets(cloudformation) == []


def test_a_failing_template_fails_the_stage_with_the_reason(
        pipeline: Pipeline, runner: CloudFormationRunner, cloudformation) -> None:
    pipeline.release("1.0.1", template=FAILING_TEMPLATE)

    with pytest.raises(StageFailed) as failure:
        runner.apply(pipeline.request())

    assert failure.value.exit_code == 1
    message = str(failure.value)
    assert message.startswith(f"stack {STACK}: executing the change set failed")
    assert "NotAType" in message
    assert ssm_value("/our-project/broken") is None


def rolling_back_on_execute(reason: str) -> ClientFactory:
    """A client factory whose CloudFormation clients end the next executed change set as
    real CloudFormation ends a failed creation, asynchronously: the waiter then finds
    the stack in ROLLBACK_COMPLETE."""

    def factory(service: str, environ: Mapping[str, str], **kwargs: Any):
        client = aws_credentials.client(service, environ, **kwargs)
        client.meta.events.register("after-call.cloudformation.ExecuteChangeSet",
                                    lambda **_: fail_first_creation(STACK, reason))
        return client

    return factory


def test_a_creation_that_rolls_back_fails_with_the_events_reasons(
        pipeline: Pipeline, runner: CloudFormationRunner, cloudformation, runner_log) -> None:
    pipeline.release("1.0.1")
    request = replace(pipeline.request(),
                      client_factory=rolling_back_on_execute("Queue name already taken in this account"))

    with pytest.raises(StageFailed) as failure:
        runner.apply(request)

    assert str(failure.value) == (
        f"stack {STACK}: create failed, now ROLLBACK_COMPLETE: Queue (AWS::SQS::Queue): Queue name already "
        "taken in this account; fix the definition, publish and promote a new version, then apply with "
        "--replace-failed")
    # The failed event was printed while waiting, as CI logs need it.
    assert any("CREATE_FAILED Queue (AWS::SQS::Queue) - Queue name already taken" in message
               for message in runner_log.messages)


def test_a_template_that_does_not_parse_fails_before_any_aws_call(
        pipeline: Pipeline, runner: CloudFormationRunner, cloudformation) -> None:
    pipeline.release("1.0.1", template="Resources: [\n")

    with pytest.raises(StageFailed, match="template stack.yaml is neither valid YAML nor JSON"):
        runner.apply(pipeline.request())

    assert stack(cloudformation) is None


def test_a_good_version_after_a_failed_creation_creates_the_stack(
        pipeline: Pipeline, runner: CloudFormationRunner, cloudformation) -> None:
    pipeline.release("1.0.1", template=FAILING_TEMPLATE)
    with pytest.raises(StageFailed):
        runner.apply(pipeline.request())
    pipeline.release("1.0.2")

    outcome = runner.apply(pipeline.request())

    assert outcome.details["change_set_type"] == "CREATE"
    assert stack(cloudformation)["StackStatus"] == "CREATE_COMPLETE"
    assert ssm_value("/our-project/test/version") == "1.0.2"


def test_rollback_complete_is_refused_and_explained_without_replace_failed(
        pipeline: Pipeline, runner: CloudFormationRunner, cloudformation) -> None:
    pipeline.release("1.0.1")
    runner.apply(pipeline.request())
    fail_first_creation(STACK, "Queue name already taken in this account")
    stack_id = stack(cloudformation)["StackId"]

    with pytest.raises(Refused) as refusal:
        runner.apply(pipeline.request())

    message = str(refusal.value)
    assert refusal.value.exit_code == 3
    assert f"stack {STACK} is ROLLBACK_COMPLETE" in message
    assert "Queue (AWS::SQS::Queue): Queue name already taken in this account" in message
    assert "--replace-failed" in message
    assert (stack(cloudformation)["StackId"], stack(cloudformation)["StackStatus"]) == (stack_id, "ROLLBACK_COMPLETE")


def test_rollback_complete_is_replaced_with_replace_failed(
        pipeline: Pipeline, runner: CloudFormationRunner, cloudformation) -> None:
    pipeline.release("1.0.1")
    runner.apply(pipeline.request())
    fail_first_creation(STACK, "Queue name already taken in this account")
    old_id = stack(cloudformation)["StackId"]

    planned = runner.plan(pipeline.request())
    outcome = runner.apply(pipeline.request(replace_failed=True))

    assert planned.changed is True and "--replace-failed" in planned.summary
    assert outcome.details["change_set_type"] == "CREATE"
    found = stack(cloudformation)
    assert found["StackStatus"] == "CREATE_COMPLETE"
    assert found["StackId"] != old_id
    assert ssm_value("/our-project/test/version") == "1.0.1"


def test_destroy_deletes_the_stack_and_its_resources(
        pipeline: Pipeline, runner: CloudFormationRunner, cloudformation) -> None:
    pipeline.release("1.0.1")
    runner.apply(pipeline.request())

    outcome = runner.destroy(pipeline.request())
    again = runner.destroy(pipeline.request())

    assert (outcome.changed, outcome.destroyed) == (True, 2)
    assert stack(cloudformation) is None
    assert ssm_value("/our-project/test/version") is None
    assert again.changed is False


def test_a_large_template_goes_through_the_s3_repository_as_template_url(
        pipeline: Pipeline, runner: CloudFormationRunner, cloudformation, s3) -> None:
    padding = "".join(f"# padding line {i:05d} keeps this template over the inline limit\n" for i in range(1000))
    large = TEMPLATE + padding
    assert len(large.encode()) > INLINE_TEMPLATE_LIMIT
    pipeline.release("1.0.1", template=large)

    outcome = runner.apply(pipeline.request())

    key = f".envpipe/templates/test/{hashlib.sha256(large.encode()).hexdigest()}.yaml"
    assert outcome.details["template_url"] == f"https://{BUCKET}.s3.{REGION}.amazonaws.com/pipelines/{key}"
    assert read_repository_file(pipeline.repository_url, key) == large.encode()
    assert cloudformation.get_template(StackName=STACK)["TemplateBody"] == large
    assert stack(cloudformation)["StackStatus"] == "CREATE_COMPLETE"

    runner.destroy(pipeline.request())

    assert read_repository_file(pipeline.repository_url, key) is None


def test_a_large_template_on_a_folder_repository_is_refused_clearly(
        s3, tmp_path: Path, runner: CloudFormationRunner, cloudformation) -> None:
    pipeline = Pipeline(tmp_path, str(tmp_path / "repository"))
    pipeline.release("1.0.1", template=TEMPLATE + "#" * INLINE_TEMPLATE_LIMIT + "\n")

    with pytest.raises(UsageError) as refusal:
        runner.apply(pipeline.request())

    assert refusal.value.exit_code == 2
    assert "over CloudFormation's 51,200-byte limit" in str(refusal.value)
    assert "s3:// repository" in str(refusal.value)
    assert stack(cloudformation) is None


def test_a_var_the_template_does_not_declare_is_a_configuration_error(
        s3_bucket: str, tmp_path: Path, runner: CloudFormationRunner, cloudformation) -> None:
    config = CONFIG.replace("{{QueueDelay: 5}}", "{{QueueDelay: 5, InstanceCount: 2}}")
    pipeline = Pipeline(tmp_path, f"s3://{s3_bucket}/pipelines", config)
    pipeline.release("1.0.1")

    with pytest.raises(ConfigError) as error:
        runner.apply(pipeline.request())

    message = str(error.value)
    assert error.value.exit_code == 2
    assert "environments[0].vars: InstanceCount not declared in the Parameters of template stack.yaml" in message
    assert "EnvpipeEnvironment, EnvpipeVersion, QueueDelay" in message
    assert stack(cloudformation) is None


def test_a_parameter_without_default_or_value_is_a_configuration_error(
        pipeline: Pipeline, runner: CloudFormationRunner, cloudformation) -> None:
    pipeline.release("1.0.1", template=TEMPLATE.replace("  QueueDelay:", "  Owner: {Type: String}\n  QueueDelay:"))

    with pytest.raises(ConfigError) as error:
        runner.plan(pipeline.request())

    assert "needs Owner (no Default); set it in the vars of environment 'test'" in str(error.value)
    assert stack(cloudformation) is None


def test_envpipe_parameters_are_passed_only_where_declared(
        pipeline: Pipeline, runner: CloudFormationRunner, cloudformation) -> None:
    plain = TEMPLATE.replace("  EnvpipeEnvironment: {Type: String}\n", "").replace(
        '!Sub "/our-project/${EnvpipeEnvironment}/version"', "/our-project/plain/version")
    pipeline.release("1.0.1", template=plain)

    runner.apply(pipeline.request())

    assert parameters(stack(cloudformation)) == {"EnvpipeVersion": "1.0.1", "QueueDelay": "5"}


NO_ECHO_TEMPLATE = """\
Parameters:
  DbPassword: {Type: String, NoEcho: true}
  QueueDelay: {Type: Number, Default: 0}
Resources:
  Queue:
    Type: AWS::SQS::Queue
    Properties: {DelaySeconds: !Ref QueueDelay}
Outputs:
  QueueName: {Value: !GetAtt Queue.QueueName}
  Connection: {Value: !Sub "db://admin:${DbPassword}@db"}
"""


def test_noecho_values_are_never_logged_and_outputs_echoing_them_are_sensitive(
        s3_bucket: str, tmp_path: Path, runner: CloudFormationRunner, cloudformation, runner_log) -> None:
    config = CONFIG.replace("{{QueueDelay: 5}}", "{{QueueDelay: 5, DbPassword: pa55-w0rd-xyz}}")
    pipeline = Pipeline(tmp_path, f"s3://{s3_bucket}/pipelines", config)
    pipeline.release("1.0.1", template=NO_ECHO_TEMPLATE)

    runner.plan(pipeline.request())
    # moto computes no outputs for stacks made by change sets, so the stack whose
    # outputs are read is created directly, with the same parameters.
    cloudformation.create_stack(StackName=STACK, TemplateBody=NO_ECHO_TEMPLATE, Parameters=[
        {"ParameterKey": "DbPassword", "ParameterValue": "pa55-w0rd-xyz"},
        {"ParameterKey": "QueueDelay", "ParameterValue": "5"}])
    prepared = cfn_module.prepare(pipeline.request())
    outputs = cfn_module._outputs(cfn_module.describe_stack(cloudformation, STACK), prepared.secret_values)

    assert any("DbPassword=****" in message for message in runner_log.messages)
    assert not any("pa55-w0rd-xyz" in message for message in runner_log.messages)
    assert outputs["Connection"].sensitive is True
    assert outputs["Connection"].value == "db://admin:pa55-w0rd-xyz@db"
    assert outputs["QueueName"].sensitive is False


def test_a_noecho_value_quoted_in_an_error_is_masked(
        s3_bucket: str, tmp_path: Path, runner: CloudFormationRunner, cloudformation) -> None:
    config = CONFIG.replace("{{QueueDelay: 5}}", "{{ParameterType: pa55-w0rd-xyz}}")
    pipeline = Pipeline(tmp_path, f"s3://{s3_bucket}/pipelines", config)
    pipeline.release("1.0.1", template=textwrap.dedent("""\
        Parameters:
          ParameterType: {Type: String, NoEcho: true}
        Resources:
          Rejected:
            Type: AWS::SSM::Parameter
            Properties: {Name: /our-project/rejected, Type: !Ref ParameterType, Value: x}
    """))

    with pytest.raises(StageFailed) as failure:
        runner.apply(pipeline.request())

    assert "Value '****' at 'type' failed to satisfy constraint" in str(failure.value)
    assert "pa55-w0rd-xyz" not in str(failure.value)


def test_credentials_region_and_endpoint_come_from_the_request_environment(
        pipeline: Pipeline, runner: CloudFormationRunner, cloudformation, moto_server: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline.release("1.0.1")
    request = pipeline.request()
    # The process environment points nowhere useful; only the request's mapping works.
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    environ = {"AWS_ACCESS_KEY_ID": "assumed-key", "AWS_SECRET_ACCESS_KEY": "assumed-secret",
               "AWS_SESSION_TOKEN": "assumed-token", "AWS_REGION": "eu-west-1",
               "AWS_ENDPOINT_URL_CLOUDFORMATION": moto_server}
    outcome = runner.plan(replace(request, environ=environ))

    # moto answered, though the process environment names no endpoint or credentials.
    assert (outcome.changed, outcome.added) == (True, 2)
    client = cfn_module.cloudformation_client(replace(request, environ=environ))
    assert client.meta.region_name == "eu-west-1"
    assert client.meta.endpoint_url == moto_server


# --- end to end: the envpipe command --------------------------------------------


@pytest.fixture
def working_copy(s3_bucket: str, tmp_path: Path) -> Path:
    root = tmp_path / "work"
    (root / "infra").mkdir(parents=True)
    (root / "envpipe.yml").write_text(CONFIG.format(repository=f"s3://{s3_bucket}/pipelines"))
    (root / "infra" / "stack.yaml").write_text(TEMPLATE)
    return root


def test_envpipe_apply_creates_the_stack_and_destroy_removes_it(working_copy: Path, cloudformation) -> None:
    run_envpipe(["publish", "--version", "1.0.7"], cwd=working_copy, check=0)
    run_envpipe(["promote", "1.0.7", "--to", "test"], cwd=working_copy, check=0)

    applied = run_envpipe(["apply", "test"], cwd=working_copy, check=0)

    assert "test: version 1.0.7 applied (2 added" in applied.stdout
    assert "CREATE_COMPLETE" in applied.stderr  # the stack's events, in the CI log
    assert tags(stack(cloudformation))["envpipe:version"] == "1.0.7"
    planned = run_envpipe(["plan", "test", "--detailed-exitcode"], cwd=working_copy, check=0)
    assert "no changes" in planned.stdout

    destroyed = run_envpipe(["destroy", "test"], cwd=working_copy, check=0)

    assert "test: version 1.0.7 destroyed (2 destroyed" in destroyed.stdout
    assert stack(cloudformation) is None


def test_envpipe_apply_refuses_a_failed_stack_until_replace_failed(working_copy: Path, cloudformation) -> None:
    run_envpipe(["publish", "--version", "1.0.7"], cwd=working_copy, check=0)
    run_envpipe(["promote", "1.0.7", "--to", "test"], cwd=working_copy, check=0)
    run_envpipe(["apply", "test"], cwd=working_copy, check=0)
    fail_first_creation(STACK, "Queue name already taken in this account")

    refused = run_envpipe(["apply", "test"], cwd=working_copy, check=3)
    replaced = run_envpipe(["apply", "test", "--replace-failed"], cwd=working_copy, check=0)

    assert "ROLLBACK_COMPLETE" in refused.stderr and "--replace-failed" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert "applied (2 added" in replaced.stdout
    assert stack(cloudformation)["StackStatus"] == "CREATE_COMPLETE"


def test_envpipe_apply_with_an_undeclared_var_exits_2_and_changes_nothing(working_copy: Path, cloudformation) -> None:
    config = working_copy / "envpipe.yml"
    config.write_text(config.read_text().replace("{QueueDelay: 5}", "{QueueDelay: 5, Size: large}"))
    run_envpipe(["publish", "--version", "1.0.7"], cwd=working_copy, check=0)
    run_envpipe(["promote", "1.0.7", "--to", "test"], cwd=working_copy, check=0)

    result = run_envpipe(["apply", "test"], cwd=working_copy, check=2)

    assert "Size not declared in the Parameters of template stack.yaml" in result.stderr
    assert len(result.stderr.strip().splitlines()[-1]) > 0 and "Traceback" not in result.stderr
    assert stack(cloudformation) is None


def test_envpipe_apply_of_a_failing_template_exits_1(working_copy: Path, cloudformation) -> None:
    (working_copy / "infra" / "stack.yaml").write_text(FAILING_TEMPLATE)
    run_envpipe(["publish", "--version", "1.0.7"], cwd=working_copy, check=0)
    run_envpipe(["promote", "1.0.7", "--to", "test"], cwd=working_copy, check=0)

    result = run_envpipe(["apply", "test"], cwd=working_copy, check=1)

    assert "NotAType" in result.stderr


def test_a_saved_plan_keeps_its_change_set_and_apply_executes_exactly_it(working_copy: Path, cloudformation,
                                                                         tmp_path: Path) -> None:
    run_envpipe(["publish", "--version", "1.0.7"], cwd=working_copy, check=0)
    run_envpipe(["promote", "1.0.7", "--to", "test"], cwd=working_copy, check=0)
    plan_file = tmp_path / "test.plan"
    run_envpipe(["plan", "test", "--version", "1.0.7", "--out", str(plan_file)], cwd=working_copy, check=0)
    # the change set the plan made is kept for the apply; nothing is executed yet
    (kept,) = cloudformation.list_change_sets(StackName=STACK)["Summaries"]
    assert kept["ExecutionStatus"] == "AVAILABLE" and stack(cloudformation)["StackStatus"] == "REVIEW_IN_PROGRESS"

    applied = run_envpipe(["--json", "apply", "test", "--version", "1.0.7", "--plan", str(plan_file)],
                          cwd=working_copy, check=0)

    assert json_of(applied)["added"] == 2
    assert stack(cloudformation)["StackStatus"] == "CREATE_COMPLETE"
    assert f"executing the saved change set {kept['ChangeSetName']}" in applied.stderr
    # executed once: the same plan again is refused, and nothing runs
    refused = run_envpipe(["apply", "test", "--plan", str(plan_file)], cwd=working_copy, check=3)
    assert "the saved plan's change set is EXECUTE_COMPLETE" in refused.stderr
    assert "nothing was changed" in refused.stderr


def json_of(result) -> Dict[str, Any]:
    import json

    return json.loads(result.stdout)
