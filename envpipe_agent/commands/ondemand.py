"""env create|list|extend|destroy|reap, and sandbox up|test|destroy (SPEC §9)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from envpipe_agent.commands import emit, file_name, load_context, table
from envpipe_agent.commands.testing import tests_failed
from envpipe_agent.errors import StageFailed

if TYPE_CHECKING:
    from envpipe_agent.context import StageContext
    from envpipe_agent.stages.ondemand import DestroyResult


def run_create(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from envpipe_agent.stages.ondemand import create

    ctx = load_context(args, environ)
    result = create(ctx, args.name, version=args.version, source=args.source, ttl=args.ttl, test=args.test)
    applied = result.applied
    text = (f"{result.name}: version {result.version} applied ({applied.added} added, {applied.changed_count} "
            f"changed, {applied.destroyed} destroyed); expires {result.expires}")
    if result.tested:
        text += "\n" + result.tested.summary()
    emit(args, ctx, result.as_dict(), text)
    if result.tested and not result.tested.passed:
        raise tests_failed(result.tested, f"fix the definition, publish, and 'envpipe env create {result.name} "
                                          "--version V' again")
    return 0


def run_list(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from envpipe_agent.stages.ondemand import list_instances

    ctx = load_context(args, environ)
    instances = list_instances(ctx)
    rows = [("NAME", "KIND", "VERSION", "OWNER", "CREATED", "EXPIRES")]
    rows += [(i.name, i.kind, i.version or "-", i.owner, i.created, i.expires + (" (expired)" if i.expired else ""))
             for i in instances]
    emit(args, ctx, [i.as_dict() for i in instances],
         table(rows) if instances else "no on-demand environments or sandboxes")
    return 0


def run_extend(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from envpipe_agent.stages.ondemand import extend

    ctx = load_context(args, environ)
    registration = extend(ctx, args.name, args.ttl)
    emit(args, ctx, registration.as_dict(), f"{registration.name}: expires {registration.expires}")
    return 0


def run_destroy(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from envpipe_agent.stages.ondemand import destroy

    ctx = load_context(args, environ)
    _print_destroyed(args, ctx, destroy(ctx, args.name, keep_workdir=args.keep_workdir))
    return 0


def _print_destroyed(args: argparse.Namespace, ctx: StageContext, result: DestroyResult) -> None:
    emit(args, ctx, result.as_dict(),
         f"{result.name}: destroyed ({result.destroyed} resources destroyed, {result.removed} objects removed, "
         f"{result.seconds:.1f}s); registration removed, records kept")


def run_reap(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from envpipe_agent.stages.ondemand import reap

    ctx = load_context(args, environ)
    outcomes = reap(ctx, dry_run=args.dry_run)
    lines = [f"{o.name}: {o.outcome}" + (f": {o.error}" if o.error else
                                         f" ({o.kind} of {o.owner}, expired {o.expires})") for o in outcomes]
    emit(args, ctx, [o.as_dict() for o in outcomes], "\n".join(lines) or "nothing has expired")
    failed = [o.name for o in outcomes if o.failed]
    if failed:
        raise StageFailed(f"{len(failed)} of {len(outcomes)} expired instances were not reaped ({', '.join(failed)}): "
                          "see the lines above; the next reap tries them again")
    return 0


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    keep = argparse.ArgumentParser(add_help=False)
    keep.add_argument("--keep-workdir", action="store_true",
                      help="keep the private work folder afterwards (to debug; it may hold secrets)")
    ttl_help = "lifetime from now, in m, h or d (e.g. 30m, 8h, 2d; at most on_demand.max_ttl)"

    env = subparsers.add_parser("env", parents=[common], help="on-demand environments: create, list, extend, "
                                                              "destroy, reap")
    commands = env.add_subparsers(dest="env_command", metavar="ACTION", parser_class=type(env))
    commands.required = True

    parser = commands.add_parser("create", parents=[common], help="register NAME, promote a version into it (no "
                                 "gate) and apply it; an existing NAME is updated to that version")
    parser.add_argument("name", metavar="NAME", help="the new environment's name (not one of the path's)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--version", metavar="V", help="the published version (default: this CI build's)")
    source.add_argument("--from", dest="source", metavar="ENV", help="the version ENV holds")
    parser.add_argument("--ttl", metavar="D", help=ttl_help + " (default on_demand.ttl; an existing NAME keeps "
                                                             "its expiry without it)")
    parser.add_argument("--test", action="store_true", help="run the tests against it once applied")
    parser.set_defaults(handler=run_create)

    parser = commands.add_parser("list", parents=[common], help="every on-demand environment and sandbox")
    parser.set_defaults(handler=run_list)

    parser = commands.add_parser("extend", parents=[common], help="make NAME expire a new lifetime from now")
    parser.add_argument("name", metavar="NAME", help="on-demand environment or sandbox to extend")
    parser.add_argument("--ttl", metavar="D", required=True, help=ttl_help)
    parser.set_defaults(handler=run_extend)

    parser = commands.add_parser("destroy", parents=[common, keep], help="destroy NAME's infrastructure, then "
                                 "its folder, state and registration (records stay)")
    parser.add_argument("name", metavar="NAME", help="on-demand environment or sandbox to destroy")
    parser.set_defaults(handler=run_destroy)

    parser = commands.add_parser("reap", parents=[common], help="destroy every expired on-demand environment "
                                 "and sandbox")
    parser.add_argument("--dry-run", action="store_true", help="only list what would be destroyed")
    parser.set_defaults(handler=run_reap)

    register_sandbox(subparsers, common, keep, ttl_help)


def run_sandbox_up(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from envpipe_agent.stages.sandbox import up

    ctx = load_context(args, environ)
    result = up(ctx, args.name, source=Path(args.source) if args.source else None, ttl=args.ttl, test=args.test)
    applied = result.applied
    text = (f"{result.name}: working copy {result.version} applied ({result.uploaded} uploaded, {result.deleted} "
            f"deleted, {result.unchanged} unchanged; {applied.added} added, {applied.changed_count} changed, "
            f"{applied.destroyed} destroyed); expires {result.expires}")
    if result.tested:
        text += "\n" + result.tested.summary()
    emit(args, ctx, result.as_dict(), text)
    if result.tested and not result.tested.passed:
        raise tests_failed(result.tested, "edit the working copy and run 'envpipe sandbox up --test' again")
    return 0


def run_sandbox_test(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from envpipe_agent.stages.sandbox import run_sandbox_tests

    ctx = load_context(args, environ)
    result = run_sandbox_tests(ctx, args.name, source=Path(args.source) if args.source else None,
                               junit=Path(args.junit) if args.junit else None)
    emit(args, ctx, result.as_dict(), result.summary())
    if not result.passed:
        raise tests_failed(result, "edit the working copy and run 'envpipe sandbox up --test' again")
    return 0


def run_sandbox_destroy(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from envpipe_agent.stages.sandbox import destroy_sandbox

    ctx = load_context(args, environ)
    _print_destroyed(args, ctx, destroy_sandbox(ctx, args.name, keep_workdir=args.keep_workdir))
    return 0


def register_sandbox(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser,
                     keep: argparse.ArgumentParser, ttl_help: str) -> None:
    sandbox = subparsers.add_parser("sandbox", parents=[common], help="your own instance of the working copy: up, "
                                                                      "test, destroy")
    commands = sandbox.add_subparsers(dest="sandbox_command", metavar="ACTION", parser_class=type(sandbox))
    commands.required = True
    name_help = "the sandbox's name (default sandbox-<user>)"
    source_help = "the working copy's definition folder (default: 'source' in the config)"

    parser = commands.add_parser("up", parents=[common], help="check and upload the working copy (only what "
                                 "changed) into the sandbox and apply it; nothing is published")
    parser.add_argument("name", nargs="?", metavar="NAME", help=name_help)
    parser.add_argument("--source", metavar="DIR", help=source_help)
    parser.add_argument("--ttl", metavar="D", help=ttl_help + " (default on_demand.ttl; an existing sandbox keeps "
                                                             "its expiry without it)")
    parser.add_argument("--test", action="store_true", help="run the tests against it once applied")
    parser.set_defaults(handler=run_sandbox_up)

    parser = commands.add_parser("test", parents=[common], help="run the tests of the working copy last brought "
                                 "up against the sandbox")
    parser.add_argument("name", nargs="?", metavar="NAME", help=name_help)
    parser.add_argument("--source", metavar="DIR", help=source_help + "; an edit since the last up is named")
    parser.add_argument("--junit", metavar="FILE", type=file_name, help="write a JUnit XML report")
    parser.set_defaults(handler=run_sandbox_test)

    parser = commands.add_parser("destroy", parents=[common, keep], help="destroy the sandbox as 'env destroy' does")
    parser.add_argument("name", nargs="?", metavar="NAME", help=name_help)
    parser.set_defaults(handler=run_sandbox_destroy)
