"""The command line: parse arguments, call the library, print, map errors to exit codes.

Only this module reads ``os.environ`` and ``sys.argv``; the commands in
``envpipe_agent.commands`` receive them as arguments.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import signal
import sys
import threading
import traceback
from typing import Any, Iterator, List, Mapping, NoReturn, Optional, Sequence

from envpipe_agent import __version__
from envpipe_agent.errors import (EXIT_FAILED, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE,
                                  EnvpipeError, Terminated)
from envpipe_agent.redact import Redactor, RedactingFilter

# Each module adds its sub-commands with register(subparsers, common). Handlers
# import their stage when they run, so a command loads only what it uses (the CLI's
# start-up is part of every pipeline stage's time).
COMMAND_MODULES = (
    "envpipe_agent.commands.versions",
    "envpipe_agent.commands.policy",
    "envpipe_agent.commands.apply",
    "envpipe_agent.commands.testing",
    "envpipe_agent.commands.run",
    "envpipe_agent.commands.ondemand",
    "envpipe_agent.commands.bluegreen",
    "envpipe_agent.commands.generate",
    "envpipe_agent.commands.security",
)

log = logging.getLogger("envpipe_agent")


class ArgumentParser(argparse.ArgumentParser):
    """Usage errors as one line and exit 2, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"envpipe: error: {message} (see '{self.prog} --help')\n")


