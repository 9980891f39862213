"""plan on CloudFormation changes nothing it did not make, and reports drift.

A plan takes no lock: a person may be reviewing a change set on the stack, or a
first apply may sit between creating and executing its change set. Drift
detection is not in moto, so it is answered by botocore's Stubber (the waiter and
the paging) and by a fake endpoint in front of moto (``envpipe plan`` end to end).
"""
from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Iterator

import boto3
import pytest
from botocore.stub import Stubber
from moto.cloudformation.models import cloudformation_backends

from conftest import REGION, list_repository, run_envpipe
from envpipe_agent.redact import Redactor
from envpipe_agent.tools import cloudformation as cfn_module
from envpipe_agent.tools.cloudformation import PLAN_TAG, ChangeSet, CloudFormationRunner
from envpipe_agent.tools.stack_drift import detect_drift
from envpipe_agent.errors import StageFailed
from fake_cloudformation import EMPTY_503, FakeCloudFormation, aws_error, aws_response
from test_cloudformation import ACCOUNT, CONFIG, STACK, TEMPLATE, Pipeline, pending_change_sets, stack

REPOSITORY = "s3://our-project-repository/pipelines"
STACK_ID = f"arn:aws:cloudformation:{REGION}:123456789012:stack/{STACK}/1"


@pytest.fixture
def pipeline(s3_bucket: str, tmp_path: Path) -> Pipeline:
    return Pipeline(tmp_path, REPOSITORY)


def change_set_of_alice(cloudformation) -> str:
    """Someone else's change set for a stack to create, made with the AWS API, not envpipe."""
    return cloudformation.create_change_set(
        StackName=STACK, ChangeSetName="alice-reviewing", ChangeSetType="CREATE", TemplateBody=TEMPLATE,
        Parameters=[{"ParameterKey": "EnvpipeEnvironment", "ParameterValue": "test"},
                    {"ParameterKey": "EnvpipeVersion", "ParameterValue": "0.9"}])["Id"]


# --- read-only ---------------------------------------------------------------------


def test_plan_leaves_a_stack_under_review_alone_and_reports_it(pipeline, cloudformation):
    pipeline.release("1.0.1")
    change_set_of_alice(cloudformation)

    outcome = CloudFormationRunner().plan(pipeline.request())

    assert outcome.changed is True and outcome.details["pending_change_sets"] == ["alice-reviewing"]
    assert "REVIEW_IN_PROGRESS with change sets this plan did not make (alice-reviewing): left alone" \
        in outcome.summary
    assert stack(cloudformation)["StackStatus"] == "REVIEW_IN_PROGRESS"
    assert pending_change_sets(cloudformation) == ["alice-reviewing"]


def test_plans_placeholder_stays_when_someone_added_a_change_set_to_it(pipeline, cloudformation, monkeypatch):
    pipeline.release("1.0.1")
    create = cfn_module._create_change_set

    def and_alice_meanwhile(*args, **kwargs):
        made = create(*args, **kwargs)
        # Alice adds her change set to the placeholder plan just made. Real
        # CloudFormation takes a CREATE change set for a REVIEW_IN_PROGRESS stack;
        # moto's API cannot, so her change set is put into moto's server directly.
        backend = cloudformation_backends[ACCOUNT][REGION]
        alice = copy.copy(backend.change_sets[made.id])
        alice.change_set_name = "alice-reviewing"
        alice.change_set_id = made.id.replace(made.id.split("/")[1], "alice-reviewing")
        backend.change_sets[alice.change_set_id] = alice
        return made

    monkeypatch.setattr(cfn_module, "_create_change_set", and_alice_meanwhile)

    outcome = CloudFormationRunner().plan(pipeline.request())

    assert outcome.changed is True and "would be created" in outcome.summary
    assert stack(cloudformation)["StackStatus"] == "REVIEW_IN_PROGRESS"
    assert pending_change_sets(cloudformation) == ["alice-reviewing"]  # plan's own is gone


