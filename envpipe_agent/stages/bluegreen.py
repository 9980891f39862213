"""bluegreen: release a version as a new instance of the whole stack (SPEC §9).

A blue-green environment of the path never runs its stack under its own name: its two
instances, ``<env>-blue`` and ``<env>-green`` (``envpipe_agent.instances``), each hold
a version with their own folder, state and stack, and a router, ``<env>-router``,
applied from the live instance's definition, sends traffic to one of them. A release,
under the environment's lock:

1. gate and policy, as for ``promote V --to ENV``;
2. V promoted into the idle instance and applied;
3. ENV's tests against the idle instance (failing: exit 1, nothing else moves);
4. the swap: the router applied with the idle instance as the live one;
5. the live object (``envpipe_agent.live``) and ``<repo>/<env>/`` say ENV holds V, and
   V's test result is recorded for ENV, so gates and status see it there;
6. the old instance destroyed, unless kept.

Each step is recorded (action ``bluegreen``), and the live object names the step under
way, so a release cut short is visible in ``status`` and the next run restarts it
(before the swap) or completes it (after). Traffic moves only with a completed router
apply. This module orchestrates other stages, as ``run`` and on-demand do.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

from envpipe_agent.approval import approver
from envpipe_agent.config import Environment
from envpipe_agent.context import StageContext
from envpipe_agent.errors import ConfigError, PolicyHold, Refused, StageFailed, UsageError
from envpipe_agent.live import Live, read_live, write_live
from envpipe_agent.locking import Lease, environment_lock
from envpipe_agent.manifest import Manifest, read_manifest
from envpipe_agent.pause_points import pause_point
from envpipe_agent.policy import gate_hold, override_details, policy_holds, refusal
from envpipe_agent.records import iso, last_applied, latest_test, recorded_outputs, utc_now
from envpipe_agent.stages.apply import StageRequest, StageResult, _failure, _run_stage, apply, destroy_instance
from envpipe_agent.stages.ondemand import forget_instance_data
from envpipe_agent.stages.promote import PromotionCheck, check_promotion, load_version, promote, sync_environment
from envpipe_agent.stages.testing import TestResult, run_tests
from envpipe_agent.tools.base import ToolRunner

log = logging.getLogger(__name__)


@dataclass
class BlueGreenResult:
    environment: str
    action: str  # release | rollback | finish
    version: Optional[str]
    live: Optional[str]  # the live color afterwards
    previous: Optional[str]  # the live color before (None: first release)
    swapped: bool
    old_destroyed: Optional[str] = None  # the instance destroyed, if one was
    kept: Optional[str] = None  # the old instance kept (--keep-old), for --rollback
    resumed: bool = False  # completed a release cut short after its swap
    forced: bool = False
    approved_by: Optional[str] = None
    tested: Optional[Dict[str, Any]] = None
    steps: Dict[str, float] = field(default_factory=dict)  # step -> seconds
    seconds: float = 0.0

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def bluegreen_environment(ctx: StageContext, environment: str) -> Environment:
    """The path environment ``environment``, which must be released blue-green."""
    env = ctx.config.environment(environment)
    if env.bluegreen is None:
        raise UsageError(f"{env.name} is not released blue-green: add 'bluegreen: {{router: DIR}}' to it in "
                         f"{ctx.config.path.name}, or use promote, apply and test")
    return env


def idle_instance(ctx: StageContext, environment: str) -> str:
    """The instance the next release of ``environment`` goes into."""
    live = read_live(ctx.repository, environment)
    return live.instance(live.idle_color)


def check_router(ctx: StageContext, env: Environment, manifest: Manifest) -> None:
    """The version's definition must hold the router's stack (exit 2 otherwise)."""
    assert env.bluegreen is not None
    if not env.bluegreen.holds_router(manifest.files, ctx.config.tool, _template_name(ctx)):
        wanted = env.bluegreen.router_stack(ctx.config.tool, _template_name(ctx))
        raise ConfigError(f"{ctx.config.path}: {ctx.config.where(env.name)}.bluegreen.router: version {manifest.version} has no "
                          f"{wanted}: the router's stack ({ctx.config.tool}) must be in the definition; "
                          "add it and publish a new version")


def _template_name(ctx: StageContext) -> str:
    return ctx.config.cloudformation.template


def check_release(ctx: StageContext, environment: str, version: Optional[str] = None,
                  now: Optional[dt.datetime] = None) -> PromotionCheck:
    """``bluegreen ENV V --check``: the gate and the policy, nothing changed."""
    bluegreen_environment(ctx, environment)
    return check_promotion(ctx, environment, version, now)


class _Release:
    """One run of ``bluegreen`` under the environment's lock: writes the live object
    and a record at each step, and on any failure says which step stopped."""

    def __init__(self, ctx: StageContext, env: Environment, lease: Lease, version: Optional[str],
                 runner: Optional[ToolRunner]) -> None:
        self.ctx, self.env, self.lease, self.version, self.runner = ctx, env, lease, version, runner
        self.live = read_live(ctx.repository, env.name)
        self.step = "gate"
        self.steps: Dict[str, float] = {}
        self.started = time.monotonic()
        self.details: Dict[str, Any] = {}

    def save(self, live: Live) -> None:
        self.lease.check()  # only the lock's holder moves the live object
        write_live(self.ctx.repository, live)
        self.live = live

    def begin(self, step: str, track: bool = True) -> None:
        """Start ``step``; ``track``: the live object's release names it (a release's
        steps, not a rollback's or a finish's, which are no release)."""
        self.step = step
        self.step_started = time.monotonic()
        if track and self.live.release is not None:
            self.save(self.live.with_release(step=step, state="running"))
        pause_point(f"bluegreen:{step}", self.ctx.environ)

    def done(self, step: str, **extra: Any) -> None:
        seconds = round(time.monotonic() - self.step_started, 3)
        self.steps[step] = seconds
        self.record("done", step=step, seconds=seconds, **extra)

    def record(self, result: str, **extra: Any) -> None:
        self.ctx.records.write(self.env.name, "bluegreen", self.version, result, {**self.details, **extra})

    def failed(self, exc: BaseException) -> None:
        """Record the step that stopped and how; the live object keeps where traffic is."""
        result, details = _failure(exc, self.env.name)
        if result == "interrupted":
            details["error"] = (f"interrupted ({details['signal']}) at step {self.step}; traffic stays on "
                                f"{self.live.instance() or 'no instance'}: run 'envpipe bluegreen {self.env.name} "
                                f"{self.version or ''}' again to complete the release".replace("  ", " "))
        try:
            if self.live.release is not None and self.live.release.get("version") == self.version:
                self.save(self.live.with_release(state=result, error=details.get("error")))
            self.record(result, step=self.step, traffic=self.live.instance(), **details)
        except Exception as problem:  # noqa: BLE001 - the error that stopped the run is what matters
            log.warning("%s: could not record the stopped release: %s", self.env.name, problem)


@contextlib.contextmanager
def _locked(ctx: StageContext, env: Environment, approved_by: Optional[str], runner: Optional[ToolRunner],
            version: Callable[[Live], Optional[str]]) -> Iterator[_Release]:
    """A release, rollback or finish of ``env``: its approver, under its lock, with
    whatever stops it recorded (the step, how, where traffic is)."""
    who = approver(env, "bluegreen", ctx.environ, approved_by)
    with environment_lock(ctx.repository, env.name, "bluegreen", ctx.ci, timeout=ctx.lock_timeout) as lease:
        release = _Release(ctx, env, lease, None, runner)
        release.version = version(release.live)
        if who:
            release.details["approved_by"] = who
        try:
            yield release
        except BaseException as exc:
            release.failed(exc)
            raise


def bluegreen(ctx: StageContext, environment: str, version: Optional[str] = None, keep_old: bool = False,
              force: bool = False, reason: Optional[str] = None, approved_by: Optional[str] = None,
              junit: Optional[Path] = None, runner: Optional[ToolRunner] = None,
              now: Optional[dt.datetime] = None, plan_file: Optional[Path] = None) -> BlueGreenResult:
    """Release ``version`` (default: this build's) into the blue-green ``environment``.

    ``plan_file``: the plan 'plan ENV --version V --out FILE' saved of the idle instance
    (what the approvers saw), applied exactly; refused (exit 3) if it no longer fits."""
    env = bluegreen_environment(ctx, environment)
    _need_reason(force, reason)
    version = ctx.resolve_version(version, f"give the version: envpipe bluegreen {env.name} VERSION")
    manifest = load_version(ctx, version)
    check_router(ctx, env, manifest)
    with _locked(ctx, env, approved_by, runner, lambda live: version) as release:
        return _release(release, manifest, keep_old, force, reason, junit, now or utc_now(), plan_file)


def _release(release: _Release, manifest: Manifest, keep_old: bool, force: bool, reason: Optional[str],
             junit: Optional[Path], now: dt.datetime, plan_file: Optional[Path] = None) -> BlueGreenResult:
    ctx, env, version = release.ctx, release.env, manifest.version
    live = release.live
    pending = live.release if live.release and live.release.get("version") == version else None
    if live.version == version and live.color is not None:
        # V is live already: a release cut short after its swap is completed; one
        # that finished has nothing left to do (a retried CD stage is safe).
        held = read_manifest(ctx.repository, env.name)
        if pending is None and held is not None and held.version == version:
            log.info("%s: version %s is already live on %s: nothing to do", env.name, version, live.instance())
            return BlueGreenResult(env.name, "release", version, live.color, live.color, False,
                                   kept=live.instance(live.old["color"]) if live.old else None, steps={})
        log.info("%s: version %s is live on %s; completing its release", env.name, version, live.instance())
        release.live = live.with_release(version=version, color=live.color, step="record", state="running",
                                         started=iso(utc_now()), **ctx.ci.known())
        return _after_swap(release, manifest, live.old, keep_old, resumed=True)

    release.begin("gate")
    holds = _holds(ctx, env.name, version, now)
    if holds and not force:
        raise PolicyHold(refusal("bluegreen", env.name, version, holds))
    if holds:
        release.details.update(forced=True, reason=reason.strip(), **override_details(holds))
        ctx.records.write(env.name, "override", version, "forced",
                          {"reason": reason.strip(), "overrides": "bluegreen", **override_details(holds)})
    idle = live.idle_color
    idle_name = live.instance(idle)
    release.details.update(instance=idle_name, live_before=live.instance())
    release.save(live.with_release(version=version, color=idle, step="gate", state="running",
                                   started=iso(utc_now()), error=None, **ctx.ci.known()))
    release.done("gate")

    release.begin("deploy")
    promote(ctx, idle_name, version)
    applied = apply(ctx, idle_name, runner=release.runner, plan_file=plan_file)
    release.done("deploy", changed=applied.changed, summary=applied.summary)

    release.begin("test")
    tested = run_tests(ctx, idle_name, junit=junit)
    if not tested.passed:
        raise StageFailed(f"version {version} failed its tests in {idle_name} ({tested.counts()}): traffic stays "
                          f"on {live.instance() or 'no instance'}, {idle_name} is kept for inspection; fix and "
                          "publish a new version")
    release.done("test", tests=tested.tests, failures=tested.failures)

    release.begin("swap")
    old = {"color": live.color, "version": live.version} if live.color else None
    _swap(ctx, env, idle, release.runner)
    release.live = replace(release.live, color=idle, version=version, since=iso(utc_now()), old=old)
    release.save(release.live.with_release(step="record"))
    release.done("swap", live=idle_name)
    return _after_swap(release, manifest, old, keep_old, tested=tested)


def _holds(ctx: StageContext, environment: str, version: str, now: dt.datetime) -> List[Any]:
    gate = gate_hold(ctx.config, ctx.repository, environment, version)
    return ([gate] if gate else []) + policy_holds(ctx.config, ctx.repository, environment, version, now,
                                                   "bluegreen")


def _after_swap(release: _Release, manifest: Manifest, old: Optional[Dict[str, Any]], keep_old: bool,
                resumed: bool = False, tested: Optional[TestResult] = None) -> BlueGreenResult:
    """Steps 5 and 6, once traffic is on the new instance."""
    ctx, env, version, live = release.ctx, release.env, manifest.version, release.live
    release.begin("record")
    _hold_version(ctx, env, release.lease, live, manifest, release.details)
    release.done("record")
    destroyed = None
    if old is not None and not keep_old:
        release.begin("destroy-old")
        destroyed = live.instance(old["color"])
        _destroy(ctx, destroyed, release.runner)
        release.live = replace(release.live, old=None)
        release.done("destroy-old", destroyed=destroyed)
    release.save(replace(release.live, release=None))
    kept = live.instance(old["color"]) if old is not None and keep_old else None
    release.record("done", step="released", live=live.instance(), kept=kept, steps=release.steps)
    log.info("%s: version %s is live on %s%s", env.name, version, live.instance(),
             f"; {kept} kept ('envpipe bluegreen {env.name} --rollback' swaps back)" if kept else "")
    return BlueGreenResult(env.name, "release", version, live.color, old["color"] if old else None, not resumed,
                           old_destroyed=destroyed, kept=kept, resumed=resumed, forced=bool(release.details.get(
                               "forced")), approved_by=release.details.get("approved_by"),
                           tested=tested.as_dict() if tested else None, steps=release.steps,
                           seconds=round(time.monotonic() - release.started, 3))


def _swap(ctx: StageContext, env: Environment, color: str, runner: Optional[ToolRunner]) -> StageResult:
    """Apply the router, from the ``color`` instance's definition, sending traffic to it.
    A failure raises before the live object changes: traffic is reported not swapped."""
    assert env.bluegreen is not None
    instance = f"{env.name}-{color}"
    variables = {"live_color": color, "live_environment": instance,
                 "live_outputs": json.dumps(recorded_outputs(ctx.repository, instance), sort_keys=True)}
    try:
        return _run_stage(ctx, StageRequest("apply", f"{env.name}-router", runner=runner,
                                            definition=(instance, env.bluegreen.router), variables=variables))
    except StageFailed as exc:
        raise exc.reworded(f"the router's apply failed, so traffic was not swapped to {instance} (nothing was "
                           f"destroyed): {exc}") from None


def _hold_version(ctx: StageContext, env: Environment, lease: Lease, live: Live, manifest: Manifest,
                  details: Dict[str, Any]) -> None:
    """Step 5: ``<repo>/<env>/`` holds the live version, its test result is ENV's, and
    ENV's apply record carries the live instance's outputs (``envpipe test ENV`` and
    the next environment's tests read them)."""
    instance = live.instance()
    promoted = {"at": iso(utc_now()), **ctx.ci.known(), "bluegreen": instance,
                **{key: details[key] for key in ("approved_by", "forced", "reason", "overridden") if key in details}}
    outcome = sync_environment(ctx, env.name, manifest, promoted, lease)
    if not outcome["noop"]:
        ctx.records.write(env.name, "promote", manifest.version, "done",
                          {"digest": manifest.digest, "bluegreen": instance, **outcome,
                           **{k: v for k, v in promoted.items() if k in ("approved_by", "forced", "reason")}})
    applied = _instance_apply(ctx, instance, manifest.version)
    ctx.records.write(env.name, "apply", manifest.version, "done", {
        "bluegreen": instance, "digest": manifest.digest, "outputs": applied.get("outputs") or {},
        "sensitive_outputs": applied.get("sensitive_outputs") or [], "changed": True,
        "summary": f"traffic on {instance}"})
    tested = latest_test(ctx.repository, instance, manifest.version)
    if tested is not None and tested.get("result") == "passed" and \
            (latest_test(ctx.repository, env.name, manifest.version) or {}).get("result") != "passed":
        ctx.records.write(env.name, "test", manifest.version, "passed", {
            **{key: tested[key] for key in ("tests", "failures", "errors", "skipped", "suites", "digest", "seconds")
               if key in tested}, "bluegreen": instance})


def _instance_apply(ctx: StageContext, instance: str, version: str) -> Dict[str, Any]:
    applied = last_applied(ctx.repository, instance)
    if applied is None or applied.get("version") != version:
        raise Refused(f"{instance} was not applied with version {version}: run 'envpipe bluegreen "
                      f"{instance.rsplit('-', 1)[0]} {version}' again")
    return applied


def _destroy(ctx: StageContext, name: str, runner: Optional[ToolRunner]) -> None:
    """Destroy the instance ``name`` and everything envpipe keeps for it but its records."""
    with environment_lock(ctx.repository, name, "destroy", ctx.ci, timeout=ctx.lock_timeout) as lease:
        if read_manifest(ctx.repository, name) is not None:
            destroy_instance(ctx, name, lease, runner=runner)
        lease.check()
        forget_instance_data(ctx, name)


def rollback(ctx: StageContext, environment: str, approved_by: Optional[str] = None,
             runner: Optional[ToolRunner] = None) -> BlueGreenResult:
    """Swap traffic back to the old instance while it exists (exit 3 when there is none)."""
    env = bluegreen_environment(ctx, environment)
    with _locked(ctx, env, approved_by, runner, lambda live: (live.old or {}).get("version")) as release:
        live = release.live
        old_name = live.instance(live.old["color"]) if live.old else None
        held = read_manifest(ctx.repository, old_name) if old_name else None
        if live.old is None or held is None or held.version != live.old.get("version"):
            raise Refused(f"{env.name} has no old instance to roll back to (it was destroyed, or no release kept "
                          f"one): release the version you want with 'envpipe bluegreen {env.name} VERSION'")
        manifest = load_version(ctx, held.version)
        release.details.update(rollback=True, instance=old_name, live_before=live.instance())
        release.begin("swap", track=False)
        _swap(ctx, env, live.old["color"], runner)
        release.live = replace(live, color=live.old["color"], version=held.version, since=iso(utc_now()),
                               old={"color": live.color, "version": live.version}, release=None)
        release.save(release.live)
        release.done("swap", live=old_name)
        release.begin("record", track=False)
        _hold_version(ctx, env, release.lease, release.live, manifest, release.details)
        release.record("done", step="rolled back", live=old_name, kept=live.instance())
    log.info("%s: traffic back on %s (version %s); %s kept", env.name, old_name, held.version, live.instance())
    return BlueGreenResult(env.name, "rollback", held.version, live.old["color"], live.color, True,
                           kept=live.instance(), approved_by=release.details.get("approved_by"), steps=release.steps,
                           seconds=round(time.monotonic() - release.started, 3))


def finish(ctx: StageContext, environment: str, approved_by: Optional[str] = None,
           runner: Optional[ToolRunner] = None) -> BlueGreenResult:
    """Destroy the old instance kept by ``--keep-old`` (nothing to do when there is none)."""
    env = bluegreen_environment(ctx, environment)
    with _locked(ctx, env, approved_by, runner, lambda live: live.version) as release:
        live = release.live
        if live.old is None:
            log.info("%s: no old instance to destroy", env.name)
            return BlueGreenResult(env.name, "finish", live.version, live.color, live.color, False)
        old_name = live.instance(live.old["color"])
        release.begin("destroy-old", track=False)
        _destroy(ctx, old_name, runner)
        release.save(replace(live, old=None))
        release.done("destroy-old", destroyed=old_name)
    return BlueGreenResult(env.name, "finish", live.version, live.color, live.color, False, old_destroyed=old_name,
                           approved_by=release.details.get("approved_by"), steps=release.steps,
                           seconds=round(time.monotonic() - release.started, 3))


def _need_reason(force: bool, reason: Optional[str]) -> None:
    if force and not (reason and reason.strip()):
        raise UsageError("--force needs --reason TEXT saying why the gate or policy is overridden")
