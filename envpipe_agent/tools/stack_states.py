"""What a CloudFormation stack's status and events mean for a stage.

CloudFormation has two dozen stack statuses; a stage needs four answers (done,
failed, still running, waiting for a change set), so every decision is made on
``StackState`` rather than on the raw strings (Sceptre's lesson). The raw status is
still shown to the user, since it is what the AWS console shows them.
"""
from __future__ import annotations

import enum
from typing import Any, Iterable, List, Mapping, Optional


class StackState(enum.Enum):
    COMPLETE = "complete"
    FAILED = "failed"
    IN_PROGRESS = "in progress"
    PENDING = "pending"


def stack_state(status: str) -> StackState:
    """Reduce a StackStatus to a StackState.

    ``REVIEW_IN_PROGRESS`` (a stack that only holds an unexecuted change set) is
    pending; anything ending in ``ROLLBACK_COMPLETE`` is failed even though it says
    COMPLETE, because the operation that got it there did not happen.
    """
    if status == "REVIEW_IN_PROGRESS":
        return StackState.PENDING
    if status.endswith("ROLLBACK_COMPLETE") or status.endswith("FAILED"):
        return StackState.FAILED
    if status.endswith("IN_PROGRESS"):
        return StackState.IN_PROGRESS
    if status.endswith("COMPLETE"):
        return StackState.COMPLETE
    # A status added by AWS after this was written: treat it as running, so a stage
    # refuses to act on it rather than guessing.
    return StackState.IN_PROGRESS


# A stack whose first creation failed: CloudFormation cannot update it, only delete it.
NEEDS_REPLACEMENT = frozenset({"ROLLBACK_COMPLETE", "ROLLBACK_FAILED"})

# Failed states from which the next change set can still be applied in place.
UPDATABLE_AFTER_FAILURE = frozenset({"UPDATE_ROLLBACK_COMPLETE", "IMPORT_ROLLBACK_COMPLETE"})


def blocking_reason(status: str) -> Optional[str]:
    """Why a change set cannot be applied to a stack in ``status`` now, or None.

    ``NEEDS_REPLACEMENT`` is handled by the caller (it is fixable with
    ``--replace-failed``); this covers what only a person can resolve.
    """
    state = stack_state(status)
    if state is StackState.IN_PROGRESS:
        return "another operation is running on it; wait for it to finish, then run again"
    if status == "UPDATE_ROLLBACK_FAILED":
        return ("its last rollback failed; fix the resources named in its events and run "
                "'aws cloudformation continue-update-rollback', then run again")
    if status == "DELETE_FAILED":
        return "its deletion failed; fix the resources named in its events and destroy it again"
    if state is StackState.FAILED and status not in UPDATABLE_AFTER_FAILURE | NEEDS_REPLACEMENT:
        return "it is in a failed state CloudFormation cannot update; inspect its events in the console"
    return None


def format_event(event: Mapping[str, Any]) -> str:
    """One stack event as a log line: time, status, resource, type, reason."""
    stamp = event.get("Timestamp")
    when = stamp.strftime("%H:%M:%S") if hasattr(stamp, "strftime") else str(stamp or "")
    parts = [when, event.get("ResourceStatus", "?"), event.get("LogicalResourceId", "?"),
             f"({event.get('ResourceType', '?')})"]
    reason = event.get("ResourceStatusReason")
    if reason:
        parts.append(f"- {reason}")
    return " ".join(parts)


def failure_reasons(events: Iterable[Mapping[str, Any]], limit: int = 5) -> List[str]:
    """``Resource (Type): reason`` for each failed event, without repeats.

    ``events`` come oldest first. The first failure is the cause; later ones are
    mostly "Resource creation cancelled" knock-ons, so they are kept after it.
    """
    reasons: List[str] = []
    for event in events:
        status = str(event.get("ResourceStatus", ""))
        reason = event.get("ResourceStatusReason")
        if not reason or not status.endswith("FAILED"):
            continue
        line = f"{event.get('LogicalResourceId', '?')} ({event.get('ResourceType', '?')}): {reason}"
        if line not in reasons:
            reasons.append(line)
    return reasons[:limit]