def lock_timeout(text: str) -> float:
    """--lock-timeout: seconds, finite and >= 0 (``nan`` would otherwise wait forever)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: give the seconds to wait, a number >= 0")
    return seconds


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
    common.add_argument("--lock-timeout", metavar="SECONDS", type=lock_timeout, default=argparse.SUPPRESS,
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
    parser.add_argument("--version", action="version", version=f"envpipe {__version__}",
                        help="print the installed envpipe's version and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    subparsers.required = True
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers, common)
    _describe(subparsers)
    return parser


def _describe(subparsers: argparse._SubParsersAction) -> None:
    """A sub-command's one-line help is also the description its own --help shows,
    unless it has a longer one (argparse keeps the two apart)."""
    summaries = {action.dest: action.help for action in subparsers._choices_actions}
    for name, subparser in subparsers.choices.items():
        if subparser.description is None and summaries.get(name):
            subparser.description = summaries[name][:1].upper() + summaries[name][1:] + "."
        for action in subparser._actions:
            if isinstance(action, argparse._SubParsersAction):
                _describe(action)


def check_reason_needs_force(parser: ArgumentParser, args: argparse.Namespace) -> None:
    """``--reason`` only explains an override: given alone it would be recorded nowhere
    and silently ignored, so it is a usage error (exit 2) on every command with ``--force``."""
    if getattr(args, "force", None) is False and getattr(args, "reason", None) is not None:
        parser.exit(EXIT_USAGE, f"envpipe: error: --reason is only used with --force (an override, recorded with "
                                "its reason): add --force to override, or drop --reason "
                                f"(see 'envpipe {args.command} --help')\n")


def _configure_logging(quiet: bool, verbose: bool, redaction: RedactingFilter) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(redaction)
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)


def _one_line(text: str) -> str:
    """Every failure is one stderr line (SPEC §4), whatever a message carries."""
    return "; ".join(part.strip() for part in text.splitlines() if part.strip()) or "(no message)"


_terminated = False


def _raise_terminated(signum: int, frame: Any) -> None:
    """The first SIGTERM stops the run. A later one is forwarded to a child being
    stopped (envpipe_agent.children); otherwise it is ignored, so that it cannot cut
    short the release of the lock and the writing of the record."""
    global _terminated
    children = sys.modules.get("envpipe_agent.children")  # loaded by any stage that has children
    if _terminated and not (children is not None and children.stopping()):
        log.warning("envpipe: terminating already: releasing locks and writing records")
        return
    _terminated = True
    raise Terminated()


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set signal handlers
        return
    global _terminated
    _terminated = False
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


DETAILED_EXITCODE = "--detailed-exitcode"


def _asks_for(argv: Sequence[str], option: str, short: Optional[str] = None) -> bool:
    """Whether ``argv`` gives ``option`` (or an abbreviation argparse takes, or ``short``),
    for the error handler to know before, or without, a successful parse."""
    for arg in argv:
        if arg == "--":
            break
        name = arg.split("=", 1)[0]
        if name == short or (len(name) > 3 and option.startswith(name)):
            return True
    return False


class ErrorHandler:
    """The one place where whatever ends a command becomes its exit code and one stderr
    line (SPEC §4), as pre-commit's ``error_handler()``: EnvpipeError by its
    ``exit_code``, SIGTERM and Ctrl-C 130, a broken stdout pipe 0, anything else 4 (a
    bug). Messages are masked with ``redaction``'s redactor, which a command widens
    once it has read the config's ``secrets:``; tracebacks only with ``-v``.

    With --detailed-exitcode, 2 means "changes" (Terraform's convention): a pipeline
    must never read a usage error (ENV missing, a typo) as that, so it is 1 then.
    """

    def __init__(self, argv: Sequence[str], redaction: RedactingFilter) -> None:
        # Known from argv until the arguments are parsed (parsing itself may fail).
        self.detailed_exitcode = _asks_for(argv, DETAILED_EXITCODE)
        self.verbose = _asks_for(argv, "--verbose", "-v")
        self.redaction = redaction
        self.exit_code = EXIT_OK

    def parsed(self, args: argparse.Namespace) -> None:
        self.detailed_exitcode = bool(getattr(args, "detailed_exitcode", False))
        self.verbose = bool(args.verbose)

    def __enter__(self) -> "ErrorHandler":
        return self

    def __exit__(self, kind: Any, exc: Optional[BaseException], tb: Any) -> bool:
        if exc is None:
            return False
        code = self._exit_code(exc)
        if code is None:
            return False  # --help, --version: argparse's own exit goes on
        if self.detailed_exitcode and code == EXIT_USAGE:
            code = EXIT_FAILED
        self.exit_code = code
        return True

    def _exit_code(self, exc: BaseException) -> Optional[int]:
        if isinstance(exc, SystemExit):  # argparse: its message is printed already
            return EXIT_USAGE if exc.code == EXIT_USAGE else None
        if isinstance(exc, EnvpipeError):
            self._report("error", str(exc))
            return exc.exit_code
        if isinstance(exc, Terminated):  # before KeyboardInterrupt, its base class
            print("envpipe: terminated (SIGTERM); locks held by this run were released", file=sys.stderr)
            return EXIT_INTERRUPTED
        if isinstance(exc, KeyboardInterrupt):
            print("envpipe: interrupted; locks held by this run were released (if one is left, it expires, "
                  "or see 'envpipe unlock')", file=sys.stderr)
            return EXIT_INTERRUPTED
        if isinstance(exc, BrokenPipeError):  # e.g. `envpipe history | head`
            # Point stdout at /dev/null so the interpreter's final flush does not
            # report the broken pipe again.
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK
        if isinstance(exc, Exception):  # the one place that catches bugs
            self._report("internal error", f"{type(exc).__name__}: {exc}",
                         ": this is a bug in envpipe; rerun with -v for the traceback and report it")
            return EXIT_INTERNAL
        return None

    def _report(self, label: str, message: str, after: str = "") -> None:
        if self.verbose:
            traceback.print_exc()
        print(f"envpipe: {label}: {_one_line(self.redaction.redactor(message))}{after}", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None, environ: Optional[Mapping[str, str]] = None) -> int:
    environ = dict(os.environ) if environ is None else dict(environ)
    argv = list(sys.argv[1:] if argv is None else argv)
    # Secrets from the environment are masked before the config is even read; the
    # commands widen this with the config's `secrets:` once it is loaded (load_context).
    redaction = RedactingFilter(Redactor.from_environ(environ))
    with ErrorHandler(argv, redaction) as handler:
        # Inside the handler: even a broken installation's import error is one line.
        parser = build_parser()
        # Arguments after '--' are the tool's (apply ENV -- -target=ADDR): set apart before
        # parsing, so they may follow any option, and checked by the command that takes them.
        tool_args: List[str] = []
        if "--" in argv:
            split = argv.index("--")
            argv, tool_args = argv[:split], argv[split + 1:]
        args = parser.parse_args(argv)
        check_reason_needs_force(parser, args)
        if tool_args and not getattr(args, "takes_tool_args", False):
            parser.exit(EXIT_USAGE, f"envpipe: error: {args.command} takes no arguments after '--' (only apply, "
                                    f"plan and terraform do) (see 'envpipe {args.command} --help')\n")
        args.tool_args = tool_args
        for name, default in GLOBAL_DEFAULTS.items():
            if not hasattr(args, name):
                setattr(args, name, default)
        handler.parsed(args)
        args.redaction = redaction
        _configure_logging(args.quiet, args.verbose, redaction)
        with _sigterm_raises():
            handler.exit_code = int(args.handler(args, environ) or 0)
    return handler.exit_code
