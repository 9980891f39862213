"""Sub-commands: each module registers its parsers and turns results into output."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Mapping, Sequence

from envpipe_agent.context import StageContext


def load_context(args: argparse.Namespace, environ: Mapping[str, str]) -> StageContext:
    """The StageContext for these arguments; widens the redaction of the log and of
    error messages (``args.redaction``, set by main) to the config's secrets."""
    ctx = StageContext.load(args.config, repository=args.repo, environ=environ, lock_timeout=args.lock_timeout)
    args.redaction.redactor = ctx.redactor
    return ctx


def emit(args: argparse.Namespace, ctx: StageContext, result: Any, text: str) -> None:
    """Print the result: JSON with --json, else ``text`` (both redacted) on stdout."""
    if args.json:
        body = json.dumps(result, indent=2, sort_keys=True, default=str)
        print(ctx.redactor(body))
    elif text:
        print(ctx.redactor(text))
    sys.stdout.flush()


def _printable(text: str) -> str:
    """A cell on one line: a line break, tab or terminal escape recorded in a reason (or
    in a record envpipe did not write) is shown escaped, so it cannot forge a row."""
    return text if text.isprintable() else "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in text)


def table(rows: Sequence[Sequence[Any]]) -> str:
    """Rows as aligned columns (the first row is the heading), trailing blanks trimmed."""
    cells = [[_printable(str(cell)) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells)


def file_name(text: str) -> str:
    """A FILE or DIR option's value: never empty, which would quietly mean "none"
    (``apply --plan "$PLAN"`` with PLAN unset would apply a fresh plan, not the approved one)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty name: give the file or folder")
    return text


def add_approved_by(parser: argparse.ArgumentParser) -> None:
    """--approved-by, for the commands that change an ``approval: manual`` environment."""
    parser.add_argument("--approved-by", metavar="WHO",
                        help="who approved this change of an 'approval: manual' environment (recorded; "
                             "default: ENVPIPE_APPROVER, which generated pipelines set from the approval step)")
