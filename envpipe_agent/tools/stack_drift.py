"""Drift: what was changed on a stack's resources outside CloudFormation.

A change set compares the template and parameters with the stack's last deployment,
so a queue whose attributes someone changed by hand shows no change there.
``DetectStackDrift`` compares each resource's actual properties with what the
template expects; ``plan`` runs it after the change-set comparison and lists the
drifted resources with their property differences.

botocore has no waiter for drift detection, so one is defined here from the same
waiter model botocore's own are made of.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional

from botocore.exceptions import WaiterError
from botocore.waiter import WaiterModel, create_waiter_with_client

from envpipe_agent.aws_credentials import describe_failure, failure_types

log = logging.getLogger(__name__)

AWS_FAILURES = failure_types()
# Resource drift statuses that are drift (IN_SYNC and NOT_CHECKED are not).
DRIFTED = ("MODIFIED", "DELETED")
# Detection takes seconds to a few minutes; past this, plan reports template changes only.
MAX_DETECTION_SECONDS = 15 * 60


def _waiter_model(delay: float, max_attempts: int) -> WaiterModel:
    acceptors = [{"state": state, "matcher": "path", "argument": "DetectionStatus", "expected": status}
                 for state, status in (("success", "DETECTION_COMPLETE"), ("failure", "DETECTION_FAILED"))]
    return WaiterModel({"version": 2, "waiters": {"StackDriftDetectionComplete": {
        "operation": "DescribeStackDriftDetectionStatus", "delay": delay, "maxAttempts": max_attempts,
        "acceptors": acceptors,
    }}})


def _wait_for_detection(client, detection: str, delay: float, redact: Callable[[str], str]) -> None:
    attempts = max(1, int(MAX_DETECTION_SECONDS // max(delay, 1)))
    waiter = create_waiter_with_client("StackDriftDetectionComplete", _waiter_model(delay, attempts), client)
    try:
        waiter.wait(StackDriftDetectionId=detection)
    except WaiterError as exc:
        last = exc.last_response or {}
        if last.get("DetectionStatus") != "DETECTION_FAILED":
            raise
        # Some resources could not be checked; the results of the others stand.
        log.warning("drift detection could not check every resource: %s",
                    redact(str(last.get("DetectionStatusReason") or "no reason given")))


@dataclass
class Drift:
    """The drifted resources of a stack, or why drift could not be detected."""

    resources: List[Dict[str, Any]] = field(default_factory=list)
    unavailable: Optional[str] = None

    @property
    def drifted(self) -> bool:
        return bool(self.resources)

    def as_dict(self) -> Dict[str, Any]:
        return {"checked": self.unavailable is None, "resources": self.resources, "unavailable": self.unavailable}


def _resource(drift: Mapping[str, Any], redact: Callable[[str], str]) -> Dict[str, Any]:
    """One drifted resource as plan reports it; values masked (a property may hold a secret)."""
    return {
        "resource": drift.get("LogicalResourceId", "?"),
        "type": drift.get("ResourceType", "?"),
        "status": drift.get("StackResourceDriftStatus", "?"),
        "differences": [{
            "property": difference.get("PropertyPath", "?"),
            "kind": difference.get("DifferenceType", "?"),
            "expected": redact(str(difference.get("ExpectedValue", ""))),
            "actual": redact(str(difference.get("ActualValue", ""))),
        } for difference in drift.get("PropertyDifferences") or []],
    }


def describe(resource: Mapping[str, Any]) -> str:
    """``Queue (AWS::SQS::Queue) MODIFIED: /DelaySeconds expected 5, actual 60``."""
    differences = "; ".join(f"{d['property']} expected {d['expected'] or '(none)'}, actual {d['actual'] or '(none)'}"
                            for d in resource["differences"])
    return f"{resource['resource']} ({resource['type']}) {resource['status']}" + (f": {differences}"
                                                                                  if differences else "")


def _drifted_resources(client, stack_id: str) -> List[Dict[str, Any]]:
    """Every MODIFIED or DELETED resource (the API has no paginator: NextToken by hand)."""
    found: List[Dict[str, Any]] = []
    arguments: Dict[str, Any] = {"StackName": stack_id, "StackResourceDriftStatusFilters": list(DRIFTED)}
    while True:
        page = client.describe_stack_resource_drifts(**arguments)
        found.extend(page.get("StackResourceDrifts") or [])
        if not page.get("NextToken"):
            return found
        arguments["NextToken"] = page["NextToken"]


def detect_drift(client, stack_id: str, redact: Callable[[str], str] = str, delay: float = 1.0) -> Drift:
    """Run drift detection on the stack and wait for it. An endpoint that cannot do it
    (no permission, no such API, a broken answer) gives a Drift saying why, never an
    error: the plan still has the template changes to report."""
    try:
        detection = client.detect_stack_drift(StackName=stack_id).get("StackDriftDetectionId")
        if not detection:
            return Drift(unavailable=f"{client.meta.endpoint_url} answered DetectStackDrift without a detection id")
        _wait_for_detection(client, detection, delay, redact)
        resources = [_resource(drift, redact) for drift in _drifted_resources(client, stack_id)]
    except WaiterError as exc:  # before AWS_FAILURES, which holds its base class
        timed_out = "Max attempts exceeded" in str(exc)
        return Drift(unavailable=f"drift detection did not finish within {MAX_DETECTION_SECONDS // 60} minutes"
                     if timed_out else redact(str(exc)))
    except AWS_FAILURES as exc:
        return Drift(unavailable=redact(describe_failure(exc, client.meta.endpoint_url)))
    return Drift(resources=resources)
