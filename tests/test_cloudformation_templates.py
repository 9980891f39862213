"""Templates like real ones, through the path on moto's server: publish, promote,
apply, plan, an update, status and destroy.

Each uses what public templates use: Parameters with AllowedValues and defaults,
Conditions with ``!If`` and ``AWS::NoValue``, Mappings with ``FindInMap`` and
``GetAZs``, ``!Sub`` and ``!GetAtt``, Outputs with Exports and an ``ImportValue``
between two environments' stacks, named IAM (capabilities), YAML and JSON, and one
over CloudFormation's 51,200-byte inline limit. moto reads templates as YAML 1.1,
so a ``Yes`` compared in a template is quoted there (CloudFormation itself reads it
as text); envpipe.yml's vars are not.
"""
from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any, Dict, Optional

import boto3
import pytest
from moto.cloudformation.models import CloudFormationBackend

from conftest import REGION
from envpipe_agent.context import StageContext
from envpipe_agent.stages.apply import apply, destroy, plan
from envpipe_agent.stages.promote import promote
from envpipe_agent.stages.publish import publish
from envpipe_agent.stages.status import status
from envpipe_agent.tools.cloudformation import INLINE_TEMPLATE_LIMIT
from test_cloudformation import parameters, ssm_value, stack

REPOSITORY = "s3://our-project-repository/pipelines"


class Path_:
    """A working copy of one CloudFormation definition and its trip along the path."""

    def __init__(self, root: Path, template_name: str, environments: str, capabilities: str = "[]") -> None:
        self.root = root
        self.source = root / "infra"
        self.source.mkdir(parents=True)
        self.template_name = template_name
        environments = textwrap.indent(textwrap.dedent(environments), "  ")
        (root / "envpipe.yml").write_text(
            f"project: our-project\nsource: infra\nrepository: {REPOSITORY}\ntool: cloudformation\n"
            f"environments:\n{environments}"
            f"cloudformation:\n  template: {template_name}\n  capabilities: {capabilities}\n")
        self.ctx = StageContext.load(root / "envpipe.yml", environ=dict(os.environ))

    def release(self, version: str, template: str, *environments: str) -> None:
        (self.source / self.template_name).write_text(template)
        publish(self.ctx, source=self.source, version=version)
        for environment in environments:
            promote(self.ctx, environment, version, force=True, reason="template suite")


@pytest.fixture(autouse=True)
def no_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    # moto answers DetectStackDrift with a 500 page: not worth botocore's retries here.
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")


