"""apply, plan, destroy: run the tool on an environment's verified definition (SPEC §4).

Each stage: credentials for the environment (role assumed, account checked), the
environment lock (apply and destroy), the definition fetched and verified into a
private work folder, the tool run, and a record written whatever the result.
Destroy also empties the environment's folder once the infrastructure is gone.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from envpipe_agent import saved_plan
from envpipe_agent.approval import approver
from envpipe_agent.config import Environment
from envpipe_agent.context import StageContext
from envpipe_agent.errors import (EnvpipeError, LockHeld, NotFound, Refused, RepositoryError, StageFailed,
                                  Terminated, UsageError)
from envpipe_agent.instances import refuse_bluegreen_target
from envpipe_agent.live import read_live
from envpipe_agent.locking import Lease, environment_lock
from envpipe_agent.manifest import MANIFEST_KEY, Manifest, check_holds, read_manifest
from envpipe_agent.parallel import background
from envpipe_agent.policy import Hold, enforce_policy, override_details
from envpipe_agent.pause_points import pause_point
from envpipe_agent.records import last_applied, utc_now
from envpipe_agent.redact import Redactor, redact_data
from envpipe_agent.tools.base import RunOutcome, RunRequest, ToolRunner
from envpipe_agent.tools.terraform_args import plan_arguments
from envpipe_agent.workdir import fetched

log = logging.getLogger(__name__)

# tool -> "module:class", imported on use: a Terraform user never imports the
# CloudFormation runner, and each runner's module may be missing from a slim install.
RUNNERS: Dict[str, str] = {
    "terraform": "envpipe_agent.tools.terraform:TerraformRunner",
    "cloudformation": "envpipe_agent.tools.cloudformation:CloudFormationRunner",
}
LOCKED_ACTIONS = ("apply", "destroy")


def get_runner(tool: str) -> ToolRunner:
    """A runner instance for ``tool`` (``terraform`` or ``cloudformation``)."""
    if tool not in RUNNERS:
        raise UsageError(f"unknown tool {tool!r}: use one of {', '.join(sorted(RUNNERS))}")
    module_name, class_name = RUNNERS[tool].split(":")
    try:
        runner_class = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"the {tool} runner is not available in this installation ({exc}); "
                         "reinstall envpipe-agent") from None
    return runner_class()


@dataclass
class StageResult:
    action: str
    environment: str
    version: str
    tool: str
    result: str
    changed: bool
    added: int = 0
    changed_count: int = 0
    destroyed: int = 0
    summary: str = ""
    outputs: Dict[str, Any] = field(default_factory=dict)
    last_applied_version: Optional[str] = None
    emptied: Optional[int] = None
    workdir: Optional[str] = None
    seconds: float = 0.0
    fetch_seconds: float = 0.0
    record: Optional[str] = None
    forced: bool = False  # an approval: manual environment's guard overridden (--force --reason)
    approved_by: Optional[str] = None  # who approved it, for an approval: manual environment
    # plan: what makes it a change ("template changes", "drift", "unapplied version";
    # "changes" where the tool does not say), and the drift found (None: not checked)
    causes: List[str] = field(default_factory=list)
    drift: Optional[Dict[str, Any]] = None
    plan_file: Optional[str] = None  # plan --out: the saved plan; apply --plan: the plan applied
    plan_sha256: Optional[str] = None

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _empty_folder(ctx: StageContext, environment: str) -> int:
    """Delete everything in the environment's folder, the manifest first: a folder
    caught half-emptied then holds no version at all, never a damaged one."""
    prefix = f"{environment}/"
    keys = [info.key for info in ctx.repository.list(prefix)]
    manifest = prefix + MANIFEST_KEY
    if manifest in keys:
        ctx.repository.delete([manifest])
    others = [key for key in keys if key != manifest]
    ctx.repository.delete(others)
    return len(others)


class ActionSteps:
    """An action's own parts of a run, which the shared skeleton (_run_stage) calls at
    fixed points; each does nothing here. One instance per run: it may keep what it read."""

    def prepare(self, ctx: StageContext, env: Environment, options: Dict[str, Any]) -> None:
        """Before anything is read or locked: refuse early, add the tool's options."""

    def verified(self, env: Environment, manifest: Manifest, details: Dict[str, Any]) -> None:
        """The definition is fetched and verified, the lock held; the tool has not run."""

    def ran(self, ctx: StageContext, env: Environment, manifest: Manifest, outcome: RunOutcome,
            details: Dict[str, Any]) -> None:
        """The tool has run; its work folder is still there."""

    def finished(self, ctx: StageContext, env: Environment, result: StageResult, details: Dict[str, Any]) -> None:
        """The run is over and the lock still ours (checked); before the result is recorded."""


