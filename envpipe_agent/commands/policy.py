"""freeze, unfreeze."""
from __future__ import annotations

import argparse
from typing import Mapping

from envpipe_agent.commands import emit, load_context


def run_freeze(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from envpipe_agent.stages.freeze import freeze

    ctx = load_context(args, environ)
    result = freeze(ctx, args.environment, args.reason, until=args.until)
    emit(args, ctx, result, f"{result['environment']}: frozen by {result['by']} until "
                            f"{result['until'] or 'unfrozen'}: {result['reason']}")
    return 0


def run_unfreeze(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from envpipe_agent.stages.freeze import unfreeze

    ctx = load_context(args, environ)
    previous = unfreeze(ctx, args.environment)
    text = (f"{args.environment}: unfrozen (was frozen by {previous.get('by')}: {previous.get('reason')})"
            if previous else f"{args.environment}: was not frozen; nothing to do")
    emit(args, ctx, {"environment": args.environment, "removed": previous}, text)
    return 0


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("freeze", parents=[common],
                                   help="stop promotions, applies and destroys of ENV (recorded)")
    parser.add_argument("environment", metavar="ENV", help="environment to freeze")
    parser.add_argument("--reason", metavar="TEXT", required=True, help="why (shown to everyone refused; recorded)")
    parser.add_argument("--until", metavar="ISO-TIME",
                        help="the freeze ends by itself then (2026-12-24T18:00:00Z, or a duration such as 8h)")
    parser.set_defaults(handler=run_freeze)

    parser = subparsers.add_parser("unfreeze", parents=[common], help="remove ENV's freeze (recorded)")
    parser.add_argument("environment", metavar="ENV", help="environment to unfreeze")
    parser.set_defaults(handler=run_unfreeze)
