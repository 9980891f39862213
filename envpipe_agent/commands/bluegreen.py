"""bluegreen: release a version of a blue-green environment, roll back, finish (SPEC §9)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Mapping

from envpipe_agent.commands import add_approved_by, emit, file_name, load_context
from envpipe_agent.errors import PolicyHold, UsageError


def run_bluegreen(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from envpipe_agent.stages import bluegreen as stage

    chosen = [flag for flag, given in (("--rollback", args.rollback), ("--finish", args.finish),
                                       ("--check", args.check)) if given]
    if len(chosen) > 1:
        raise UsageError(f"give one of {', '.join(chosen)}")
    if (args.rollback or args.finish) and (args.version or args.keep_old or args.force or args.junit or args.plan):
        raise UsageError(f"{chosen[0]} takes no VERSION, --keep-old, --force, --junit or --plan")
    if args.check and (args.force or args.reason):
        raise UsageError("--check asks whether the release is allowed as it stands: drop --force and --reason")
    ctx = load_context(args, environ)
    if args.check:
        check = stage.check_release(ctx, args.environment, args.version)
        emit(args, ctx, check.as_dict(), "" if check.holds else
             f"{check.environment}: releasing version {check.version} blue-green is allowed now")
        if check.holds:
            raise PolicyHold(f"releasing version {check.version} into {check.environment} would be refused now: "
                             + "; ".join(hold.reason for hold in check.holds))
        return 0
    if args.rollback:
        result = stage.rollback(ctx, args.environment, approved_by=args.approved_by)
        text = (f"{result.environment}: rolled back: traffic on {result.environment}-{result.live} (version "
                f"{result.version}); {result.kept} kept")
    elif args.finish:
        result = stage.finish(ctx, args.environment, approved_by=args.approved_by)
        text = (f"{result.environment}: {result.old_destroyed} destroyed" if result.old_destroyed
                else f"{result.environment}: no old instance to destroy")
    else:
        result = stage.bluegreen(ctx, args.environment, args.version, keep_old=args.keep_old, force=args.force,
                                 reason=args.reason, approved_by=args.approved_by,
                                 junit=Path(args.junit) if args.junit else None,
                                 plan_file=Path(args.plan) if args.plan else None)
        if not result.swapped and not result.resumed:
            text = f"{result.environment}: version {result.version} is already live on " \
                   f"{result.environment}-{result.live}: nothing to do"
        else:
            before = f"{result.environment}-{result.previous}" if result.previous else "no instance"
            text = (f"{result.environment}: version {result.version} live on {result.environment}-{result.live} "
                    f"(was {before}"
                    + (f"; {result.old_destroyed} destroyed" if result.old_destroyed else "")
                    + (f"; {result.kept} kept for --rollback" if result.kept else "")
                    + ("; completed a release cut short" if result.resumed else "")
                    + ("; policy overridden, recorded" if result.forced else "")
                    + (f"; approved by {result.approved_by}" if result.approved_by else "")
                    + f", {result.seconds:.1f}s)")
    emit(args, ctx, result.as_dict(), text)
    return 0


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "bluegreen", parents=[common],
        help="release V into a blue-green ENV: new instance, tests, swap traffic, destroy the old one")
    parser.add_argument("environment", metavar="ENV", help="an environment with 'bluegreen: {router: DIR}'")
    parser.add_argument("version", nargs="?", metavar="V", help="version to release (default: this CI build's)")
    parser.add_argument("--keep-old", action="store_true",
                        help="keep the old instance after the swap, for --rollback ('--finish' destroys it)")
    parser.add_argument("--rollback", action="store_true", help="swap traffic back to the old instance kept")
    parser.add_argument("--finish", action="store_true", help="destroy the old instance kept by --keep-old")
    parser.add_argument("--check", action="store_true",
                        help="change nothing: exit 0 if the release would be allowed now, 3 with the reasons if not")
    parser.add_argument("--junit", metavar="FILE", type=file_name, help="write the JUnit report of the new instance's tests to FILE")
    parser.add_argument("--plan", metavar="FILE", type=file_name,
                        help="apply exactly the plan 'envpipe plan ENV --version V --out FILE' saved of the instance "
                             "the release goes into (refused if it no longer fits)")
    parser.add_argument("--force", action="store_true",
                        help="release despite the gate, a freeze, a soak or a window (needs --reason)")
    parser.add_argument("--reason", metavar="TEXT", help="why the guard is overridden (recorded; needs --force)")
    add_approved_by(parser)
    parser.set_defaults(handler=run_bluegreen)