class _AppliesSavedPlan(ActionSteps):
    """apply --plan FILE: the plan saved by 'plan --out', applied as it was made."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.approved: Optional[saved_plan.SavedPlan] = None
        self.sha256 = ""

    def prepare(self, ctx: StageContext, env: Environment, options: Dict[str, Any]) -> None:
        # Read and checked before anything is locked or run: a plan for another
        # environment, project or tool is refused before its content is looked at.
        self.approved, options["saved_plan"] = saved_plan.read(self.path)
        saved_plan.check(self.approved, self.path, ctx.config.project, env.name, ctx.config.tool,
                         options["saved_plan"])
        options["saved_plan_details"] = self.approved.tool_plan
        options["plan_sha256"] = self.sha256 = saved_plan.sha256(self.path)

    def verified(self, env: Environment, manifest: Manifest, details: Dict[str, Any]) -> None:
        assert self.approved is not None
        saved_plan.check_holds(self.approved, self.path, env.name, manifest.version, manifest.digest)
        details["plan"] = {"sha256": self.sha256, "planned": self.approved.created, "by": self.approved.build}

    def finished(self, ctx: StageContext, env: Environment, result: StageResult, details: Dict[str, Any]) -> None:
        result.plan_file, result.plan_sha256 = str(self.path), self.sha256


class _SavesPlan(ActionSteps):
    """plan --out FILE: the plan the tool makes is saved there for 'apply --plan FILE'."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sha256 = ""

    def prepare(self, ctx: StageContext, env: Environment, options: Dict[str, Any]) -> None:
        options["save_plan"] = True
        saved_plan.prepare(self.path)

    def ran(self, ctx: StageContext, env: Environment, manifest: Manifest, outcome: RunOutcome,
            details: Dict[str, Any]) -> None:
        details["saved_plan"] = _save_plan(ctx, self.path, env.name, manifest, outcome)
        self.sha256 = details["saved_plan"]["sha256"]

    def finished(self, ctx: StageContext, env: Environment, result: StageResult, details: Dict[str, Any]) -> None:
        result.plan_file, result.plan_sha256 = str(self.path), self.sha256


class _EmptiesFolder(ActionSteps):
    """destroy: once the infrastructure is gone, the environment's folder is emptied."""

    def finished(self, ctx: StageContext, env: Environment, result: StageResult, details: Dict[str, Any]) -> None:
        result.emptied = _empty_folder(ctx, env.name)


@dataclass(frozen=True)
class StageRequest:
    """What one run of apply, plan or destroy is asked to do (see _run_stage)."""
    action: str
    environment: str
    keep_workdir: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)  # for the tool (RunRequest.options)
    runner: Optional[ToolRunner] = None
    # plan of a published version (what an approver looks at before promoting): its
    # own folder, verified against its manifest, instead of the environment's
    candidate: Optional[str] = None
    override: Optional[str] = None  # the reason given with --force: the policy overridden, recorded
    expected: Optional[str] = None  # --version: the version the environment must hold
    held: Optional[Lease] = None  # the environment's lock, already held by the caller
    approved_by: Optional[str] = None
    now: Optional[dt.datetime] = None
    # (folder, subfolder): the stack in that subfolder of another environment's folder
    # (a blue-green router, from the live instance's version), with envpipe's extra
    # ``variables`` (RunRequest.variables)
    definition: Optional[Tuple[str, str]] = None
    variables: Mapping[str, str] = field(default_factory=dict)
    steps: ActionSteps = field(default_factory=ActionSteps)  # the action's own parts


