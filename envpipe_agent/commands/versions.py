"""publish, promote, verify, unlock, status, history: the commands about versions and where they are."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from envpipe_agent.commands import add_approved_by, emit, load_context, table
from envpipe_agent.errors import UsageError
from envpipe_agent.records import record_order

log = logging.getLogger(__name__)


def run_publish(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from envpipe_agent.stages.publish import publish

    ctx = load_context(args, environ)
    result = publish(ctx, source=Path(args.source) if args.source else None, version=args.version)
    emit(args, ctx, result.as_dict(), result.version)
    return 0


def promoted_version(args: argparse.Namespace) -> Optional[str]:
    """The version to promote, given as ``promote V`` or ``promote --version V`` (as
    publish, plan and run take it); the two forms naming different versions is an error."""
    if args.version and args.version_option and args.version != args.version_option:
        raise UsageError(f"two versions given ({args.version} and --version {args.version_option}): give one")
    return args.version or args.version_option


def run_promote(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    if args.check:
        return run_promote_check(args, environ)
    from envpipe_agent.stages.promote import promote

    version = promoted_version(args)
    ctx = load_context(args, environ)
    result = promote(ctx, args.to, version=version, force=args.force, reason=args.reason,
                     approved_by=args.approved_by)
    text = f"{result.environment}: version {result.version} promoted ({result.describe()})"
    emit(args, ctx, result.as_dict(), text)
    return 0


def run_promote_check(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """--check: exit 0 when the promotion would be allowed now, 3 with every reason when not."""
    from envpipe_agent.errors import PolicyHold
    from envpipe_agent.stages.promote import check_promotion

    if args.force or args.reason:
        raise UsageError("--check asks whether the promotion is allowed as it stands: drop --force and --reason")
    version = promoted_version(args)
    ctx = load_context(args, environ)
    result = check_promotion(ctx, args.to, version=version)
    reasons = "; ".join(hold.reason for hold in result.holds)
    text = f"{result.environment}: promoting version {result.version} is allowed now"
    emit(args, ctx, result.as_dict(), "" if result.holds else text)
    if result.holds:
        raise PolicyHold(f"promoting version {result.version} into {result.environment} would be refused now: "
                         f"{reasons}")
    return 0


def run_verify(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from envpipe_agent.stages.verify import verify

    ctx = load_context(args, environ)
    result = verify(ctx, args.target)
    emit(args, ctx, result.as_dict(),
         f"{args.target}: version {result.version} verified ({result.files} files match its manifest)")
    return 0


def run_unlock(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from envpipe_agent.stages.unlock import unlock, unlock_state

    if args.state and not (args.reason and args.reason.strip()):
        raise UsageError("--state needs --reason TEXT saying why the state lock is stale (recorded)")
    ctx = load_context(args, environ)
    if args.state:
        result = unlock_state(ctx, args.environment, args.reason)
        who = result.removed or {}
        text = (f"{args.environment}: Terraform state lock {who.get('ID', '?')} of {who.get('Who', 'unknown')} "
                f"({who.get('Operation', '?')}, since {who.get('Created', '?')}) removed"
                if result.keys else f"{args.environment}: the Terraform state was not locked")
        emit(args, ctx, result.as_dict(), text)
        return 0
    previous = unlock(ctx, args.environment, args.reason)
    text = (f"{args.environment}: lock of {previous.get('holder')} ({previous.get('action')}) removed"
            if previous else f"{args.environment}: was not locked")
    emit(args, ctx, {"environment": args.environment, "removed": previous}, text)
    return 0


def _when(record: Optional[Dict[str, Any]], version: Optional[str]) -> str:
    """When and how ``record`` ended, if it concerns the version the environment holds
    now; an older version's run is named as such, never shown as this one's."""
    if not record:
        return "-"
    text = f"{record.get('at', '?')} {record.get('result', '')}".strip()
    return text if record.get("version") == version else f"- (was {record.get('version') or '?'}: {text})"


def _latest(*records: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The newest of several records (their keys sort by time)."""
    present = [r for r in records if r]
    return max(present, key=record_order, default=None)


