"""The CloudFormation runner: change sets through boto3, waited for with botocore waiters.

Every change goes through a change set (CREATE when there is no stack, UPDATE
otherwise), so ``plan`` and ``apply`` see the same diff and a no-op is recognised
before anything is executed. While a stack operation runs, its events are logged as
they arrive, so a CI log shows which resource failed and why.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError, NoCredentialsError, WaiterError

from envpipe_agent.aws_credentials import describe_failure, failure_types
from envpipe_agent.errors import ConfigError, EnvpipeError, Refused, StageFailed, UsageError
from envpipe_agent.tools.base import Output, RunOutcome, RunRequest
from envpipe_agent.tools.cloudformation_template import Prepared, prepare, stack_name_for
from envpipe_agent.tools.stack_drift import Drift, detect_drift
from envpipe_agent.tools.stack_drift import describe as describe_drift
from envpipe_agent.tools.stack_states import (
    NEEDS_REPLACEMENT,
    UPDATABLE_AFTER_FAILURE,
    EventTail,
    StackState,
    blocking_reason,
    failure_reasons,
    next_step,
    recent_events,
    stack_state,
    with_reasons,
)

log = logging.getLogger(__name__)

# CloudFormation's limit for TemplateBody; larger templates must come from S3.
INLINE_TEMPLATE_LIMIT = 51_200
# Waiters poll this often (botocore's default is 30 s). The first poll is immediate,
# so an operation that is already done costs no waiting at all.
WAITER_DELAY = 1
MAX_WAIT_SECONDS = 3 * 60 * 60
# Large templates are uploaded here in the repository, content-addressed per environment.
TEMPLATE_PREFIX = ".envpipe/templates"
# How "nothing to do" is reported: real CloudFormation fails the change set with the
# first; moto (and UpdateStack) answer a ValidationError with the second.
NO_CHANGES = ("didn't contain changes", "No updates are to be performed")
# Tags what a plan creates with that run's token: its placeholder stack is its own to remove.
PLAN_TAG = "envpipe:plan"
AWS_FAILURES = failure_types()


# --- AWS plumbing ---------------------------------------------------------------


def cloudformation_client(request: RunRequest):
    """A CloudFormation client with ``request``'s credentials (an assumed role's, say)."""
    # Describe* calls are throttled per account; standard retries back off on that.
    # An AWS_MAX_ATTEMPTS the agent sets (the standard variable) is botocore's to honour.
    config = (None if request.environ.get("AWS_MAX_ATTEMPTS")
              else BotoConfig(retries={"mode": "standard", "max_attempts": 8}))
    return request.client_factory("cloudformation", request.environ, config=config)


def _error_text(exc: ClientError) -> Tuple[str, str]:
    error = exc.response.get("Error", {})
    return str(error.get("Code", "")), str(error.get("Message", ""))


@contextlib.contextmanager
def _aws(action: str, stack_name: str, client) -> Iterator[None]:
    """botocore's exceptions as one clear line each (exit 1): whatever the endpoint
    answers, an HTML error page or nothing at all, it is a failed stage, never a bug."""
    try:
        yield
    except NoCredentialsError:
        raise UsageError(f"cannot {action} stack {stack_name}: no AWS credentials found; set them the usual way "
                         "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile or an instance role)") from None
    except AWS_FAILURES as exc:
        code = _error_text(exc)[0] if isinstance(exc, ClientError) else ""
        hint = "; check the agent's AWS permissions" if "AccessDenied" in code or "Unauthorized" in code else ""
        raise StageFailed(f"cannot {action} stack {stack_name}: "
                          f"{describe_failure(exc, client.meta.endpoint_url)}{hint}") from None


@contextlib.contextmanager
def _masked(redact: Callable[[str], str]) -> Iterator[None]:
    """Errors leave with NoEcho parameter values masked: CloudFormation may quote a
    rejected value in its message."""
    try:
        yield
    except EnvpipeError as exc:
        masked = redact(str(exc))
        if masked == str(exc):
            raise
        raise exc.reworded(masked) from None


class IncompleteAnswer(StageFailed):
    """An answer that parsed but lacks what every such answer has (a proxy cut it short)."""


def answered(client, answer: Mapping[str, Any], operation: str, *keys: str) -> Mapping[str, Any]:
    """``answer``, after checking it holds ``keys``: a broken answer is a failed stage
    (exit 1) naming the operation and the endpoint, never a KeyError (exit 4)."""
    missing = [key for key in keys if not isinstance(answer, Mapping) or answer.get(key) is None]
    if missing:
        raise IncompleteAnswer(f"{client.meta.endpoint_url} answered {operation} without {', '.join(missing)}: "
                               "an incomplete answer (a proxy in between?); run again")
    return answer


def describe_stack(client, name_or_id: str) -> Optional[Dict[str, Any]]:
    """The stack, or None when there is none (never created, or deleted)."""
    try:
        stacks = answered(client, client.describe_stacks(StackName=name_or_id), "DescribeStacks", "Stacks")["Stacks"]
    except ClientError as exc:
        code, message = _error_text(exc)
        if code == "ValidationError" and "does not exist" in message:
            return None
        raise
    if not stacks:
        return None
    stack = answered(client, stacks[0], "DescribeStacks", "StackId", "StackStatus")
    return None if stack["StackStatus"] == "DELETE_COMPLETE" else dict(stack)


def _wait(client, waiter: str, stack_name: str, **arguments: str) -> None:
    """Wait with a botocore waiter; a failure state is judged by the caller from the
    stack's final status, so only running out of time is an error here."""
    attempts = max(1, MAX_WAIT_SECONDS // WAITER_DELAY)
    try:
        client.get_waiter(waiter).wait(WaiterConfig={"Delay": WAITER_DELAY, "MaxAttempts": attempts}, **arguments)
    except WaiterError as exc:
        if "Max attempts exceeded" in str(exc):
            raise StageFailed(f"stack {stack_name}: still not done after {MAX_WAIT_SECONDS // 60} minutes; "
                              "see its events in the CloudFormation console") from None


def _outputs(stack: Optional[Mapping[str, Any]], secret_values: List[str]) -> Dict[str, Output]:
    """Stack outputs; one that echoes a NoEcho parameter's value is marked sensitive."""
    result: Dict[str, Output] = {}
    for item in (stack or {}).get("Outputs") or []:
        value = item.get("OutputValue", "")
        sensitive = any(secret in str(value) for secret in secret_values)
        result[item["OutputKey"]] = Output(value=value, sensitive=sensitive)
    return result


# --- change sets ----------------------------------------------------------------


@dataclass
class ChangeSet:
    id: str
    stack_id: str
    kind: str  # CREATE or UPDATE
    changes: List[Dict[str, Any]] = field(default_factory=list)
    no_changes: bool = False
    template_url: Optional[str] = None  # set when the template went through S3
    failure: Optional[str] = None  # CloudFormation's reason when the change set FAILED

    def count(self, action: str) -> int:
        return sum(1 for change in self.changes if change.get("ResourceChange", {}).get("Action") == action)

    @property
    def counts(self) -> str:
        return f"{self.count('Add')} to add, {self.count('Modify')} to change, {self.count('Remove')} to remove"


def _change_set_name(version: str) -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"envpipe-{re.sub(r'[^A-Za-z0-9-]', '-', version)}-{stamp}"[:128]


def _is_no_change(text: str) -> bool:
    return any(marker in text for marker in NO_CHANGES)


@contextlib.contextmanager
def _template_argument(request: RunRequest, prepared: Prepared) -> Iterator[Dict[str, str]]:
    """``TemplateBody``, or ``TemplateURL`` after uploading a large template to the repository."""
    size = len(prepared.body)
    if size <= INLINE_TEMPLATE_LIMIT:
        yield {"TemplateBody": prepared.body.decode("utf-8")}
        return
    digest = hashlib.sha256(prepared.body).hexdigest()
    key = f"{TEMPLATE_PREFIX}/{request.environment.name}/{digest}{_suffix(prepared.template_path)}"
    url = request.repository.https_url(key)
    if url is None:
        raise UsageError(
            f"template {prepared.template_path} is {size:,} bytes, over CloudFormation's {INLINE_TEMPLATE_LIMIT:,}-byte "
            f"limit for inline templates, and repository {request.repository.location()} is a folder: use an "
            "s3:// repository (the template is then passed by URL) or make the template smaller"
        )
    request.repository.write(key, prepared.body)
    log.info("template is %s bytes: passing it as %s", f"{size:,}", url)
    yield {"TemplateURL": url}


def _suffix(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return "." + name.rsplit(".", 1)[-1] if "." in name else ""


def _create_change_set(client, request: RunRequest, prepared: Prepared, kind: str,
                       plan_token: Optional[str] = None) -> ChangeSet:
    """Create a change set and wait for it. ``plan_token`` tags what a plan makes, so
    the plan can tell its own placeholder stack from anyone else's."""
    name = prepared.stack_name
    tags = prepared.tags + ([{"Key": PLAN_TAG, "Value": plan_token}] if plan_token else [])
    log.info("stack %s: creating %s change set for version %s (parameters: %s)", name, kind, request.version,
             ", ".join(prepared.shown_parameters) or "none")
    with _template_argument(request, prepared) as template:
        try:
            response = client.create_change_set(
                StackName=name,
                ChangeSetName=_change_set_name(request.version),
                ChangeSetType=kind,
                Parameters=prepared.parameters,
                Capabilities=prepared.capabilities,
                Tags=tags,
                Description=f"envpipe {request.environment.name} {request.version}"[:1024],
                **template,
            )
        except ClientError as exc:
            code, message = _error_text(exc)
            if code == "ValidationError" and _is_no_change(message):
                return ChangeSet(id="", stack_id="", kind=kind, no_changes=True)
            if code == "InsufficientCapabilitiesException":
                raise ConfigError(f"{request.config.path}: cloudformation.capabilities: template "
                                  f"{prepared.template_path} needs more: {message}; add them to the list") from None
            raise StageFailed(f"stack {name}: CloudFormation rejected the change set: "
                              f"{describe_failure(exc, client.meta.endpoint_url)}") from None
    answered(client, response, "CreateChangeSet", "Id", "StackId")
    change_set = ChangeSet(id=response["Id"], stack_id=response["StackId"], kind=kind,
                           template_url=template.get("TemplateURL"))
    try:
        _read_changes(client, change_set, name)
    except BaseException:
        if plan_token:  # a plan leaves nothing of its own behind, as far as it still can
            with contextlib.suppress(*AWS_FAILURES):
                _discard(client, change_set, plan_token)
        raise
    if change_set.failure is not None:
        _discard(client, change_set, plan_token)
        raise StageFailed(f"stack {name}: CloudFormation could not create the change set: "
                          f"{change_set.failure or 'no reason given'}; fix the template and publish a new version")
    if change_set.no_changes:
        return change_set
    for change in change_set.changes:
        resource = change.get("ResourceChange", {})
        replacement = resource.get("Replacement")
        log.info("  %-7s %s (%s)%s", resource.get("Action", "?"), resource.get("LogicalResourceId", "?"),
                 resource.get("ResourceType", "?"),
                 f" replacement: {replacement}" if replacement and replacement != "False" else "")
    log.info("stack %s: %s", name, change_set.counts)
    return change_set


def _read_changes(client, change_set: ChangeSet, name: str) -> None:
    """Wait for the change set, then read its changes, its no-op (the change set is
    then deleted) or the reason it failed."""
    _wait(client, "change_set_create_complete", name, ChangeSetName=change_set.id)
    described = client.describe_change_set(ChangeSetName=change_set.id)
    if answered(client, described, "DescribeChangeSet", "Status")["Status"] == "FAILED":
        reason = described.get("StatusReason", "")
        if _is_no_change(reason):
            change_set.no_changes = True
            client.delete_change_set(ChangeSetName=change_set.id)
        else:
            change_set.failure = reason
        return
    change_set.changes = list(described.get("Changes", []))
    while described.get("NextToken"):
        described = client.describe_change_set(ChangeSetName=change_set.id, NextToken=described["NextToken"])
        change_set.changes.extend(described.get("Changes", []))


def _stack_tags(stack: Mapping[str, Any]) -> Dict[str, str]:
    return {tag.get("Key", ""): tag.get("Value", "") for tag in stack.get("Tags") or []}


def _change_sets(client, stack_id: str) -> List[Dict[str, Any]]:
    """The stack's change sets (summaries). Filtered by stack id as well: moto answers
    with every stack's."""
    return [summary for page in client.get_paginator("list_change_sets").paginate(StackName=stack_id)
            for summary in page.get("Summaries", []) if summary.get("StackId") in (None, stack_id)]


def _discard(client, change_set: ChangeSet, plan_token: Optional[str] = None) -> None:
    """Remove what this run made for ``change_set``, and nothing else.

    A CREATE change set made an empty REVIEW_IN_PROGRESS stack. That stack is deleted
    too only while it is still just that: holding no other change set and, for a plan,
    tagged with this run's ``plan_token``. A plan takes no lock: someone may have added
    a change set of their own meanwhile.
    """
    if change_set.kind == "CREATE" and change_set.stack_id:
        stack = describe_stack(client, change_set.stack_id)
        if stack is not None and stack_state(stack["StackStatus"]) is StackState.PENDING:
            others = [c["ChangeSetName"] for c in _change_sets(client, change_set.stack_id)
                      if c.get("ChangeSetId") != change_set.id]
            ours = plan_token is None or _stack_tags(stack).get(PLAN_TAG) == plan_token
            if ours and not others:
                if change_set.id:
                    client.delete_change_set(ChangeSetName=change_set.id)
                client.delete_stack(StackName=change_set.stack_id)
                return
            log.warning("stack %s: left in REVIEW_IN_PROGRESS for %s; only this run's change set is removed",
                        stack.get("StackName", change_set.stack_id),
                        f"its change sets {', '.join(others)}" if others else "whoever else made it")
    if change_set.id:
        client.delete_change_set(ChangeSetName=change_set.id)


def _pending_review(client, stack: Mapping[str, Any], name: str) -> RunOutcome:
    """A plan's report on a REVIEW_IN_PROGRESS stack it did not make: left alone."""
    pending = [c["ChangeSetName"] for c in _change_sets(client, stack["StackId"])]
    left_by = " (left by an interrupted 'envpipe plan')" if PLAN_TAG in _stack_tags(stack) else ""
    summary = (f"stack {name} is REVIEW_IN_PROGRESS{left_by} with change sets this plan did not make "
               f"({', '.join(pending) or 'none'}): left alone; it holds no resources yet, and apply would "
               "replace it with a stack created from this version")
    log.warning("%s", summary)
    return RunOutcome(changed=True, summary=summary, causes=["template changes"],
                      details={"stack_name": name, "status": stack["StackStatus"], "pending_change_sets": pending})


def _detectable(stack: Optional[Mapping[str, Any]]) -> bool:
    """Whether CloudFormation runs drift detection on a stack in this state."""
    if stack is None:
        return False
    status = stack["StackStatus"]
    return stack_state(status) is StackState.COMPLETE or status in UPDATABLE_AFTER_FAILURE


def _plan_outcome(name: str, version: str, change_set: ChangeSet, drift: Optional[Drift]) -> RunOutcome:
    """The plan's result: template changes from the change set, and drift."""
    causes: List[str] = []
    parts: List[str] = []
    if change_set.no_changes:
        log.info("stack %s matches version %s: no template changes", name, version)
    else:
        causes.append("template changes")
        parts.append(f"{'would be created' if change_set.kind == 'CREATE' else 'would change'}: {change_set.counts}")
    if drift is not None and drift.unavailable:
        log.warning("stack %s: drift detection is not available here (%s); reporting template changes only",
                    name, drift.unavailable)
    if drift is not None and drift.drifted:
        causes.append("drift")
        parts.append(f"{len(drift.resources)} resource(s) drifted "
                     f"({', '.join(resource['resource'] for resource in drift.resources)})")
        for resource in drift.resources:
            log.info("  drifted %s", describe_drift(resource))
    return RunOutcome(
        changed=bool(causes), added=change_set.count("Add"), changed_count=change_set.count("Modify"),
        destroyed=change_set.count("Remove"), summary=f"stack {name}: {'; '.join(parts) or 'no changes'}",
        causes=causes, drift=drift.as_dict() if drift is not None else None,
        details={"stack_name": name, "change_set_type": change_set.kind},
    )


# --- the runner -------------------------------------------------------------------


class CloudFormationRunner:
    name = "cloudformation"

    def _existing_stack(self, client, request: RunRequest, prepared: Prepared, replace: bool,
                        redact: Callable[[str], str] = str) -> Optional[Dict[str, Any]]:
        """The stack a change set can be based on, or None for a CREATE; clears away an
        empty placeholder, and a failed first creation when ``replace`` is allowed."""
        name = prepared.stack_name
        stack = describe_stack(client, name)
        if stack is None:
            return None
        status = stack["StackStatus"]
        if stack_state(status) is StackState.PENDING:
            # Left by change sets never executed: it holds no resources. apply runs under
            # the environment's lock, so no envpipe run is between creating and executing.
            pending = ", ".join(c["ChangeSetName"] for c in _change_sets(client, stack["StackId"])) or "none"
            log.info("stack %s is %s (unexecuted change sets: %s); removing the empty stack first",
                     name, status, pending)
            self._delete(client, stack, name, redact)
            return None
        if status in NEEDS_REPLACEMENT:
            reasons = failure_reasons(recent_events(client, stack["StackId"]))
            cause = f" (it failed because: {'; '.join(reasons)})" if reasons else ""
            if not replace:
                raise Refused(f"stack {name} is {status}: its first creation failed and CloudFormation cannot "
                              f"update it{cause}; run again with --replace-failed to delete and re-create it")
            log.info("stack %s is %s%s; deleting it to create it again (--replace-failed)", name, status,
                     redact(cause))
            self._delete(client, stack, name, redact)
            return None
        problem = blocking_reason(status)
        if problem:
            raise Refused(f"stack {name} is {status}: {problem}")
        return stack

    def _delete(self, client, stack: Mapping[str, Any], name: str,
                redact: Callable[[str], str] = str) -> List[Dict[str, Any]]:
        """Delete the stack and wait; return the events seen. Raise StageFailed if it fails."""
        stack_id = stack["StackId"]
        with _aws("delete", name, client):
            with EventTail(client, stack_id, redact) as tail:
                client.delete_stack(StackName=stack_id)
                _wait(client, "stack_delete_complete", name, StackName=stack_id)
            final = describe_stack(client, stack_id)
        if final is not None:
            raise StageFailed(with_reasons(f"stack {name}: deletion failed, now {final['StackStatus']}", tail.events))
        return tail.events

    def plan(self, request: RunRequest) -> RunOutcome:
        """What apply would change, changing nothing this run did not make: the change
        set it creates is deleted, and so is the placeholder stack of a first creation
        (see ``_discard``); then drift detection on an existing stack."""
        prepared = prepare(request)
        name = prepared.stack_name
        client = cloudformation_client(request)
        redact = request.redactor.with_values(prepared.secret_values)
        with _masked(redact), _aws("plan", name, client):
            stack = describe_stack(client, name)
            status = stack["StackStatus"] if stack else None
            if stack is not None and stack_state(status) is StackState.PENDING:
                return _pending_review(client, stack, name)
            if status in NEEDS_REPLACEMENT:
                summary = f"stack {name} is {status}: apply --replace-failed would delete it and create it again"
                log.info("%s", summary)
                return RunOutcome(changed=True, summary=summary, causes=["template changes"],
                                  details={"stack_name": name, "replace": True})
            problem = blocking_reason(status) if status else None
            if problem:
                raise Refused(f"stack {name} is {status}: {problem}")
            token = uuid.uuid4().hex
            change_set = _create_change_set(client, request, prepared, "UPDATE" if stack else "CREATE",
                                            plan_token=token)
            keep = bool(request.options.get("save_plan"))
            if not change_set.no_changes and not keep:
                _discard(client, change_set, token)
            drift = detect_drift(client, stack["StackId"], redact, WAITER_DELAY) if _detectable(stack) else None
        outcome = _plan_outcome(name, request.version, change_set, drift)
        if keep:
            # plan --out: the change set is kept for 'apply --plan', which executes it as it is
            outcome.details["tool_plan"] = {"change_set": change_set.id or None, "stack": change_set.stack_id or None,
                                            "kind": change_set.kind}
        return outcome
    def apply(self, request: RunRequest) -> RunOutcome:
        prepared = prepare(request)
        redact = request.redactor.with_values(prepared.secret_values)
        with _masked(redact):
            return self._apply(request, prepared, redact)

    def _apply(self, request: RunRequest, prepared: Prepared, redact: Callable[[str], str]) -> RunOutcome:
        name = prepared.stack_name
        client = cloudformation_client(request)
        saved = request.options.get("saved_plan_details")
        if saved is not None:
            return self._apply_saved(client, name, prepared, redact, saved)
        with _aws("apply", name, client):
            stack = self._existing_stack(client, request, prepared, replace=bool(request.options.get("replace_failed")),
                                         redact=redact)
            change_set = _create_change_set(client, request, prepared, "UPDATE" if stack else "CREATE")
            if change_set.no_changes:
                log.info("stack %s is up to date with version %s: nothing to change", name, request.version)
                return RunOutcome(changed=False, outputs=_outputs(stack, prepared.secret_values),
                                  summary=f"stack {name}: no changes",
                                  details={"stack_name": name, "status": stack["StackStatus"] if stack else None})
            return self._execute(client, name, change_set, prepared, redact)

    def _apply_saved(self, client, name: str, prepared: Prepared, redact: Callable[[str], str],
                     saved: Mapping[str, Any]) -> RunOutcome:
        """Execute the change set a saved plan kept (``plan --out``), as it is; CloudFormation
        itself refuses one the stack has moved on from, and so does this, in words."""
        with _aws("apply", name, client):
            if not saved.get("change_set"):
                stack = describe_stack(client, name)
                log.info("stack %s: the saved plan changes nothing", name)
                return RunOutcome(changed=False, outputs=_outputs(stack, prepared.secret_values),
                                  summary=f"stack {name}: no changes (as planned)", details={"stack_name": name})
            try:
                described = client.describe_change_set(ChangeSetName=saved["change_set"])
            except ClientError as exc:
                if _error_text(exc)[0] != "ChangeSetNotFound":
                    raise
                described = {"ExecutionStatus": "deleted", "StatusReason": "it no longer exists"}
            if described.get("ExecutionStatus") != "AVAILABLE":
                raise Refused(f"stack {name}: the saved plan's change set is {described.get('ExecutionStatus')} "
                              f"({described.get('StatusReason') or 'the stack changed since, or it ran already'}): "
                              "CloudFormation will not execute it and nothing was changed. Plan again, have that "
                              "plan approved, and apply it")
            change_set = ChangeSet(id=described["ChangeSetId"], stack_id=described["StackId"],
                                   kind=str(saved.get("kind") or "UPDATE"), changes=list(described.get("Changes", [])))
            log.info("stack %s: executing the saved change set %s (%s)", name, described.get("ChangeSetName"),
                     change_set.counts)
            return self._execute(client, name, change_set, prepared, redact)

    def _execute(self, client, name: str, change_set: ChangeSet, prepared: Prepared,
                 redact: Callable[[str], str]) -> RunOutcome:
        tail = EventTail(client, change_set.stack_id, redact)
        try:
            with tail:
                client.execute_change_set(ChangeSetName=change_set.id)
                waiter = "stack_create_complete" if change_set.kind == "CREATE" else "stack_update_complete"
                _wait(client, waiter, name, StackName=change_set.stack_id)
        except AWS_FAILURES as exc:
            failure = describe_failure(exc, client.meta.endpoint_url)
            raise StageFailed(with_reasons(f"stack {name}: executing the change set failed: {failure}",
                                            tail.events)) from None
        final = describe_stack(client, change_set.stack_id)
        status = final["StackStatus"] if final else "DELETE_COMPLETE"
        if final is None or stack_state(status) is not StackState.COMPLETE:
            raise StageFailed(with_reasons(f"stack {name}: {change_set.kind.lower()} failed, now {status}",
                                            tail.events) + next_step(status))
        log.info("stack %s: %s", name, status)
        return RunOutcome(
            changed=True, added=change_set.count("Add"), changed_count=change_set.count("Modify"),
            destroyed=change_set.count("Remove"), outputs=_outputs(final, prepared.secret_values),
            summary=f"stack {name}: {status} ({change_set.counts.replace('to ', '')})",
            details={"stack_name": name, "stack_id": final["StackId"], "status": status,
                     "change_set_type": change_set.kind, "template_url": change_set.template_url},
        )

    def destroy(self, request: RunRequest) -> RunOutcome:
        name = stack_name_for(request)
        client = cloudformation_client(request)
        with _aws("destroy", name, client):
            stack = describe_stack(client, name)
            if stack is None:
                log.info("stack %s does not exist: nothing to destroy", name)
                self._forget_templates(request)
                return RunOutcome(changed=False, summary=f"stack {name}: does not exist",
                                  details={"stack_name": name})
            if stack_state(stack["StackStatus"]) is StackState.IN_PROGRESS:
                raise Refused(f"stack {name} is {stack['StackStatus']}: another operation is running on it; "
                              "wait for it to finish, then destroy again")
            resources = sum(len(page.get("StackResourceSummaries", [])) for page in
                            client.get_paginator("list_stack_resources").paginate(StackName=stack["StackId"]))
            log.info("stack %s: deleting (%d resources)", name, resources)
            self._delete(client, stack, name)
        self._forget_templates(request)
        log.info("stack %s: DELETE_COMPLETE", name)
        return RunOutcome(changed=True, destroyed=resources, summary=f"stack {name}: deleted ({resources} resources)",
                          details={"stack_name": name, "stack_id": stack["StackId"], "status": "DELETE_COMPLETE"})

    @staticmethod
    def _forget_templates(request: RunRequest) -> None:
        """Remove the large templates uploaded for this environment: its stack is gone."""
        prefix = f"{TEMPLATE_PREFIX}/{request.environment.name}/"
        keys = [info.key for info in request.repository.list(prefix)]
        if keys:
            request.repository.delete(keys)