def _run_stage(ctx: StageContext, asked: StageRequest) -> StageResult:
    """Run ``asked.action`` on ``asked.environment``: the skeleton every action shares
    (credentials and manifest read together, approver and policy, lock, fetch and
    verify, the tool, the result recorded), with the action's own steps at fixed points.
    ``asked.override``, the reason given with --force, overrides the promotion policy
    (SPEC §10) and is recorded with what it overrode."""
    started = time.monotonic()
    action, steps = asked.action, asked.steps
    env = ctx.environment(asked.environment)
    tool = ctx.config.tool
    runner = asked.runner or get_runner(tool)
    options = {**asked.options, "save_plan": False}
    steps.prepare(ctx, env, options)
    folder = _definition_folder(env, asked)
    with background() as submit:
        # The credentials (an assumed role, the account check) are fetched while the
        # environment's manifest and policy are read; their errors still come in this order.
        credentials_read = submit(ctx.credentials, env)
        promoted = read_manifest(ctx.repository, folder)
        if promoted is None:
            raise NotFound(_holds_nothing(ctx, env, asked, folder))
        version = promoted.version
        # The promotion policy of a path environment, after the gate; plan changes nothing,
        # and an on-demand instance has no policy.
        held_by = (enforce_policy(ctx.config, ctx.repository, env.name, version, asked.now or utc_now(), action,
                                  force=asked.override is not None)
                   if action in LOCKED_ACTIONS and env.on_path else [])
    redactor = ctx.redactor
    # Records are masked with secrets and credentials only (ctx.record_redactor): a
    # TF_VAR_* value masked there would corrupt an output that merely equals it.
    records = ctx.records
    details = _details(asked, tool, options, held_by)

    def record(result: str, extra: Mapping[str, Any]) -> Dict[str, Any]:
        body = {**details, **extra, "seconds": round(time.monotonic() - started, 3)}
        return records.write(env.name, action, version, result, body)

    recorded = False

    def record_failure(exc: BaseException) -> None:
        """Record how the run ended, once; a repository that fails here too gets a
        warning, so the error the user sees stays the one that stopped the run."""
        nonlocal recorded
        if recorded:
            return
        recorded = True
        try:
            record(*_failure(exc, env.name))
        except Exception as problem:  # noqa: BLE001 - the original error is what matters
            log.warning("%s: could not write the %s record: %s", env.name, action, problem)

    try:
        # Before anything is locked or run: the approver (SPEC §6), recorded when given.
        who = approver(env, action, ctx.environ, asked.approved_by) if action in LOCKED_ACTIONS else None
        if who:
            details["approved_by"] = who
        check_holds(env.name, version, asked.expected, action)
        # Credentials first: a wrong account is refused before anything is locked or run.
        credentials = credentials_read.result()
        redactor = redactor.with_values(credentials.secrets)
        records = records.with_secrets(credentials.secrets)
        if credentials.account:
            details["aws"] = credentials.as_record()
        lock = (environment_lock(ctx.repository, env.name, action, ctx.ci, timeout=ctx.lock_timeout)
                if action in LOCKED_ACTIONS and asked.held is None else contextlib.nullcontext(asked.held))
        with lock as lease:
            try:
                if asked.override:
                    # Recorded before anything is run: the override stands whatever follows.
                    records.write(env.name, "override", version, "forced",
                                  {"reason": asked.override, "overrides": action, "approval": env.approval,
                                   **override_details(held_by)})
                with fetched(ctx.repository, folder, asked.keep_workdir, ctx.environ, ctx.config.project) as work:
                    version = work.manifest.version
                    check_holds(env.name, version, asked.expected, action)  # promoted again while we waited?
                    steps.verified(env, work.manifest, details)
                    details["digest"] = work.manifest.digest
                    fetch_seconds = work.verified.seconds
                    request = RunRequest(config=ctx.config, environment=env, version=version,
                                         manifest=work.manifest,
                                         workdir=work.path / asked.definition[1] if asked.definition else work.path,
                                         environ=credentials.environ,
                                         redactor=redactor, repository=ctx.repository_as(credentials),
                                         ci=ctx.ci, options=options, client_factory=ctx.client_factory,
                                         variables=dict(asked.variables))
                    log.info("%s: %s of version %s with %s", env.name, action, version, tool)
                    pause_point(f"{action}:fetched", ctx.environ)
                    if lease is not None:
                        lease.check()  # the fetch can be long: the lock must still be ours
                    outcome: RunOutcome = getattr(runner, action)(request)
                    pause_point(f"{action}:done", ctx.environ)
                    steps.ran(ctx, env, work.manifest, outcome, details)
                    kept = str(work.path) if asked.keep_workdir else None
                if lease is not None:
                    lease.check()
                result = _finish(ctx, action, env.name, version, tool, outcome, redactor, records.redactor)
                result.workdir, result.fetch_seconds = kept, round(fetch_seconds, 3)
                result.forced = bool(asked.override)
                result.approved_by = details.get("approved_by")
                steps.finished(ctx, env, result, details)
                written = record(result.result, _record_of(action, result, outcome))
                recorded = True
            except BaseException as exc:
                # Whatever ended the run, a bug included, its record is written before
                # the lock is released: nobody may find the environment unlocked and
                # its last run unexplained.
                record_failure(exc)
                raise
    except LockHeld:
        raise  # someone else is working on the environment: nothing of ours to record
    except (Refused, StageFailed, RepositoryError, KeyboardInterrupt) as exc:
        record_failure(exc)  # before the lock (credentials, account); no-op if already recorded
        raise
    result.record = written["key"]
    result.seconds = round(time.monotonic() - started, 3)
    return result