def test_a_placeholder_tagged_by_another_run_is_not_removed(s3, cloudformation):
    made = cloudformation.create_change_set(
        StackName=STACK, ChangeSetName="envpipe-other-run", ChangeSetType="CREATE", TemplateBody=TEMPLATE,
        Tags=[{"Key": PLAN_TAG, "Value": "another-run"}],
        Parameters=[{"ParameterKey": "EnvpipeEnvironment", "ParameterValue": "test"},
                    {"ParameterKey": "EnvpipeVersion", "ParameterValue": "0.9"}])

    cfn_module._discard(cloudformation, ChangeSet(id=made["Id"], stack_id=made["StackId"], kind="CREATE"),
                        plan_token="this-run")

    assert stack(cloudformation)["StackStatus"] == "REVIEW_IN_PROGRESS"
    assert pending_change_sets(cloudformation) == []  # the change set was this call's to remove


def test_plan_of_a_new_stack_removes_its_own_placeholder(pipeline, cloudformation):
    pipeline.release("1.0.1")

    outcome = CloudFormationRunner().plan(pipeline.request())

    assert outcome.causes == ["template changes"] and outcome.drift is None  # nothing to drift yet
    assert stack(cloudformation) is None and pending_change_sets(cloudformation) == []


def test_a_plan_that_fails_after_making_its_placeholder_removes_it(pipeline, cloudformation, endpoint,
                                                                  monkeypatch):
    pipeline.release("1.0.1")
    endpoint.answers["DescribeChangeSet"] = EMPTY_503
    monkeypatch.setitem(pipeline.ctx.environ, "AWS_ENDPOINT_URL_CLOUDFORMATION", endpoint.url)
    monkeypatch.setitem(pipeline.ctx.environ, "AWS_MAX_ATTEMPTS", "1")

    with pytest.raises(StageFailed, match="HTTP 503"):
        CloudFormationRunner().plan(pipeline.request())

    assert "CreateChangeSet" in endpoint.calls
    assert stack(cloudformation) is None and pending_change_sets(cloudformation) == []


# --- drift, stubbed ------------------------------------------------------------------


def stubbed_client():
    client = boto3.client("cloudformation", region_name=REGION)
    return client, Stubber(client)


def drift_of_queue(delay: str = "60") -> dict:
    return {"StackId": STACK_ID, "LogicalResourceId": "Queue", "PhysicalResourceId": "our-project-test-jobs",
            "ResourceType": "AWS::SQS::Queue", "StackResourceDriftStatus": "MODIFIED",
            "Timestamp": dt.datetime(2026, 11, 29, tzinfo=dt.timezone.utc),
            "PropertyDifferences": [{"PropertyPath": "/DelaySeconds", "ExpectedValue": "5",
                                     "ActualValue": delay, "DifferenceType": "NOT_EQUAL"}]}


def test_drift_detection_waits_for_the_detection_and_reads_every_page():
    client, stubber = stubbed_client()
    status = {"StackId": STACK_ID, "StackDriftDetectionId": "d-1", "Timestamp": dt.datetime(2026, 11, 29)}
    stubber.add_response("detect_stack_drift", {"StackDriftDetectionId": "d-1"}, {"StackName": STACK_ID})
    stubber.add_response("describe_stack_drift_detection_status",
                         {**status, "DetectionStatus": "DETECTION_IN_PROGRESS"}, {"StackDriftDetectionId": "d-1"})
    stubber.add_response("describe_stack_drift_detection_status",
                         {**status, "DetectionStatus": "DETECTION_COMPLETE", "StackDriftStatus": "DRIFTED"},
                         {"StackDriftDetectionId": "d-1"})
    filters = ["MODIFIED", "DELETED"]
    stubber.add_response("describe_stack_resource_drifts",
                         {"StackResourceDrifts": [drift_of_queue("s3cr3t-value")], "NextToken": "page-2"},
                         {"StackName": STACK_ID, "StackResourceDriftStatusFilters": filters})
    deleted = {**drift_of_queue(), "LogicalResourceId": "Topic", "ResourceType": "AWS::SNS::Topic",
               "StackResourceDriftStatus": "DELETED", "PropertyDifferences": []}
    stubber.add_response("describe_stack_resource_drifts", {"StackResourceDrifts": [deleted]},
                         {"StackName": STACK_ID, "StackResourceDriftStatusFilters": filters, "NextToken": "page-2"})

    with stubber:
        drift = detect_drift(client, STACK_ID, Redactor().with_values(["s3cr3t-value"]), delay=0)

    stubber.assert_no_pending_responses()
    assert drift.unavailable is None
    assert drift.resources == [
        {"resource": "Queue", "type": "AWS::SQS::Queue", "status": "MODIFIED",
         "differences": [{"property": "/DelaySeconds", "kind": "NOT_EQUAL", "expected": "5", "actual": "****"}]},
        {"resource": "Topic", "type": "AWS::SNS::Topic", "status": "DELETED", "differences": []},
    ]


