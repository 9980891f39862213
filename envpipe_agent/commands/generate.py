"""generate: render the Jenkinsfile or GoCD pipeline config from envpipe.yml (SPEC §8)."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Mapping

from envpipe_agent.config import load_config
from envpipe_agent.errors import StageFailed, UsageError
from envpipe_agent.files import write_file
from envpipe_agent.generate import JOBS, TARGETS, render

log = logging.getLogger("envpipe_agent")


def run_generate(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    # Only the config is needed: generating must work where the repository is unreachable.
    config = load_config(Path(args.config))
    text = render(config, args.target, templates=Path(args.templates) if args.templates else None, full=args.full,
                  job=args.job)
    if args.check:
        if not args.output:
            raise UsageError("--check needs -o FILE: the file to compare with")
        output = Path(args.output)
        current = output.read_text(encoding="utf-8") if output.is_file() else None
        if current != text:
            raise StageFailed(f"{output} is not what envpipe.yml renders: run "
                              f"'envpipe generate {args.target}{' --full' if args.full else ''}"
                              f"{'' if args.job == 'path' else ' --job ' + args.job} -o {output}'")
        log.info("%s is up to date", output)
        return 0
    if args.output:
        output = Path(args.output)
        folder = output.parent if str(output.parent) else Path(".")
        if not folder.is_dir():
            raise UsageError(f"-o {output}: folder {folder} does not exist; create it first")
        write_file(output, text)  # in one step: a CD server never reads half a pipeline
        log.info("wrote %s", args.output)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return 0


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("generate", parents=[common], help="render the Jenkinsfile or GoCD pipeline config")
    parser.add_argument("target", choices=tuple(TARGETS), help="what to render")
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    parser.add_argument("--templates", metavar="DIR",
                        help="folder whose *.j2 files replace the built-in templates of the same name")
    parser.add_argument("--full", action="store_true",
                        help="gocd-xml: a complete <cruise> document instead of a <pipelines> fragment")
    parser.add_argument("--job", choices=JOBS, default="path",
                        help="path: publish and the environments (default); reap: destroys expired on-demand "
                             "environments on a timer; environments: testers create, extend and destroy them")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if -o FILE differs from what would be written")
    parser.set_defaults(handler=run_generate)