def _definition_folder(env: Environment, asked: StageRequest) -> str:
    """Where the definition comes from: the environment's folder, a candidate version's
    own folder (plan VERSION), or the folder a blue-green router is run from."""
    return asked.candidate or (asked.definition[0] if asked.definition else env.name)


def _holds_nothing(ctx: StageContext, env: Environment, asked: StageRequest, folder: str) -> str:
    """Why there is nothing to run: ``folder`` holds no version."""
    where = ctx.repository.location()
    if asked.candidate:
        return f"version {asked.candidate} is not published in {where}: run 'envpipe publish' first"
    if asked.definition:
        return f"{folder} holds no version in {where}: {env.name} is run from it"
    return (f"environment {env.name!r} holds no version in {where}: promote "
            f"one first ('envpipe promote VERSION --to {env.name}')")


def _details(asked: StageRequest, tool: str, options: Mapping[str, Any], held_by: List[Hold]) -> Dict[str, Any]:
    """What every record of this run holds, known before the lock is taken."""
    details: Dict[str, Any] = {"tool": tool}
    if asked.candidate:
        details["candidate"] = True
    if asked.definition:
        details["definition"] = f"{asked.definition[0]}/{asked.definition[1]}"
    if options.get("tool_args"):
        details["tool_args"] = list(options["tool_args"])  # a targeted or forced-replace run, on record
    if asked.override:
        details.update(forced=True, reason=asked.override, **override_details(held_by))
    return details


def _save_plan(ctx: StageContext, path: Path, environment: str, manifest: Manifest,
               outcome: RunOutcome) -> Dict[str, str]:
    """Write the plan the tool just made to ``path`` (see saved_plan); what the record keeps of it."""
    build = ctx.ci.build_url or (f"{ctx.ci.server} build {ctx.ci.build}" if ctx.ci.build else None)
    plan = saved_plan.SavedPlan(project=ctx.config.project, environment=environment, version=manifest.version,
                                digest=manifest.digest, tool=ctx.config.tool, changed=outcome.changed,
                                tool_plan=outcome.details.get("tool_plan"),
                                created=utc_now().strftime("%Y-%m-%dT%H:%M:%SZ"), build=build)
    if ctx.config.tool == "cloudformation" and plan.tool_plan is None:
        raise UsageError(f"{environment}: this plan cannot be saved ({outcome.summary}); apply without --plan")
    plan_file = outcome.details.get("plan_file")  # Terraform's binary plan
    digest = saved_plan.write(path, plan, Path(plan_file) if plan_file else None)
    log.info("%s: plan of version %s saved to %s (%s)", environment, manifest.version, path, digest)
    return {"file": path.name, "sha256": digest}


def _record_of(action: str, result: StageResult, outcome: RunOutcome) -> Dict[str, Any]:
    """What a finished run's record holds beyond the stage's common details."""
    extra: Dict[str, Any] = {
        "changed": result.changed,
        "changes": {"added": result.added, "changed": result.changed_count, "destroyed": result.destroyed},
        "summary": result.summary,
        "fetch_seconds": result.fetch_seconds,
    }
    if action == "apply":
        extra["outputs"] = result.outputs
        extra["sensitive_outputs"] = sorted(n for n, o in outcome.outputs.items() if o.sensitive)
    if action == "plan":
        extra.update(last_applied_version=result.last_applied_version, causes=result.causes, drift=result.drift)
    if result.emptied is not None:
        extra["emptied"] = result.emptied
    return extra