def test_a_detection_that_failed_for_some_resources_still_reports_the_others(caplog):
    client, stubber = stubbed_client()
    stubber.add_response("detect_stack_drift", {"StackDriftDetectionId": "d-2"}, {"StackName": STACK_ID})
    stubber.add_response("describe_stack_drift_detection_status", {
        "StackId": STACK_ID, "StackDriftDetectionId": "d-2", "Timestamp": dt.datetime(2026, 11, 29),
        "DetectionStatus": "DETECTION_FAILED", "DetectionStatusReason": "Failed to detect drift on Bucket"},
        {"StackDriftDetectionId": "d-2"})
    stubber.add_response("describe_stack_resource_drifts", {"StackResourceDrifts": [drift_of_queue()]},
                         {"StackName": STACK_ID, "StackResourceDriftStatusFilters": ["MODIFIED", "DELETED"]})

    with stubber, caplog.at_level("WARNING", logger="envpipe_agent.tools.stack_drift"):
        drift = detect_drift(client, STACK_ID, delay=0)

    assert [resource["resource"] for resource in drift.resources] == ["Queue"] and drift.unavailable is None
    assert "drift detection could not check every resource: Failed to detect drift on Bucket" in caplog.text


def test_an_endpoint_without_drift_detection_gives_a_reason_not_an_error():
    client, stubber = stubbed_client()
    stubber.add_client_error("detect_stack_drift", "AccessDenied", "not authorized to perform DetectStackDrift")

    with stubber:
        drift = detect_drift(client, STACK_ID, delay=0)

    assert drift.resources == []
    assert drift.unavailable == "AccessDenied: not authorized to perform DetectStackDrift"


# --- drift, end to end ------------------------------------------------------------


@pytest.fixture
def endpoint(moto_server: str) -> Iterator[FakeCloudFormation]:
    with FakeCloudFormation(moto_server) as fake:
        yield fake


@pytest.fixture
def applied(s3_bucket: str, tmp_path: Path, endpoint: FakeCloudFormation) -> Path:
    """A working copy whose version 1.0.7 is applied to test, through the fake endpoint."""
    root = tmp_path / "work"
    (root / "infra").mkdir(parents=True)
    (root / "envpipe.yml").write_text(CONFIG.format(repository=REPOSITORY))
    (root / "infra" / "stack.yaml").write_text(TEMPLATE)
    for command in (["publish", "--version", "1.0.7"], ["promote", "1.0.7", "--to", "test"], ["apply", "test"]):
        run_envpipe(command, cwd=root, env=through(endpoint), check=0)
    return root


def through(endpoint: FakeCloudFormation) -> dict:
    return {"AWS_ENDPOINT_URL_CLOUDFORMATION": endpoint.url, "AWS_MAX_ATTEMPTS": "1"}