def _cut_short(entry: Mapping[str, Any]) -> str:
    """A note when the latest promote was interrupted or killed: the folder may be half promoted."""
    cut = entry.get("interrupted_promote")
    if cut:
        return f" (promote of {cut.get('version')} {'unfinished' if cut.get('running') else 'cut short'})"
    record = (entry.get("last") or {}).get("promote")
    if record and record.get("result") == "interrupted":
        return f" (promote of {record.get('version')} interrupted)"
    return ""


def _age(seconds: Optional[int]) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _lock_lines(entries: List[Dict[str, Any]]) -> List[str]:
    """One line per held lock: holder, build, age, and what to do about an expired one."""
    lines = []
    for entry in entries:
        lock = entry.get("locked_by")
        if not lock:
            continue
        build = lock.get("build_url") or (f"build {lock['build']}" if lock.get("build") else "no CI build")
        line = (f"{entry['environment']}: locked by {lock.get('holder', 'unknown')} ({lock.get('action', '?')}, "
                f"{build}) for {_age(lock.get('age_seconds'))}")
        if lock.get("expired"):
            line += " (expired: its run is gone; the next run breaks it)"
        lines.append(line)
    for entry in entries:
        cut = entry.get("interrupted_promote")
        if cut and not cut.get("running"):
            lines.append(f"{entry['environment']}: a promote of {cut.get('version')} (at {cut.get('at', '?')}) was cut "
                         f"short: it may hold part of that version; complete it with 'envpipe promote "
                         f"{cut.get('version')} --to {entry['environment']}'")
    return lines


def status_table(entries: List[Dict[str, Any]]) -> str:
    rows = [("ENVIRONMENT", "VERSION", "PROMOTED", "APPLIED", "TESTED", "BY", "NOTE")]
    for entry in entries:
        last = entry["last"]
        promoted = entry["promoted"] or {}
        by = promoted.get("build_url") or promoted.get("user") or "-"
        rows.append((
            entry["environment"] + (" (manual)" if entry["approval"] == "manual" else ""),
            (entry["version"] or "-") + _cut_short(entry),
            promoted.get("at", "-"),
            _when(_latest(last.get("apply"), last.get("destroy")), entry["version"]),
            _when(last.get("test"), entry["version"]),
            by,
            status_note(entry),
        ))
    return "\n".join([table(rows), *_lock_lines(entries)])


def status_note(entry: Mapping[str, Any]) -> str:
    """An environment's audit marks: its version forced past the gate (who, why), and
    drift found by its last plan (when, by which build) that no apply has cleared."""
    notes = []
    frozen = entry.get("frozen")
    if frozen:
        notes.append(f"FROZEN by {frozen.get('by') or '?'} until {frozen.get('until') or 'unfrozen'}: "
                     f"{frozen.get('reason') or '(no reason)'}")
    forced = entry.get("forced")
    if forced:
        notes.append(f"FORCED by {forced.get('by') or '?'}: {forced.get('reason') or '(no reason)'}")
    bluegreen = entry.get("bluegreen")
    if bluegreen:
        notes.append(bluegreen_note(bluegreen))
    drift = entry.get("drift")
    if drift:
        notes.append(f"DRIFT found by plan at {drift.get('at') or '?'} "
                     f"({drift.get('build_url') or drift.get('user') or '?'}): apply to clear it")
    return "; ".join(notes)