def _failure(exc: BaseException, environment: str) -> Tuple[str, Dict[str, Any]]:
    """The result and details recorded for a run that ended with ``exc``."""
    if isinstance(exc, KeyboardInterrupt):
        # Stopped mid-run (Ctrl-C, or SIGTERM from an aborted CI build). The tool was
        # told to stop and waited for (envpipe_agent.children); say so on the record,
        # so nobody mistakes the environment's state for a finished run.
        how = "SIGTERM" if isinstance(exc, Terminated) else "SIGINT"
        return "interrupted", {
            "error": f"interrupted ({how}); the tool may have left changes half-done: "
                     f"run 'envpipe plan {environment}' to see what is left, then apply again",
            "signal": how,
            "tool_stopped": getattr(exc, "child_stopped", None),
        }
    if isinstance(exc, Refused):
        return "refused", {"error": str(exc)}
    if isinstance(exc, EnvpipeError):
        return "failed", {"error": str(exc)}
    return "failed", {"error": f"internal error (a bug in envpipe): {type(exc).__name__}: {exc}", "internal": True}


def _finish(ctx: StageContext, action: str, environment: str, version: str, tool: str, outcome: RunOutcome,
            redactor: Redactor, record_redactor: Redactor) -> StageResult:
    """The stage's result from the tool's outcome; for plan, also a promoted-but-unapplied version."""
    result = StageResult(action=action, environment=environment, version=version, tool=tool, result="done",
                         changed=outcome.changed, added=outcome.added, changed_count=outcome.changed_count,
                         destroyed=outcome.destroyed, summary=redactor(outcome.summary))
    if action == "apply":
        # Outputs are data (the test stage's ENVPIPE_OUTPUT_*): masked for secrets,
        # never for TF_VAR_* values; printing masks those on the way out.
        result.outputs = redact_data(outcome.recorded_outputs(), record_redactor)
    if action == "plan":
        result.causes = list(outcome.causes) or (["changes"] if outcome.changed else [])
        result.drift = redact_data(outcome.drift, redactor) if outcome.drift is not None else None
        applied = last_applied(ctx.repository, environment)
        result.last_applied_version = applied.get("version") if applied else None
        if outcome.changed and not outcome.causes and result.last_applied_version == version:
            # The tool does not say why (Terraform): changes between the version last
            # applied and the real infrastructure are drift (status shows it until an apply).
            result.causes = ["drift"]
        if result.last_applied_version != version and not result.changed:
            # The resources match, but the promoted version was never applied here:
            # applying it is still pending (SPEC §4: "a newer promoted version").
            result.changed = True
            result.causes.append("unapplied version")
            pending = f"version {version} is promoted but {result.last_applied_version or 'nothing'} was last applied"
            # One sentence: Terraform's "No changes." and CloudFormation's "stack X: no changes" alike.
            head = result.summary.strip().rstrip(".")
            result.summary = f"{head}; {pending}" if head else pending
        result.result = "changes" if result.changed else "no-changes"
    return result


def _tool_args(ctx: StageContext, args: Sequence[str]) -> Dict[str, Any]:
    """The options carrying Terraform arguments from after '--' (allowlisted), if any."""
    if not args:
        return {}
    if ctx.config.tool != "terraform":
        raise UsageError(f"arguments after '--' ({' '.join(args)}) are Terraform's; {ctx.config.tool} takes none")
    return {"tool_args": plan_arguments(args)}


