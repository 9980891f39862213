"""run: the whole path locally, as the generated pipelines run it."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Mapping

from envpipe_agent.commands import emit, file_name, load_context


def run_run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from envpipe_agent.stages.run import run_pipeline

    ctx = load_context(args, environ)
    result = run_pipeline(ctx, version=args.version, through=args.through, approve=args.approve or (),
                          junit_dir=Path(args.junit_dir) if args.junit_dir else None)
    emit(args, ctx, result.as_dict(), result.summary())
    return 0


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("run", parents=[common],
                                   help="publish, then promote, apply and test each environment in turn")
    parser.add_argument("--version", help="version to publish and take along (default: from the CI build)")
    parser.add_argument("--through", metavar="ENV", help="stop after this environment (default: the last)")
    parser.add_argument("--approve", metavar="ENV", action="append",
                        help="go on into this 'approval: manual' environment, approved by you (ENVPIPE_APPROVER "
                             "or your user name, recorded; repeatable)")
    parser.add_argument("--junit-dir", metavar="DIR", type=file_name, help="write each environment's JUnit report to DIR/ENV.xml")
    parser.set_defaults(handler=run_run)