def hand_changed_queue(endpoint: FakeCloudFormation) -> None:
    """The endpoint reports the queue's DelaySeconds changed by hand from 5 to 60."""
    endpoint.answers["DetectStackDrift"] = aws_response(
        "DetectStackDrift", "<StackDriftDetectionId>d-1</StackDriftDetectionId>")
    endpoint.answers["DescribeStackDriftDetectionStatus"] = aws_response(
        "DescribeStackDriftDetectionStatus",
        f"<StackId>{STACK_ID}</StackId><StackDriftDetectionId>d-1</StackDriftDetectionId>"
        "<StackDriftStatus>DRIFTED</StackDriftStatus><DetectionStatus>DETECTION_COMPLETE</DetectionStatus>"
        "<DriftedStackResourceCount>1</DriftedStackResourceCount><Timestamp>2026-11-29T20:00:00Z</Timestamp>")
    endpoint.answers["DescribeStackResourceDrifts"] = aws_response(
        "DescribeStackResourceDrifts",
        "<StackResourceDrifts><member>"
        f"<StackId>{STACK_ID}</StackId><LogicalResourceId>Queue</LogicalResourceId>"
        "<PhysicalResourceId>our-project-test-jobs</PhysicalResourceId><ResourceType>AWS::SQS::Queue</ResourceType>"
        "<PropertyDifferences><member><PropertyPath>/DelaySeconds</PropertyPath><ExpectedValue>5</ExpectedValue>"
        "<ActualValue>60</ActualValue><DifferenceType>NOT_EQUAL</DifferenceType></member></PropertyDifferences>"
        "<StackResourceDriftStatus>MODIFIED</StackResourceDriftStatus><Timestamp>2026-11-29T20:00:00Z</Timestamp>"
        "</member></StackResourceDrifts>")


def test_a_hand_changed_resource_makes_plan_detailed_exitcode_exit_2(applied, endpoint):
    hand_changed_queue(endpoint)

    result = run_envpipe(["plan", "test", "--detailed-exitcode", "--json"], cwd=applied, env=through(endpoint),
                         check=2)

    planned = json.loads(result.stdout)
    assert planned["causes"] == ["drift"]
    assert planned["drift"]["resources"] == [{
        "resource": "Queue", "type": "AWS::SQS::Queue", "status": "MODIFIED",
        "differences": [{"property": "/DelaySeconds", "kind": "NOT_EQUAL", "expected": "5", "actual": "60"}]}]
    assert "1 resource(s) drifted (Queue)" in planned["summary"]
    assert "drifted Queue (AWS::SQS::Queue) MODIFIED: /DelaySeconds expected 5, actual 60" in result.stderr
    records = [json.loads(body) for key, body in list_repository(REPOSITORY, ".envpipe/records/test/").items()
               if "-plan-" in key]
    assert [record["causes"] for record in records] == [["drift"]]


def test_template_changes_and_drift_are_both_named(applied, endpoint):
    hand_changed_queue(endpoint)
    config = applied / "envpipe.yml"
    config.write_text(config.read_text().replace("{QueueDelay: 5}", "{QueueDelay: 7}"))

    result = run_envpipe(["plan", "test", "--json"], cwd=applied, env=through(endpoint), check=0)

    assert json.loads(result.stdout)["causes"] == ["template changes", "drift"]


def test_without_drift_detection_plan_says_so_in_one_line_and_reports_template_changes(applied, endpoint):
    endpoint.answers["DetectStackDrift"] = aws_error("InvalidAction", "DetectStackDrift is not available")

    result = run_envpipe(["plan", "test", "--detailed-exitcode", "--json"], cwd=applied, env=through(endpoint),
                         check=0)

    planned = json.loads(result.stdout)
    assert planned["causes"] == [] and planned["drift"]["checked"] is False
    [line] = [line for line in result.stderr.splitlines() if "drift detection" in line]
    assert line == ("stack our-project-test: drift detection is not available here (InvalidAction: "
                    "DetectStackDrift is not available); reporting template changes only")
