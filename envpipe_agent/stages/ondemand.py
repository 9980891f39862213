"""On-demand environments: create, list, extend, destroy and reap (SPEC §9).

An on-demand environment is an instance of the stack (``envpipe_agent.instances``)
registered in the repository before anything of it exists, so that a create that
fails or is killed half-way is still listed and reaped. It is promoted and applied
like any environment, without a gate, and destroyed for real: the tool's destroy with
the instance's own state and vars, then its folder, the state envpipe keeps for it,
its lock and its registration, in that order and under its lock. Records stay.

This module orchestrates other stages (promote, apply, test), as ``run`` does.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Dict, List, Optional, Tuple

from envpipe_agent import registrations
from envpipe_agent.context import StageContext
from envpipe_agent.errors import EnvpipeError, LockHeld, NotFound, Refused, UsageError
from envpipe_agent.instances import check_instance_name, on_demand_instance, path_owner
from envpipe_agent.locking import environment_lock
from envpipe_agent.manifest import read_manifest
from envpipe_agent.parallel import parallel_map
from envpipe_agent.records import iso, utc_now
from envpipe_agent.registrations import (InstanceInfo, Registration, delete_registration, list_registrations,
                                         new_registration, read_registration, write_registration)
from envpipe_agent.repository import AlreadyExists
from envpipe_agent.stages.apply import StageResult, apply, destroy_instance
from envpipe_agent.stages.promote import PromoteResult, load_version, promote
from envpipe_agent.stages.testing import TestResult, run_tests
from envpipe_agent.timespec import TimeSpecError, format_duration, parse_duration
from envpipe_agent.tools.base import ToolRunner
from envpipe_agent.tools.terraform import STATE_PREFIX

log = logging.getLogger(__name__)

# Instances reaped at once: each runs its own tool process, and agents are small.
REAP_THREADS = 4
# What envpipe keeps in the repository for an instance besides its folder: Terraform
# state, and CloudFormation templates too large to send inline (the CloudFormation
# runner's TEMPLATE_PREFIX, not imported here: that module loads boto3).
INSTANCE_DATA_PREFIXES = (STATE_PREFIX, ".envpipe/templates/")


@dataclass
class CreateResult:
    name: str
    version: str
    expires: str
    registered: bool  # False when NAME existed and was updated
    promoted: PromoteResult
    applied: StageResult
    tested: Optional[TestResult] = None
    seconds: float = 0.0

    def as_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "version": self.version, "expires": self.expires, "registered": self.registered,
                "promoted": self.promoted.as_dict(), "applied": self.applied.as_dict(),
                "tested": self.tested.as_dict() if self.tested else None, "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class DestroyResult:
    name: str
    kind: str
    version: Optional[str]
    destroyed: int  # resources the tool destroyed
    removed: int  # objects removed from the repository besides the registration
    outcome: str  # destroyed | kept (extended meanwhile)
    seconds: float

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ReapOutcome:
    name: str
    kind: str
    owner: str
    expires: str
    outcome: str  # destroyed | would destroy | kept | locked | failed
    error: Optional[str] = None

    @property
    def failed(self) -> bool:
        return self.outcome == "failed"

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def owner(ctx: StageContext) -> str:
    """Whose instance it is: the CI user (SPEC §5), else the local user."""
    return ctx.ci.user or "unknown"


def parse_ttl(ctx: StageContext, text: Optional[str]) -> dt.timedelta:
    """``--ttl`` (default ``on_demand.ttl``); exit 2 beyond ``on_demand.max_ttl``."""
    settings = ctx.config.on_demand_settings
    if text is None:
        return settings.ttl
    try:
        ttl = parse_duration(text)
    except TimeSpecError as exc:
        raise UsageError(f"--ttl: {exc}") from None
    if ttl > settings.max_ttl:
        raise UsageError(f"--ttl {text} is longer than on_demand.max_ttl ({format_duration(settings.max_ttl)}) "
                         f"in {ctx.config.path.name}: give a shorter --ttl ('envpipe env extend' lengthens it "
                         "again later)")
    return ttl


def _unknown(name: str) -> NotFound:
    return NotFound(f"no on-demand environment or sandbox named {name!r}: 'envpipe env list' shows them")


def register(ctx: StageContext, name: str, kind: str, ttl: Optional[dt.timedelta],
             now: Optional[dt.datetime] = None) -> Tuple[Registration, bool]:
    """Register ``name`` (or find it registered): (registration, whether it is new).

    An existing one keeps its expiry unless ``ttl`` is given. A new one must fit under
    ``on_demand.max``, sandboxes included (exit 3 naming the oldest and its owner).
    """
    check_instance_name(ctx.config, name)
    now = now or utc_now()
    settings = ctx.config.on_demand_settings
    for _ in range(3):  # a registration deleted or written by another agent meanwhile
        existing = read_registration(ctx.repository, name)
        if existing is not None:
            if existing.kind != kind:
                other = {"env": "an on-demand environment", "sandbox": "a sandbox"}.get(existing.kind, existing.kind)
                raise UsageError(f"{name!r} is {other} of {existing.owner}: choose another name")
            if ttl is not None:
                existing = replace(existing, expires=iso(now + ttl))
                write_registration(ctx.repository, existing)
            return existing, False
        live = list_registrations(ctx.repository)
        if len(live) >= settings.max:
            oldest = min(live, key=lambda r: (r.created, r.name))
            raise Refused(
                f"{len(live)} on-demand environments and sandboxes exist, on_demand.max is {settings.max}: the "
                f"oldest is {oldest.name} of {oldest.owner} (created {oldest.created}, expires {oldest.expires}); "
                f"destroy one ('envpipe env destroy {oldest.name}') or raise on_demand.max"
            )
        # like's role and account guard first: credentials for another account are
        # refused (exit 3) before anything is registered.
        ctx.credentials(on_demand_instance(ctx.config, name, settings.like))
        registration = new_registration(name, kind, owner(ctx), settings.like, now, ttl or settings.ttl)
        try:
            write_registration(ctx.repository, registration, new=True)
        except AlreadyExists:
            continue
        ctx.records.write(name, "create", None, "registered",
                          {"kind": kind, "owner": registration.owner, "expires": registration.expires,
                           "like": registration.like})
        log.info("%s: registered (%s of %s, like %s, expires %s)", name, kind, registration.owner,
                 registration.like, registration.expires)
        return registration, True
    raise Refused(f"the registration of {name!r} keeps changing under us: is another agent creating or "
                  "destroying it? Check 'envpipe env list', then try again")


def create(ctx: StageContext, name: str, version: Optional[str] = None, source: Optional[str] = None,
           ttl: Optional[str] = None, test: bool = False, runner: Optional[ToolRunner] = None) -> CreateResult:
    """Register ``name``, promote ``version`` (or the version ``source`` holds) into it
    without a gate, apply it, and with ``test`` run the tests against it."""
    started = time.monotonic()
    check_instance_name(ctx.config, name)
    lifetime = parse_ttl(ctx, ttl) if ttl is not None else None
    if version and source:
        raise UsageError("give either --version V or --from ENV, not both")
    if source:
        held = read_manifest(ctx.repository, ctx.environment(source).name)
        if held is None:
            raise NotFound(f"{source} holds no version to create {name} from: promote one into it first, "
                           "or give --version V")
        version = held.version
    version = ctx.resolve_version(version, f"give the version: envpipe env create {name} --version V (or --from ENV)")
    load_version(ctx, version)  # published? Checked before anything is registered
    registration, registered = register(ctx, name, "env", lifetime)
    promoted = promote(ctx, name, version)
    applied = apply(ctx, name, runner=runner)
    tested = run_tests(ctx, name) if test else None
    return CreateResult(name=name, version=version, expires=registration.expires, registered=registered,
                        promoted=promoted, applied=applied, tested=tested, seconds=time.monotonic() - started)


def list_instances(ctx: StageContext, now: Optional[dt.datetime] = None) -> List[InstanceInfo]:
    """Every on-demand environment and sandbox with the version it holds, by name."""
    return registrations.list_instances(ctx.repository, now)


def extend(ctx: StageContext, name: str, ttl: str, now: Optional[dt.datetime] = None) -> Registration:
    """``name`` expires ``ttl`` from now (under its lock, so a reap cannot cross it)."""
    lifetime = parse_ttl(ctx, ttl)
    if read_registration(ctx.repository, name) is None:
        raise _unknown(name)
    with environment_lock(ctx.repository, name, "extend", ctx.ci, timeout=ctx.lock_timeout):
        registration = read_registration(ctx.repository, name)
        if registration is None:  # destroyed while we waited for the lock
            raise _unknown(name)
        registration = replace(registration, expires=iso((now or utc_now()) + lifetime))
        write_registration(ctx.repository, registration)
        ctx.records.write(name, "extend", None, "done", {"expires": registration.expires})
    log.info("%s: expires %s", name, registration.expires)
    return registration


def _delete_prefix(ctx: StageContext, prefix: str) -> int:
    keys = [info.key for info in ctx.repository.list(prefix)]
    ctx.repository.delete(keys)
    return len(keys)


def forget_instance_data(ctx: StageContext, name: str) -> int:
    """Delete what envpipe keeps for the instance ``name`` besides its folder and
    records (its state, its large templates), once its infrastructure is destroyed."""
    return sum(_delete_prefix(ctx, f"{prefix}{name}/") for prefix in INSTANCE_DATA_PREFIXES)


def destroy(ctx: StageContext, name: str, keep_workdir: bool = False, runner: Optional[ToolRunner] = None,
            expired_by: Optional[dt.datetime] = None) -> DestroyResult:
    """Destroy the on-demand environment or sandbox ``name`` and everything envpipe
    keeps for it except its records. With ``expired_by`` (reap), one extended since it
    was found expired is kept."""
    started = time.monotonic()
    if path_owner(ctx.config, name) == name:
        raise Refused(f"{name} is an environment of the path, not an on-demand one: 'envpipe destroy {name}' "
                      "is for those; nothing was done")
    registration = read_registration(ctx.repository, name)
    if registration is None:
        raise _unknown(name)
    with environment_lock(ctx.repository, name, "destroy", ctx.ci, timeout=ctx.lock_timeout) as lease:
        registration = read_registration(ctx.repository, name)
        if registration is None:  # another agent destroyed it while we waited
            raise _unknown(name)
        if expired_by is not None and not registration.expired(expired_by):
            return DestroyResult(name, registration.kind, None, 0, 0, "kept (extended meanwhile)",
                                 time.monotonic() - started)
        manifest = read_manifest(ctx.repository, name)
        destroyed, removed, version = 0, 0, manifest.version if manifest else None
        if manifest is not None:
            # The tool's destroy, with the instance's own state and vars; a failure
            # raises here and leaves the registration, so reap tries again.
            result = destroy_instance(ctx, name, lease, keep_workdir=keep_workdir, runner=runner)
            destroyed, removed = result.destroyed, result.emptied or 0
        else:
            # Registered but never completely promoted, so never applied: only
            # files of a cut-short promote or upload may be there.
            removed = _delete_prefix(ctx, f"{name}/")
            ctx.records.write(name, "destroy", None, "done", {"note": "nothing was applied", "emptied": removed})
        lease.check()
        removed += forget_instance_data(ctx, name)
        delete_registration(ctx.repository, name)
    log.info("%s: destroyed and unregistered", name)
    return DestroyResult(name, registration.kind, version, destroyed, removed, "destroyed",
                         time.monotonic() - started)


def reap(ctx: StageContext, dry_run: bool = False, now: Optional[dt.datetime] = None,
         runner_factory: Optional[Callable[[], ToolRunner]] = None, threads: int = REAP_THREADS) -> List[ReapOutcome]:
    """Destroy every expired instance, ``threads`` at a time, each under its own lock;
    a failure is reported in its outcome and does not stop the others. Interrupted,
    reap starts no more destroys and lets those under way finish (their tools run in
    sessions of their own), so each still records, unregisters and unlocks."""
    now = now or utc_now()
    expired = [r for r in list_registrations(ctx.repository) if r.expired(now)]
    if dry_run:
        return [ReapOutcome(r.name, r.kind, r.owner, r.expires, "would destroy") for r in expired]

    def reap_one(registration: Registration) -> ReapOutcome:
        def outcome(what: str, error: Optional[str] = None) -> ReapOutcome:
            return ReapOutcome(registration.name, registration.kind, registration.owner, registration.expires,
                               what, error)
        try:
            result = destroy(ctx, registration.name, runner=runner_factory() if runner_factory else None,
                             expired_by=now)
        except LockHeld as exc:
            # Someone is working on it (a create still running, or one killed within the
            # lease): not a failure of the reap, which an hourly job would report every
            # time. The next reap tries again once the lock is free or expired.
            log.info("%s: skipped, locked: %s", registration.name, exc)
            return outcome("locked", str(exc))
        except EnvpipeError as exc:
            log.warning("%s: not reaped: %s", registration.name, exc)
            return outcome("failed", str(exc))
        except Exception as exc:  # noqa: BLE001 - one instance's bug must not keep the others alive
            log.warning("%s: not reaped: internal error %s: %s", registration.name, type(exc).__name__, exc)
            return outcome("failed", f"internal error: {type(exc).__name__}: {exc}")
        return outcome(result.outcome)

    return parallel_map(reap_one, expired, threads=threads)
