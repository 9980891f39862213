"""test: run the tests against an environment."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from envpipe_agent.commands import emit, file_name, load_context
from envpipe_agent.errors import StageFailed

if TYPE_CHECKING:
    from envpipe_agent.stages.testing import TestResult


def run_test(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from envpipe_agent.stages.testing import run_tests

    ctx = load_context(args, environ)
    # --version alone means this CI build's version (SPEC §5), as for apply.
    expected = None if args.version is None else ctx.resolve_version(args.version or None)
    result = run_tests(ctx, args.environment, junit=Path(args.junit) if args.junit else None, version=expected,
                       keep_workdir=args.keep_workdir)
    emit(args, ctx, result.as_dict(), result.summary())
    if not result.passed:
        raise tests_failed(result)
    return 0


def tests_failed(result: TestResult, remedy: str = "fix the definition and publish a new version") -> StageFailed:
    """The one line (exit 1) for a test run that did not pass."""
    shown = ", ".join(result.failed[:3]) + (f" and {len(result.failed) - 3} more" if len(result.failed) > 3 else "")
    where = f"; see {result.junit}" if result.junit else ""
    return StageFailed(f"{result.environment}: version {result.version} failed its tests ({shown}){where}: {remedy}")


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("test", parents=[common], help="run the tests against an environment")
    parser.add_argument("environment", metavar="ENV", help="environment to test (its last applied version)")
    parser.add_argument("--version", nargs="?", const="", metavar="V",
                        help="refuse (exit 3) unless ENV holds version V (alone: this CI build's)")
    parser.add_argument("--junit", metavar="FILE", type=file_name, help="write a JUnit XML report (for Jenkins 'junit', GoCD)")
    parser.add_argument("--keep-workdir", action="store_true",
                        help="keep the pytest suite's private work folder afterwards (to debug; it may hold secrets)")
    parser.set_defaults(handler=run_test)