@pytest.fixture(autouse=True)
def change_sets_as_in_cloudformation(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto gives a stack made by change sets no outputs and no exports, and lets it
    import nothing (its CloudFormation backend does all three for CreateStack only).
    CloudFormation does all three for change sets, and envpipe only uses change sets:
    the moto server (in this process) is made to, around its own execution."""
    execute = CloudFormationBackend.execute_change_set

    def execute_like_cloudformation(backend, change_set_name: str, stack_name: Optional[str] = None) -> None:
        change_set = backend.change_sets.get(change_set_name) or next(
            c for c in backend.change_sets.values() if c.change_set_name == change_set_name)
        stack = change_set.stack
        stack.cross_stack_resources = stack.resource_map.cross_stack_resources = backend.exports
        execute(backend, change_set_name, stack_name)
        stack._parse_template()
        stack.output_map = stack._create_output_map()
        for export in stack.exports:
            backend.exports[export.name] = export

    monkeypatch.setattr(CloudFormationBackend, "execute_change_set", execute_like_cloudformation)


def outputs_of(client, name: str) -> Dict[str, str]:
    return {o["OutputKey"]: o["OutputValue"] for o in stack(client, name).get("Outputs") or []}


def queue_attribute(name: str, attribute: str) -> Optional[str]:
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[attribute])["Attributes"].get(attribute)


QUEUE_TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Description: A queue, sized per environment, exporting its ARN
Parameters:
  EnvpipeEnvironment: {Type: String}
  Size:
    Type: String
    AllowedValues: [small, large]
    Default: small
  DeadLetter:
    Type: String
    AllowedValues: [Yes, No]
    Default: No
  ImportFrom:
    Type: String
    Default: ""
    Description: the stack whose queue this one sends its dead letters to
Conditions:
  IsLarge: !Equals [!Ref Size, large]
  HasDeadLetter: !Equals [!Ref DeadLetter, "Yes"]
  Imports: !Not [!Equals [!Ref ImportFrom, ""]]
Resources:
  Queue:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: !Sub "${AWS::StackName}-jobs"
      DelaySeconds: !If [IsLarge, 30, !Ref AWS::NoValue]
      VisibilityTimeout: !If [IsLarge, 600, 60]
  DeadLetterTarget:
    Type: AWS::SSM::Parameter
    Condition: HasDeadLetter
    Properties:
      Name: !Sub "/our-project/${EnvpipeEnvironment}/dead-letter"
      Type: String
      Value: !If [Imports, {"Fn::ImportValue": !Sub "${ImportFrom}-QueueArn"}, !GetAtt Queue.Arn]
Outputs:
  QueueArn:
    Value: !GetAtt Queue.Arn
    Export: {Name: !Sub "${AWS::StackName}-QueueArn"}
  QueueName:
    Value: !GetAtt Queue.QueueName
"""


def test_conditions_novalue_exports_and_an_import_between_two_environments(s3_bucket, tmp_path, cloudformation):
    path = Path_(tmp_path, "queue.yaml", """\
        - name: test
          vars: {Size: small}
        - name: staging
          vars: {Size: large, DeadLetter: Yes, ImportFrom: our-project-test}
        """)
    path.release("1.0.1", QUEUE_TEMPLATE, "test", "staging")

    apply(path.ctx, "test")
    applied = apply(path.ctx, "staging")

    test_arn = outputs_of(cloudformation, "our-project-test")["QueueArn"]
    assert queue_attribute("our-project-test-jobs", "DelaySeconds") == "0"  # AWS::NoValue: the default
    assert queue_attribute("our-project-staging-jobs", "DelaySeconds") == "30"
    assert parameters(stack(cloudformation, "our-project-staging"))["DeadLetter"] == "Yes"  # as written
    assert ssm_value("/our-project/staging/dead-letter") == test_arn  # imported from test's stack
    assert ssm_value("/our-project/test/dead-letter") is None  # condition false in test
    assert applied.outputs["QueueName"] == "our-project-staging-jobs"
    assert plan(path.ctx, "staging").changed is False

    # An update: small queues get a longer visibility timeout; the plan sees it, the apply makes it.
    path.release("1.0.2", QUEUE_TEMPLATE.replace("!If [IsLarge, 600, 60]", "!If [IsLarge, 600, 120]"), "test")
    planned = plan(path.ctx, "test")
    assert planned.changed is True and planned.causes == ["template changes"] and planned.changed_count == 1
    apply(path.ctx, "test")
    assert queue_attribute("our-project-test-jobs", "VisibilityTimeout") == "120"
    assert stack(cloudformation, "our-project-test")["StackStatus"] == "UPDATE_COMPLETE"

    [test, staging] = status(path.ctx)
    assert (test["environment"], test["version"], test["last"]["apply"]["version"]) == ("test", "1.0.2", "1.0.2")
    assert (staging["version"], staging["last"]["apply"]["result"]) == ("1.0.1", "done")

    destroy(path.ctx, "staging")
    destroy(path.ctx, "test")
    assert stack(cloudformation, "our-project-test") is None and stack(cloudformation, "our-project-staging") is None


NETWORK_TEMPLATE = {
    "AWSTemplateFormatVersion": "2010-09-09",
    "Description": "A VPC whose ranges come from a mapping, a subnet in the region's first zone",
    "Parameters": {"EnvpipeEnvironment": {"Type": "String", "AllowedValues": ["test", "staging"]}},
    "Mappings": {"Ranges": {"test": {"Vpc": "10.10.0.0/16", "Subnet": "10.10.1.0/24"},
                            "staging": {"Vpc": "10.20.0.0/16", "Subnet": "10.20.1.0/24"}}},
    "Resources": {
        "Vpc": {"Type": "AWS::EC2::VPC", "Properties": {
            "CidrBlock": {"Fn::FindInMap": ["Ranges", {"Ref": "EnvpipeEnvironment"}, "Vpc"]},
            "Tags": [{"Key": "Name", "Value": {"Fn::Sub": "our-project-${EnvpipeEnvironment}"}}]}},
        "Subnet": {"Type": "AWS::EC2::Subnet", "Properties": {
            "VpcId": {"Ref": "Vpc"},
            "CidrBlock": {"Fn::FindInMap": ["Ranges", {"Ref": "EnvpipeEnvironment"}, "Subnet"]},
            "AvailabilityZone": {"Fn::Select": [0, {"Fn::GetAZs": ""}]}}},
    },
    "Outputs": {"VpcId": {"Value": {"Ref": "Vpc"}},
                "SubnetId": {"Value": {"Ref": "Subnet"}}},
}


def test_a_json_template_with_mappings_findinmap_and_getazs(s3_bucket, tmp_path, cloudformation):
    path = Path_(tmp_path, "network.json", "- name: test\n- name: staging\n")
    path.release("2.0.1", json.dumps(NETWORK_TEMPLATE, indent=2), "staging")

    applied = apply(path.ctx, "staging")

    ec2 = boto3.client("ec2", region_name=REGION)
    [vpc] = ec2.describe_vpcs(VpcIds=[applied.outputs["VpcId"]])["Vpcs"]
    assert vpc["CidrBlock"] == "10.20.0.0/16"
    [subnet] = ec2.describe_subnets(SubnetIds=[applied.outputs["SubnetId"]])["Subnets"]
    assert (subnet["CidrBlock"], subnet["AvailabilityZone"]) == ("10.20.1.0/24", f"{REGION}a")
    assert plan(path.ctx, "staging").changed is False
    destroy(path.ctx, "staging")
    assert ec2.describe_vpcs(Filters=[{"Name": "cidr", "Values": ["10.20.0.0/16"]}])["Vpcs"] == []


IAM_TEMPLATE = """\
Parameters:
  EnvpipeEnvironment: {Type: String}
Resources:
  Deployer:
    Type: AWS::IAM::Role
    Properties:
      RoleName: !Sub "our-project-${EnvpipeEnvironment}-deployer"
      AssumeRolePolicyDocument:
        Version: "2012-10-17"
        Statement:
          - Effect: Allow
            Principal: {Service: lambda.amazonaws.com}
            Action: sts:AssumeRole
      Tags: [{Key: environment, Value: !Ref EnvpipeEnvironment}]
Outputs:
  RoleArn: {Value: !GetAtt Deployer.Arn}
"""


def test_named_iam_with_its_capability(s3_bucket, tmp_path, cloudformation):
    path = Path_(tmp_path, "iam.yaml", "- name: test\n", capabilities="[CAPABILITY_NAMED_IAM]")
    path.release("3.0.1", IAM_TEMPLATE, "test")

    applied = apply(path.ctx, "test")

    assert applied.outputs["RoleArn"].endswith(":role/our-project-test-deployer")
    iam = boto3.client("iam", region_name=REGION)
    assert iam.get_role(RoleName="our-project-test-deployer")["Role"]["Arn"] == applied.outputs["RoleArn"]
    destroy(path.ctx, "test")
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_role(RoleName="our-project-test-deployer")


def large_template(parameters: int = 60) -> Dict[str, Any]:
    """Many SSM parameters with long descriptions, as generated templates have."""
    description = "Configuration value kept for the application. " * 18
    resources = {f"Setting{i:03d}": {"Type": "AWS::SSM::Parameter", "Properties": {
        "Name": {"Fn::Sub": f"/our-project/${{EnvpipeEnvironment}}/setting-{i:03d}"},
        "Type": "String", "Value": {"Ref": "EnvpipeVersion"}, "Description": description[:1000]}}
        for i in range(parameters)}
    return {"Parameters": {"EnvpipeEnvironment": {"Type": "String"}, "EnvpipeVersion": {"Type": "String"}},
            "Resources": resources}


def test_a_template_over_the_inline_limit_goes_by_url_through_the_path(s3_bucket, tmp_path, cloudformation):
    body = json.dumps(large_template(), indent=1)
    assert len(body.encode()) > INLINE_TEMPLATE_LIMIT
    path = Path_(tmp_path, "large.json", "- name: test\n")
    path.release("4.0.1", body, "test")

    apply(path.ctx, "test")
    assert ssm_value("/our-project/test/setting-059") == "4.0.1"

    path.release("4.0.2", body.replace("Configuration value", "Setting"), "test")
    planned = plan(path.ctx, "test")
    assert planned.changed is True and planned.causes == ["template changes"] and planned.changed_count == 60
    apply(path.ctx, "test")
    assert ssm_value("/our-project/test/setting-000") == "4.0.2"
    destroy(path.ctx, "test")
    assert ssm_value("/our-project/test/setting-000") is None
