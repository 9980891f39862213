"""How a CloudFormation stack is doing: its state, and its events.

CloudFormation has two dozen stack statuses; a stage needs four answers (done,
failed, still running, waiting for a change set), so decisions are made on
``StackState`` rather than on the raw strings (Sceptre's lesson); only the few
statuses that need their own remedy (a failed first creation, a failed rollback) are
named. The raw status is still shown to the user: it is what the AWS console shows.

While an operation runs, ``EventTail`` logs the stack's new events, so a CI log
shows which resource failed and why.
"""
from __future__ import annotations

import enum
import logging
import threading
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

from envpipe_agent.aws_credentials import failure_types

log = logging.getLogger(__name__)
AWS_FAILURES = failure_types()

# New stack events are fetched this often while an operation runs.
EVENT_POLL_SECONDS = 5


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


class EventTail:
    """Logs a stack's new events while an operation runs (a background poll), and
    keeps them for the failure message. Events older than the start are skipped;
    ``redact`` masks secrets a resource's status reason might quote."""

    def __init__(self, client, stack_id: str, redact: Callable[[str], str] = str) -> None:
        self.client = client
        self.stack_id = stack_id
        self.redact = redact
        self.events: List[Dict[str, Any]] = []  # oldest first
        self._seen = {event["EventId"] for event in self._first_page()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stack-events", daemon=True)

    def _first_page(self) -> List[Dict[str, Any]]:
        try:
            return self.client.describe_stack_events(StackName=self.stack_id).get("StackEvents", [])
        except AWS_FAILURES:
            return []

    def poll(self) -> None:
        fresh: List[Dict[str, Any]] = []
        try:
            for page in self.client.get_paginator("describe_stack_events").paginate(StackName=self.stack_id):
                page_events = page.get("StackEvents", [])
                new = [event for event in page_events if event["EventId"] not in self._seen]
                fresh.extend(new)
                if len(new) < len(page_events):  # reached what was already shown
                    break
        except AWS_FAILURES as exc:  # a hiccup here must not fail the stage
            log.debug("could not read events of %s: %s", self.stack_id, exc)
            return
        for event in reversed(fresh):  # the API answers newest first
            self._seen.add(event["EventId"])
            self.events.append(event)
            log.info("  %s", self.redact(format_event(event)))

    def _run(self) -> None:
        while not self._stop.wait(EVENT_POLL_SECONDS):
            self.poll()

    def __enter__(self) -> "EventTail":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()


def recent_events(client, stack_id: str) -> List[Dict[str, Any]]:
    """The stack's latest page of events, oldest first."""
    try:
        events = client.describe_stack_events(StackName=stack_id).get("StackEvents", [])
    except AWS_FAILURES:
        return []
    return list(reversed(events))


def with_reasons(message: str, events: List[Dict[str, Any]]) -> str:
    """``message`` followed by the failed events' reasons, when there are any."""
    reasons = failure_reasons(events)
    return f"{message}: {'; '.join(reasons)}" if reasons else message


def next_step(status: str) -> str:
    """What to do after an operation ended in ``status``."""
    if status in NEEDS_REPLACEMENT:
        return "; fix the definition, publish and promote a new version, then apply with --replace-failed"
    if status == "UPDATE_ROLLBACK_COMPLETE":
        return "; the stack was rolled back to its previous state: fix the definition and publish a new version"
    return "; see the stack's events above"
