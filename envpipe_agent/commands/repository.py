"""publish, promote, verify, unlock, status, history."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from envpipe_agent.commands import emit, load_context

log = logging.getLogger(__name__)


def run_publish(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from envpipe_agent.stages.publish import publish

    ctx = load_context(args, environ)
    result = publish(ctx, source=Path(args.source) if args.source else None, version=args.version)
    emit(args, ctx, result.as_dict(), result.version)
    return 0


def run_promote(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from envpipe_agent.stages.promote import promote

    ctx = load_context(args, environ)
    result = promote(ctx, args.to, version=args.version, force=args.force, reason=args.reason)
    text = (f"{result.environment}: version {result.version} (was {result.previous_version or 'empty'}; "
            f"{result.copied} copied, {result.deleted} deleted, {result.unchanged} unchanged)")
    emit(args, ctx, result.as_dict(), text)
    return 0


def run_verify(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from envpipe_agent.stages.verify import verify

    ctx = load_context(args, environ)
    result = verify(ctx, args.target)
    emit(args, ctx, result.as_dict(), f"{args.target}: {result.files} files match version {result.version}")
    return 0


def run_unlock(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from envpipe_agent.stages.unlock import unlock

    ctx = load_context(args, environ)
    previous = unlock(ctx, args.environment)
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
    return max(present, key=lambda r: str(r.get("key", "")).rsplit("/", 1)[-1], default=None)


def _cut_short(record: Optional[Dict[str, Any]]) -> str:
    """A note when the latest promote was interrupted: the folder may be half promoted."""
    if record and record.get("result") == "interrupted":
        return f" (promote of {record.get('version')} interrupted)"
    return ""


def status_table(entries: List[Dict[str, Any]]) -> str:
    rows = [("ENVIRONMENT", "VERSION", "PROMOTED", "APPLIED", "TESTED", "BY")]
    for entry in entries:
        last = entry["last"]
        promoted = entry["promoted"] or {}
        by = promoted.get("build_url") or promoted.get("user") or "-"
        rows.append((
            entry["environment"] + (" (manual)" if entry["approval"] == "manual" else ""),
            (entry["version"] or "-") + _cut_short(last.get("promote")),
            promoted.get("at", "-"),
            _when(_latest(last.get("apply"), last.get("destroy")), entry["version"]),
            _when(last.get("test"), entry["version"]),
            by,
        ))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def run_status(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from envpipe_agent.stages.status import status

    ctx = load_context(args, environ)
    entries = status(ctx)
    if args.html:
        from envpipe_agent.status_page import write_status_page

        log.info("status page written to %s", write_status_page(ctx, Path(args.html), entries))
    emit(args, ctx, {"project": ctx.config.project, "repository": ctx.repository.location(),
                     "environments": entries}, status_table(entries))
    return 0


def run_history(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from envpipe_agent.stages.status import history

    ctx = load_context(args, environ)
    records = history(ctx, args.environment, args.limit)
    lines = [f"{r.get('at')}  {r.get('environment'):<12} {r.get('action'):<8} {r.get('version') or '-':<14} "
             f"{r.get('result')}  {(r.get('ci') or {}).get('build_url') or (r.get('ci') or {}).get('user') or ''}"
             for r in records]
    emit(args, ctx, records, "\n".join(lines) or "no records")
    return 0


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
    parser.add_argument("--version", help="version to publish (default: from the CI build)")
    parser.set_defaults(handler=run_publish)

    parser = subparsers.add_parser("promote", parents=[common], help="copy a version into an environment's folder")
    parser.add_argument("version", nargs="?", help="version (default: this CI build's)")
    parser.add_argument("--to", required=True, metavar="ENV", help="environment to promote into")
    parser.add_argument("--force", action="store_true", help="override the test gate (needs --reason)")
    parser.add_argument("--reason", help="why the gate is overridden (recorded)")
    parser.set_defaults(handler=run_promote)

    parser = subparsers.add_parser("verify", parents=[common], help="check a version or environment against its manifest")
    parser.add_argument("target", metavar="VERSION|ENV")
    parser.set_defaults(handler=run_verify)

    parser = subparsers.add_parser("unlock", parents=[common], help="break an environment's lock (recorded)")
    parser.add_argument("environment", metavar="ENV")
    parser.set_defaults(handler=run_unlock)

    parser = subparsers.add_parser("status", parents=[common], help="which version is where")
    parser.add_argument("--html", metavar="FILE", help="also write a self-contained HTML status page")
    parser.set_defaults(handler=run_status)

    parser = subparsers.add_parser("history", parents=[common], help="records, newest first")
    parser.add_argument("environment", nargs="?", metavar="ENV")
    parser.add_argument("--limit", type=_positive_int, default=20, help="at most this many records (default 20)")
    parser.set_defaults(handler=run_history)
