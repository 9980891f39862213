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
from envpipe_agent.context import StageContext
from envpipe_agent.errors import (EnvpipeError, LockHeld, NotFound, Refused, RepositoryError, StageFailed,
                                  Terminated, UsageError)
from envpipe_agent.instances import refuse_bluegreen_target
from envpipe_agent.live import read_live
from envpipe_agent.locking import Lease, environment_lock
from envpipe_agent.manifest import MANIFEST_KEY, Manifest, check_holds, read_manifest
from envpipe_agent.parallel import background
from envpipe_agent.policy import enforce_policy, override_details
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


def _run_stage(ctx: StageContext, action: str, environment: str, keep_workdir: bool = False,
               options: Optional[Mapping[str, Any]] = None, runner: Optional[ToolRunner] = None,
               candidate: Optional[str] = None, override: Optional[str] = None,
               expected: Optional[str] = None, held: Optional[Lease] = None,
               approved_by: Optional[str] = None, now: Optional[dt.datetime] = None,
               save_to: Optional[Path] = None, saved: Optional[Path] = None,
               definition: Optional[Tuple[str, str]] = None,
               variables: Optional[Mapping[str, str]] = None) -> StageResult:
    """Run ``action`` on ``environment``; ``override``, the reason given with --force,
    overrides the promotion policy (SPEC §10) and is recorded with what it overrode.

    ``definition`` (folder, subfolder): run the stack in that subfolder of another
    environment's folder (a blue-green router, taken from the live instance's
    version), with envpipe's extra ``variables`` (RunRequest.variables)."""
    started = time.monotonic()
    env = ctx.environment(environment)
    tool = ctx.config.tool
    runner = runner or get_runner(tool)
    options = dict(options or {})
    approved: Optional[saved_plan.SavedPlan] = None
    if saved is not None:
        # Read and checked before anything is locked or run: a plan for another
        # environment, project or tool is refused before its content is looked at.
        approved, options["saved_plan"] = saved_plan.read(saved)
        saved_plan.check(approved, saved, ctx.config.project, env.name, tool, options["saved_plan"])
        options["saved_plan_details"] = approved.tool_plan
        options["plan_sha256"] = saved_plan.sha256(saved)
    options["save_plan"] = save_to is not None
    if save_to is not None:
        saved_plan.prepare(save_to)
    # The definition comes from the environment's folder, or for a plan of a
    # candidate version (what an approver looks at before promoting) from that
    # version's own folder, verified against its manifest all the same.
    folder = candidate or (definition[0] if definition else env.name)
    with background() as submit:
        # The credentials (an assumed role, the account check) are fetched while the
        # environment's manifest and policy are read; their errors still come in this order.
        credentials_read = submit(ctx.credentials, env)
        promoted = read_manifest(ctx.repository, folder)
        if promoted is None and candidate:
            raise NotFound(f"version {candidate} is not published in {ctx.repository.location()}: "
                           "run 'envpipe publish' first")
        if promoted is None and definition:
            raise NotFound(f"{folder} holds no version in {ctx.repository.location()}: {env.name} is run from it")
        if promoted is None:
            raise NotFound(f"environment {env.name!r} holds no version in {ctx.repository.location()}: promote "
                           f"one first ('envpipe promote VERSION --to {env.name}')")
        version = promoted.version
        # The promotion policy of a path environment, after the gate; plan changes nothing,
        # and an on-demand instance has no policy.
        held_by = (enforce_policy(ctx.config, ctx.repository, env.name, version, now or utc_now(), action,
                                  force=override is not None)
                   if action in LOCKED_ACTIONS and env.on_path else [])
    if candidate:
        details_candidate = {"candidate": True}
    else:
        details_candidate = {}
    redactor = ctx.redactor
    # Records are masked with secrets and credentials only (ctx.record_redactor): a
    # TF_VAR_* value masked there would corrupt an output that merely equals it.
    records = ctx.records
    details: Dict[str, Any] = {"tool": tool, **details_candidate}
    if definition:
        details["definition"] = f"{definition[0]}/{definition[1]}"
    if (options or {}).get("tool_args"):
        details["tool_args"] = list(options["tool_args"])  # a targeted or forced-replace run, on record
    if override:
        details.update(forced=True, reason=override, **override_details(held_by))

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
        who = approver(env, action, ctx.environ, approved_by) if action in LOCKED_ACTIONS else None
        if who:
            details["approved_by"] = who
        check_holds(env.name, version, expected, action)
        # Credentials first: a wrong account is refused before anything is locked or run.
        credentials = credentials_read.result()
        redactor = redactor.with_values(credentials.secrets)
        records = records.with_secrets(credentials.secrets)
        if credentials.account:
            details["aws"] = credentials.as_record()
        lock = (environment_lock(ctx.repository, env.name, action, ctx.ci, timeout=ctx.lock_timeout)
                if action in LOCKED_ACTIONS and held is None else contextlib.nullcontext(held))
        with lock as lease:
            try:
                if override:
                    # Recorded before anything is run: the override stands whatever follows.
                    records.write(env.name, "override", version, "forced",
                                  {"reason": override, "overrides": action, "approval": env.approval,
                                   **override_details(held_by)})
                with fetched(ctx.repository, folder, keep_workdir, ctx.environ, ctx.config.project) as work:
                    version = work.manifest.version
                    check_holds(env.name, version, expected, action)  # promoted again while we waited?
                    if approved is not None and saved is not None:
                        saved_plan.check_holds(approved, saved, env.name, version, work.manifest.digest)
                        details["plan"] = {"sha256": options["plan_sha256"], "planned": approved.created,
                                           "by": approved.build}
                    details["digest"] = work.manifest.digest
                    fetch_seconds = work.verified.seconds
                    request = RunRequest(config=ctx.config, environment=env, version=version,
                                         manifest=work.manifest,
                                         workdir=work.path / definition[1] if definition else work.path,
                                         environ=credentials.environ,
                                         redactor=redactor, repository=ctx.repository_as(credentials),
                                         ci=ctx.ci, options=options, client_factory=ctx.client_factory,
                                         variables=dict(variables or {}))
                    log.info("%s: %s of version %s with %s", env.name, action, version, tool)
                    pause_point(f"{action}:fetched", ctx.environ)
                    if lease is not None:
                        lease.check()  # the fetch can be long: the lock must still be ours
                    outcome: RunOutcome = getattr(runner, action)(request)
                    pause_point(f"{action}:done", ctx.environ)
                    if save_to is not None:
                        details["saved_plan"] = _save_plan(ctx, save_to, env.name, work.manifest, outcome)
                    kept = str(work.path) if keep_workdir else None
                if lease is not None:
                    lease.check()
                emptied = _empty_folder(ctx, env.name) if action == "destroy" else None
                result = _finish(ctx, action, env.name, version, tool, outcome, redactor, records.redactor)
                result.emptied, result.workdir, result.fetch_seconds = emptied, kept, round(fetch_seconds, 3)
                result.forced = bool(override)
                result.approved_by = details.get("approved_by")
                if save_to is not None:
                    result.plan_file, result.plan_sha256 = str(save_to), details["saved_plan"]["sha256"]
                if saved is not None:
                    result.plan_file, result.plan_sha256 = str(saved), options["plan_sha256"]
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
    return _run_stage(ctx, "apply", environment, keep_workdir,
                      {"replace_failed": replace_failed, **_tool_args(ctx, tool_args)}, runner,
                      override=reason.strip() if force and reason else None, expected=version,
                      approved_by=approved_by, now=now, saved=plan_file)


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
    return _run_stage(ctx, "plan", environment, keep_workdir, _tool_args(ctx, tool_args), runner, candidate=version,
                      save_to=out)


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
    return _run_stage(ctx, "destroy", environment, keep_workdir, {}, runner,
                      override=reason.strip() if force and reason else None, approved_by=approved_by, now=now)


def destroy_instance(ctx: StageContext, name: str, lease: Lease, keep_workdir: bool = False,
                     runner: Optional[ToolRunner] = None) -> StageResult:
    """Destroy the infrastructure of the instance ``name`` (off the path) and empty its
    folder, recorded as any destroy. The caller holds the instance's lock (``lease``),
    so that it can remove what is left (state, registration) before anyone gets in."""
    return _run_stage(ctx, "destroy", name, keep_workdir, {}, runner, held=lease)