def bluegreen_note(bluegreen: Mapping[str, Any]) -> str:
    """``LIVE green 1.0.2; idle production-blue 1.0.1; release of 1.0.3 interrupted at swap``."""
    live = (f"LIVE {bluegreen['live']} {bluegreen.get('version')}" if bluegreen.get("live")
            else "blue-green: nothing live yet")
    notes = [live]
    if bluegreen.get("idle"):
        notes.append(f"idle {bluegreen['idle']} {bluegreen.get('idle_version')}")
    release = bluegreen.get("release")
    if release:
        state = release.get("state")
        how = {"running": "running", "failed": "failed", "refused": "refused"}.get(state, state)
        notes.append(f"release of {release.get('version')} {how} at {release.get('step')}"
                     + ("" if state == "running" else
                        f": traffic on {bluegreen.get('live_instance') or 'no instance'}"))
    return "; ".join(notes)


def run_status(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from envpipe_agent.stages.status import on_demand_status, status

    ctx = load_context(args, environ)
    entries = status(ctx)
    instances = on_demand_status(ctx)
    if args.html:
        from envpipe_agent.commands.status_page import write_status_page

        log.info("status page written to %s", write_status_page(ctx, Path(args.html), entries, instances))
    gates = waiting_table(entries)
    text = (status_table(entries) + (f"\n\n{gates}" if gates else "")
            + (f"\n\n{on_demand_table(instances)}" if instances else ""))
    emit(args, ctx, {"project": ctx.config.project, "repository": ctx.repository.location(),
                     "environments": entries, "on_demand": instances}, text)
    return 0


def waiting_table(entries: List[Dict[str, Any]]) -> str:
    """Per environment, the version waiting at its gate and what it waits for (SPEC §10)."""
    rows = [("GATE", "WAITING", "WAITS FOR")]
    for entry in entries:
        waiting = entry.get("waiting")
        if waiting:
            holds = waiting["waits_for"]
            rows.append((entry["environment"], waiting["version"],
                         "; ".join(f"{h['rule']}: {h['summary']}" if h.get("summary") else h["rule"] for h in holds)
                         or "nothing: the pipeline promotes it next"))
    return table(rows) if len(rows) > 1 else ""


def on_demand_table(instances: List[Dict[str, Any]]) -> str:
    """On-demand environments and sandboxes, apart from the path; expired ones marked."""
    rows = [("ON-DEMAND", "KIND", "VERSION", "OWNER", "EXPIRES")]
    rows += [(i["name"], i["kind"], i["version"] or "-", i["owner"], i["expires"] + (" EXPIRED" if i["expired"] else ""))
             for i in instances]
    return table(rows)


def run_history(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from envpipe_agent.stages.status import history

    ctx = load_context(args, environ)
    records = history(ctx, args.environment, args.limit)
    rows = [("AT", "ENVIRONMENT", "ACTION", "VERSION", "RESULT", "BY", "NOTE")]
    rows += [(r.get("at") or "?", r.get("environment") or "?", r.get("action") or "?", r.get("version") or "-",
              r.get("result") or "?", _by(r), record_note(r)) for r in records]
    emit(args, ctx, records, table(rows) if records else "no records")
    return 0


def _by(record: Mapping[str, Any]) -> str:
    ci = record.get("ci") or {}
    return ci.get("build_url") or ci.get("user") or "-"


def _overridden(record: Mapping[str, Any]) -> str:
    """What an override record overrode, in words: the gate, a manual approval, a policy."""
    if record.get("gate"):
        return f"{record.get('overrides') or 'promote'}'s gate (tests in {record['gate']})"
    overrides = record.get("overrides")
    what = ", ".join(map(str, overrides)) if isinstance(overrides, (list, tuple)) else str(overrides or "")
    if record.get("approval") == "manual" and what:
        return f"approval: manual on {what}"
    return what


def record_note(record: Mapping[str, Any]) -> str:
    """What an auditor needs beside a record's result: why an override was made, who
    approved, what a repair was, and why a stage was refused or failed."""
    notes = []
    if record.get("action") == "bluegreen" and record.get("step"):
        notes.append(_bluegreen_step(record))
    elif record.get("bluegreen"):
        notes.append(f"blue-green: {record['bluegreen']}")
    if record.get("repair"):
        notes.append("repair: the version it already held, promoted again without the gate")
    if record.get("reason"):
        what = _overridden(record) if record.get("action") == "override" else ""
        notes.append(f"reason: {record['reason']}" + (f" ({what} overridden)" if what else ""))
    terraform_args = record.get("tool_args") or (record.get("args") if record.get("action") == "import" else None)
    if terraform_args:
        notes.append(f"terraform {' '.join(map(str, terraform_args))}")
    if record.get("approved_by"):
        notes.append(f"approved by {record['approved_by']}")
    if record.get("result") in ("refused", "failed", "interrupted") and record.get("error"):
        notes.append(str(record["error"]))
    return "; ".join(notes)


def _bluegreen_step(record: Mapping[str, Any]) -> str:
    """``step swap: live production-green``: where a blue-green release was, and what it did."""
    step = record["step"]
    if step in ("released", "rolled back"):
        return f"{step}: live {record.get('live')}" + (f", {record['kept']} kept" if record.get("kept") else "")
    detail = {"deploy": record.get("instance"), "swap": f"live {record.get('live')}" if record.get("live") else None,
              "destroy-old": record.get("destroyed")}.get(step)
    return f"step {step}" + (f": {detail}" if detail and record.get("result") == "done" else "")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("publish", parents=[common], help="copy the definition to <repo>/VERSION/")
    parser.add_argument("--source", metavar="DIR", help="definition folder (default: 'source' in the config)")
    parser.add_argument("--version", metavar="V",
                        help="version to publish (default: from the CI build; outside CI it must be given)")
    parser.set_defaults(handler=run_publish)

    parser = subparsers.add_parser("promote", parents=[common], help="copy a version into an environment's folder")
    parser.add_argument("version", nargs="?", metavar="V",
                        help="version to promote (default: this CI build's); an older one rolls ENV back")
    parser.add_argument("--version", dest="version_option", metavar="V", help="the same as the positional V")
    parser.add_argument("--to", required=True, metavar="ENV", help="environment to promote into")
    parser.add_argument("--force", action="store_true",
                        help="override the test gate, a freeze, the soak time and the window (needs --reason)")
    parser.add_argument("--reason", metavar="TEXT", help="why the gate or policy is overridden (recorded; needs --force)")
    parser.add_argument("--check", action="store_true",
                        help="change nothing: exit 0 if the promotion would be allowed now, 3 with the reason if not")
    add_approved_by(parser)
    parser.set_defaults(handler=run_promote)

    parser = subparsers.add_parser("verify", parents=[common], help="check a version or environment against its manifest")
    parser.add_argument("target", metavar="VERSION|ENV",
                        help="a published version, or an environment whose folder is checked")
    parser.set_defaults(handler=run_verify)

    parser = subparsers.add_parser("unlock", parents=[common], help="break an environment's lock (recorded)")
    parser.add_argument("environment", metavar="ENV", help="environment whose lock is removed")
    parser.add_argument("--state", action="store_true",
                        help="remove a stale Terraform state lock in the repository instead (needs --reason; "
                             "only while ENV's own lock is free)")
    parser.add_argument("--reason", metavar="TEXT", help="why the lock is broken (recorded)")
    parser.set_defaults(handler=run_unlock)

    parser = subparsers.add_parser("status", parents=[common], help="which version is where")
    parser.add_argument("--html", metavar="FILE", help="also write a self-contained HTML status page")
    parser.set_defaults(handler=run_status)

    parser = subparsers.add_parser("history", parents=[common], help="records, newest first")
    parser.add_argument("environment", nargs="?", metavar="ENV", help="only this environment (default: all)")
    parser.add_argument("--limit", type=_positive_int, default=20, help="at most this many records (default 20)")
    parser.set_defaults(handler=run_history)