def apply(ctx: StageContext, environment: str, keep_workdir: bool = False, replace_failed: bool = False,
          runner: Optional[ToolRunner] = None, version: Optional[str] = None,
          approved_by: Optional[str] = None, force: bool = False, reason: Optional[str] = None,
          now: Optional[dt.datetime] = None, plan_file: Optional[Path] = None,
          tool_args: Sequence[str] = ()) -> StageResult:
    """Fetch, verify and apply ``environment``'s definition; record its outputs.

    With ``version``, refuse (exit 3) unless the environment holds that version: a
    pipeline applies what its own build promoted, never what another build did since.
    An ``approval: manual`` environment needs an approver (``approved_by`` or
    ENVPIPE_APPROVER), recorded. A freeze, an unfinished soak or a closed window
    refuses it unless ``force`` with a ``reason``, recorded as an override.
    ``tool_args``: Terraform's ``-target=`` / ``-replace=`` (nothing else), recorded.
    """
    _need_reason(force, reason)
    refuse_bluegreen_target(ctx.environment(environment), "apply")
    if plan_file is not None and tool_args:
        raise UsageError("a saved plan is applied as it was made: give -target/-replace to 'envpipe plan ENV --out "
                         "FILE -- ...' instead")
    return _run_stage(ctx, StageRequest(
        "apply", environment, keep_workdir, {"replace_failed": replace_failed, **_tool_args(ctx, tool_args)},
        runner, override=reason.strip() if force and reason else None, expected=version,
        approved_by=approved_by, now=now,
        steps=_AppliesSavedPlan(plan_file) if plan_file is not None else ActionSteps()))


def plan(ctx: StageContext, environment: str, keep_workdir: bool = False,
         runner: Optional[ToolRunner] = None, version: Optional[str] = None,
         out: Optional[Path] = None, tool_args: Sequence[str] = ()) -> StageResult:
    """What apply would change in ``environment`` (``changed`` says whether anything would).

    With ``version``, plan that published version against the environment instead of
    the version its folder holds: what promoting and applying it would change. With
    ``out``, save the plan there for ``apply(..., plan_file=out)``.
    """
    env = ctx.environment(environment)
    if env.on_path and env.bluegreen is not None:
        # Nothing runs under a blue-green environment's own name: what a release
        # would change is the instance it goes into.
        live = read_live(ctx.repository, env.name)
        environment = live.instance(live.idle_color)
        log.info("%s is released blue-green: planning its idle instance, %s", env.name, environment)
    return _run_stage(ctx, StageRequest("plan", environment, keep_workdir, _tool_args(ctx, tool_args), runner,
                                        candidate=version, steps=_SavesPlan(out) if out is not None else ActionSteps()))


def _need_reason(force: bool, reason: Optional[str]) -> None:
    if force and not (reason and reason.strip()):
        raise UsageError("--force needs --reason TEXT saying why the guard is overridden")


def destroy(ctx: StageContext, environment: str, keep_workdir: bool = False,
            runner: Optional[ToolRunner] = None, force: bool = False, reason: Optional[str] = None,
            approved_by: Optional[str] = None, now: Optional[dt.datetime] = None) -> StageResult:
    """Destroy ``environment``'s infrastructure, then empty its folder.

    An ``approval: manual`` environment (production) is destroyed only with an approver
    (``approved_by`` or ENVPIPE_APPROVER), recorded, as for promote and apply: nobody
    takes it down by a slip. A frozen one is destroyed only with ``force``; ``force``
    with a ``reason`` is recorded as an override.
    """
    _need_reason(force, reason)
    env = ctx.environment(environment)
    bluegreen = env.bluegreen if env.on_path else (ctx.config.environment(env.like).bluegreen if env.like else None)
    if bluegreen is not None:
        # Its infrastructure is two instances and a router, never a stack of its own name.
        owner = env.name if env.on_path else env.like
        raise UsageError(f"{owner} is released blue-green: 'envpipe bluegreen {owner} --finish' destroys the old "
                         f"instance; destroying {owner}'s live instance and router is not something envpipe "
                         "does yet; nothing was done")
    if not env.on_path:
        raise UsageError(f"{env.name} is an on-demand environment: 'envpipe env destroy {env.name}' destroys it "
                         "and removes its registration; nothing was done")
    return _run_stage(ctx, StageRequest("destroy", environment, keep_workdir, runner=runner,
                                        override=reason.strip() if force and reason else None,
                                        approved_by=approved_by, now=now, steps=_EmptiesFolder()))


def destroy_instance(ctx: StageContext, name: str, lease: Lease, keep_workdir: bool = False,
                     runner: Optional[ToolRunner] = None) -> StageResult:
    """Destroy the infrastructure of the instance ``name`` (off the path) and empty its
    folder, recorded as any destroy. The caller holds the instance's lock (``lease``),
    so that it can remove what is left (state, registration) before anyone gets in."""
    return _run_stage(ctx, StageRequest("destroy", name, keep_workdir, runner=runner, held=lease,
                                        steps=_EmptiesFolder()))
