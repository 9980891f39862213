"""plan, apply, destroy."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from envpipe_agent.commands import add_approved_by, emit, file_name, load_context
from envpipe_agent.errors import UsageError

if TYPE_CHECKING:
    from envpipe_agent.stages.apply import StageResult


def _counts(result: StageResult) -> str:
    return f"{result.added} added, {result.changed_count} changed, {result.destroyed} destroyed"


def _outputs_text(result: StageResult) -> str:
    return "".join(f"\n  {name} = {json.dumps(value)}" for name, value in sorted(result.outputs.items()))


def _approved(result: StageResult) -> str:
    return f"; approved by {result.approved_by}" if result.approved_by else ""


def run_apply(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from envpipe_agent.stages.apply import apply

    ctx = load_context(args, environ)
    # --version alone means this CI build's version (SPEC §5), as for plan.
    expected = None if args.version is None else ctx.resolve_version(args.version or None)
    result = apply(ctx, args.environment, keep_workdir=args.keep_workdir, replace_failed=args.replace_failed,
                   version=expected, approved_by=args.approved_by, force=args.force, reason=args.reason,
                   plan_file=Path(args.plan) if args.plan else None, tool_args=args.tool_args)
    state = _counts(result) if result.changed else "no changes"
    emit(args, ctx, result.as_dict(),
         f"{result.environment}: version {result.version} applied ({state}, {result.seconds:.1f}s"
         + ("; policy overridden, recorded" if result.forced else "") + _approved(result) + ")"
         + (f" from the saved plan {result.plan_file}" if result.plan_file else "")
         + _outputs_text(result))
    return 0


def run_plan(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from envpipe_agent.stages.apply import plan

    ctx = load_context(args, environ)
    # --version alone means this CI build's version (SPEC §5), as for promote.
    candidate = None if args.version is None else ctx.resolve_version(args.version or None)
    result = plan(ctx, args.environment, keep_workdir=args.keep_workdir, version=candidate,
                  out=Path(args.out) if args.out else None, tool_args=args.tool_args)
    text = f"{result.environment}: {result.summary} (version {result.version})"
    if result.plan_file:
        text += f"; plan saved to {result.plan_file}"
    emit(args, ctx, result.as_dict(), text)
    # With --detailed-exitcode, 2 says "changes"; main's error handler makes sure no
    # error is ever 2 then.
    return 2 if args.detailed_exitcode and result.changed else 0


def run_destroy(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from envpipe_agent.stages.apply import destroy

    ctx = load_context(args, environ)
    result = destroy(ctx, args.environment, keep_workdir=args.keep_workdir, force=args.force, reason=args.reason,
                     approved_by=args.approved_by)
    emit(args, ctx, result.as_dict(),
         f"{result.environment}: version {result.version} destroyed ({result.destroyed} destroyed, "
         f"{result.emptied} files removed from its folder, {result.seconds:.1f}s"
         + ("; forced, recorded" if result.forced else "") + _approved(result) + ")")
    return 0


TARGETS = ("After '--', Terraform's -target=ADDRESS and -replace=ADDRESS are passed on (repeatable; nothing "
           "else): envpipe apply ENV -- -target=aws_instance.web.")


def run_terraform(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from envpipe_agent.stages.terraform_command import terraform_command

    ctx = load_context(args, environ)
    if not args.tool_args:
        raise UsageError("give the Terraform command after '--': envpipe terraform ENV -- state list")
    result = terraform_command(ctx, args.environment, args.tool_args, keep_workdir=args.keep_workdir,
                               approved_by=args.approved_by)
    emit(args, ctx, result.as_dict(), result.output.rstrip("\n"))
    return 0


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    keep = argparse.ArgumentParser(add_help=False)
    keep.add_argument("--keep-workdir", action="store_true",
                      help="keep the private work folder afterwards (to debug; it may hold secrets)")

    parser = subparsers.add_parser("plan", parents=[common, keep], help="what apply would change in ENV (drift check)",
                                   epilog=TARGETS)
    parser.add_argument("environment", metavar="ENV", help="environment to plan against")
    parser.add_argument("--detailed-exitcode", action="store_true",
                        help="exit 0 for no changes, 2 for changes, 1 for an error")
    parser.add_argument("--version", nargs="?", const="", metavar="V",
                        help="plan published version V (alone: this CI build's) instead of the one ENV holds")
    parser.add_argument("--out", metavar="FILE", type=file_name,
                        help="save the plan to FILE for 'apply ENV --plan FILE' (Terraform; FILE holds secrets)")
    parser.set_defaults(handler=run_plan, takes_tool_args=True)

    parser = subparsers.add_parser("apply", parents=[common, keep], help="fetch, verify and apply ENV's definition",
                                   epilog=TARGETS + " The arguments are recorded.")
    parser.add_argument("environment", metavar="ENV", help="environment to apply")
    parser.add_argument("--version", nargs="?", const="", metavar="V",
                        help="refuse (exit 3) unless ENV holds version V (alone: this CI build's)")
    parser.add_argument("--plan", metavar="FILE", type=file_name,
                        help="apply exactly the plan 'envpipe plan ENV --out FILE' saved (refused if made for "
                             "another version or stale)")
    parser.add_argument("--replace-failed", action="store_true",
                        help="CloudFormation: delete and recreate a stack left in a failed state")
    parser.add_argument("--force", action="store_true",
                        help="apply despite a freeze, an unfinished soak or a closed window (needs --reason)")
    parser.add_argument("--reason", metavar="TEXT", help="why the promotion policy is overridden (recorded; needs --force)")
    add_approved_by(parser)
    parser.set_defaults(handler=run_apply, takes_tool_args=True)

    parser = subparsers.add_parser("destroy", parents=[common, keep],
                                   help="destroy ENV's infrastructure and empty its folder")
    parser.add_argument("environment", metavar="ENV", help="environment to destroy")
    parser.add_argument("--force", action="store_true", help="override a guard that refuses it, such as a freeze (needs --reason)")
    parser.add_argument("--reason", metavar="TEXT", help="why the guard is overridden (recorded; needs --force)")
    add_approved_by(parser)
    parser.set_defaults(handler=run_destroy)

    parser = subparsers.add_parser(
        "terraform", parents=[common, keep], usage="envpipe terraform ENV [options] -- COMMAND [ARGS]",
        help="run 'state list|show', 'output' or 'import' on ENV's verified definition with envpipe's backend",
        epilog="COMMAND, after '--': 'state list', 'state show ADDRESS', 'output [NAME]', or 'import ADDRESS ID' "
               "(under ENV's lock, recorded; an approval: manual environment needs an approver).")
    parser.add_argument("environment", metavar="ENV", help="environment whose definition and state are used")
    add_approved_by(parser)
    parser.set_defaults(handler=run_terraform, takes_tool_args=True)
