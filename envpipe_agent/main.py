"""The command line: parse arguments, call the library, print, map errors to exit codes.

Only this module reads ``os.environ`` and ``sys.argv``; the commands in
``envpipe_agent.commands`` receive them as arguments.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from typing import Mapping, NoReturn, Optional, Sequence

from envpipe_agent.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, EnvpipeError
from envpipe_agent.redact import Redactor, RedactingFilter

# Each module adds its sub-commands with register(subparsers, common).
COMMAND_MODULES = (
    "envpipe_agent.commands.repository",
    "envpipe_agent.commands.apply",
    "envpipe_agent.commands.testing",
    "envpipe_agent.commands.run",
    "envpipe_agent.commands.generate",
)

log = logging.getLogger("envpipe_agent")


class ArgumentParser(argparse.ArgumentParser):
    """Usage errors as one line and exit 2, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"envpipe: error: {message} (see '{self.prog} --help')\n")


def common_options() -> argparse.ArgumentParser:
    """Global options, accepted before or after the command (SPEC §4)."""
    common = ArgumentParser(add_help=False)
    # SUPPRESS keeps a value given before the command from being reset by the
    # sub-parser's default; main() fills in the defaults afterwards.
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                        help="pipeline description (default ./envpipe.yml)")
    common.add_argument("--repo", metavar="URL", default=argparse.SUPPRESS,
                        help="artefact repository, overriding the config (also ENVPIPE_REPO)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print a machine-readable result on stdout")
    common.add_argument("--lock-timeout", metavar="SECONDS", type=float, default=argparse.SUPPRESS,
                        help="wait this long for a held environment lock (default 0)")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="only errors on stderr")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="debug output, and tracebacks for errors")
    return common


GLOBAL_DEFAULTS = {"config": "envpipe.yml", "repo": None, "json": False, "lock_timeout": 0.0,
                   "quiet": False, "verbose": False}


def build_parser() -> ArgumentParser:
    import importlib

    common = common_options()
    parser = ArgumentParser(prog="envpipe", parents=[common],
                            description="Environment Pipeline for Terraform and CloudFormation.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    subparsers.required = True
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers, common)
    return parser


def _configure_logging(quiet: bool, verbose: bool, redactor: Redactor) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(RedactingFilter(redactor))
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)


def main(argv: Optional[Sequence[str]] = None, environ: Optional[Mapping[str, str]] = None) -> int:
    environ = dict(os.environ) if environ is None else dict(environ)
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, default in GLOBAL_DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, default)
    # Secrets from the environment are masked before the config is even read; the
    # commands widen this with the config's `secrets:` once it is loaded.
    redactor = Redactor.from_environ(environ)
    _configure_logging(args.quiet, args.verbose, redactor)
    try:
        return int(args.handler(args, environ) or 0)
    except EnvpipeError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"envpipe: error: {redactor(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("envpipe: interrupted; an environment lock may be left until it expires "
              "(see 'envpipe unlock')", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `envpipe history | head`
        return 0
    except Exception as exc:  # noqa: BLE001 - the one place that catches bugs
        if args.verbose:
            traceback.print_exc()
        print(f"envpipe: internal error: {type(exc).__name__}: {redactor(str(exc))}: this is a bug in "
              "envpipe; rerun with -v for the traceback and report it", file=sys.stderr)
        return EXIT_INTERNAL
