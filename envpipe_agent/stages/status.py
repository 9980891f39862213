"""status and history: which version is where, and what happened to it.

Reads only the environment manifests and the per-environment summaries, so its cost
does not grow with the number of versions or records.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Dict, List, Mapping, Optional

from envpipe_agent.context import StageContext
from envpipe_agent.live import read_live
from envpipe_agent.locking import lock_expired, read_lock
from envpipe_agent.manifest import Manifest, read_manifest
from envpipe_agent.parallel import parallel_map
from envpipe_agent.policy import read_freeze, waits_for
from envpipe_agent.records import history as environment_history
from envpipe_agent.records import read_summary, record_order, utc_now
from envpipe_agent.registrations import list_instances
from envpipe_agent.timespec import format_duration


def _lock_view(lock: Optional[Dict[str, Any]], now: dt.datetime) -> Optional[Dict[str, Any]]:
    """The lock as status shows it: its fields, plus how long it has been held and
    whether it has expired (a killed holder's; the next run breaks it)."""
    if lock is None:
        return None
    view = dict(lock)
    view["expired"] = lock_expired(lock, now)
    try:
        acquired = dt.datetime.fromisoformat(str(lock.get("acquired")).replace("Z", "+00:00"))
        view["age_seconds"] = max(0, int((now - acquired).total_seconds()))
    except (TypeError, ValueError):
        view["age_seconds"] = None
    return view


def _interrupted_promote(manifest: Optional[Manifest], lock: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The promote that has not finished in this folder (the folder may hold part of its
    version): ``running`` while a promote's lease on it is live (it may yet finish; a
    killed one's lease runs out within minutes), else it was cut short."""
    if manifest is None or not manifest.promoting:
        return None
    running = lock is not None and not lock["expired"] and lock.get("action") == "promote"
    return {**manifest.promoting, "running": running}


def _environment_status(ctx: StageContext, name: str, now: dt.datetime) -> Dict[str, Any]:
    manifest = read_manifest(ctx.repository, name)
    summary = read_summary(ctx.repository, name)
    lock = _lock_view(read_lock(ctx.repository, name), now)
    env = ctx.config.environment(name)
    promoted = dict(manifest.promoted or {}) if manifest else {}
    return {
        "environment": name,
        "approval": env.approval,
        "version": manifest.version if manifest else None,
        "digest": manifest.digest if manifest else None,
        "promoted": promoted or None,
        "forced": forced(promoted),
        "drift": drift(summary),
        "last": summary,
        "locked_by": lock,
        "frozen": read_freeze(ctx.repository, name, now),
        "policy": {"soak": format_duration(env.soak) if env.soak else None, "window": [w.text for w in env.windows]},
        "waiting": None,
        "interrupted_promote": _interrupted_promote(manifest, lock),
        "bluegreen": _bluegreen_status(ctx, name, lock) if env.bluegreen is not None else None,
    }


def _bluegreen_status(ctx: StageContext, name: str, lock: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """A blue-green environment's live color and version, its other instance (if it
    exists) with its version, and a release that has not finished: ``running`` while
    a bluegreen's lease on the environment is live, else how it stopped."""
    live = read_live(ctx.repository, name)
    idle = live.idle_color
    idle_manifest = read_manifest(ctx.repository, f"{name}-{idle}")
    release = dict(live.release) if live.release else None
    if release is not None and release.get("state") == "running":
        held = lock is not None and not lock["expired"] and lock.get("action") == "bluegreen"
        release["state"] = "running" if held else "cut short"
    return {
        "live": live.color,
        "live_instance": live.instance(),
        "version": live.version,
        "since": live.since,
        "idle": f"{name}-{idle}" if idle_manifest else None,
        "idle_version": idle_manifest.version if idle_manifest else None,
        "old": live.old,
        "release": release,
    }


def _waiting(ctx: StageContext, previous: Mapping[str, Any], entry: Mapping[str, Any],
             now: dt.datetime) -> Optional[Dict[str, Any]]:
    """The version waiting to enter ``entry``'s environment, and what it waits for: the
    one the environment before it holds, when that came in after this one's. (Nothing
    waits at the first environment: the pipeline promotes each published version there.)"""
    candidate = previous.get("version")
    if not candidate or candidate == entry.get("version"):
        return None
    before, here = (previous.get("promoted") or {}).get("at"), (entry.get("promoted") or {}).get("at")
    if before and here and str(before) < str(here):
        return None  # this one was promoted after (a version forced in here): what the one before holds is older
    holds = waits_for(ctx.config, ctx.repository, entry["environment"], candidate, now)
    return {"version": candidate, "waits_for": [hold.as_dict() for hold in holds]}


def forced(promoted: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """Who let the environment's current version in past its gate, and why; None if nobody did."""
    if not promoted.get("forced"):
        return None
    return {"by": promoted.get("forced_by") or promoted.get("user"), "reason": promoted.get("reason"),
            "gate": promoted.get("gate"), "at": promoted.get("at"), "build_url": promoted.get("build_url")}


def drift(summary: Mapping[str, Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    """The environment's last plan, when it found drift and no apply or destroy has run since."""
    plan = summary.get("plan")
    if not plan or "drift" not in (plan.get("causes") or ()):
        return None
    cleared = [r for r in (summary.get("apply"), summary.get("destroy"))
               if r and r.get("result") == "done" and record_order(r) > record_order(plan)]
    if cleared:
        return None
    ci = plan.get("ci") or {}
    return {"at": plan.get("at"), "version": plan.get("version"), "summary": plan.get("summary"),
            "build_url": ci.get("build_url"), "user": ci.get("user"), "ci": ci}


def status(ctx: StageContext, now: Optional[dt.datetime] = None) -> List[Dict[str, Any]]:
    """One entry per environment, in path order: what it holds, its freeze, and the
    version waiting at its gate with what that waits for (SPEC §10)."""
    now = now or utc_now()
    entries = parallel_map(lambda name: _environment_status(ctx, name, now), ctx.config.environment_names,
                           threads=8)
    waiting = parallel_map(lambda i: _waiting(ctx, entries[i - 1], entries[i], now), range(1, len(entries)),
                           threads=8)
    for entry, waits in zip(entries[1:], waiting):
        entry["waiting"] = waits
    return entries


def on_demand_status(ctx: StageContext) -> List[Dict[str, Any]]:
    """On-demand environments and sandboxes, apart from the path (SPEC §9), by name."""
    return [instance.as_dict() for instance in list_instances(ctx.repository)]


def history(ctx: StageContext, environment: Optional[str] = None, limit: int = 20) -> List[Dict[str, Any]]:
    """Records newest first, of one environment or of all of them."""
    names = [ctx.environment(environment).name] if environment else list(ctx.config.environment_names)
    records: List[Dict[str, Any]] = []
    for name in names:
        records.extend(environment_history(ctx.repository, name, limit))
    records.sort(key=record_order, reverse=True)
    return records[:limit]
