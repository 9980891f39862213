"""generate: render the Jenkinsfile or GoCD pipeline config from envpipe.yml (SPEC §8)."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Dict, Mapping

from envpipe_agent.config import load_config
from envpipe_agent.errors import StageFailed, UsageError
from envpipe_agent.files import write_named_file
from envpipe_agent.generate import JOBS, TARGETS, render, render_library

log = logging.getLogger("envpipe_agent")
LIBRARY_TARGET = "jenkins-library"


def _generate_library(args: argparse.Namespace, files: Dict[str, str]) -> int:
    """The Jenkins Shared Library: a folder of files, written or (--check) compared."""
    if not args.output:
        raise UsageError("generate jenkins-library needs -o DIR: the folder (the library's repository) to write it to")
    root = Path(args.output)
    if args.check:
        stale = [name for name, text in files.items()
                 if not (root / name).is_file() or (root / name).read_text(encoding="utf-8") != text]
        if stale:
            raise StageFailed(f"{root}: {', '.join(stale)} differ from what envpipe.yml renders: run "
                              f"'envpipe generate jenkins-library -o {root}'")
        log.info("%s is up to date", root)
        return 0
    if not root.parent.is_dir():
        raise UsageError(f"-o {root}: folder {root.parent} does not exist; create it first")
    for name, text in files.items():
        try:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"-o {root}: cannot create {(root / name).parent}: {exc.strerror or exc}") from None
        write_named_file(root / name, text, "-o")  # each in one step, as a single pipeline file
    log.info("wrote %s (%d files)", root, len(files))
    return 0


def run_generate(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    # Only the config is needed: generating must work where the repository is unreachable.
    config = load_config(Path(args.config))
    templates = Path(args.templates) if args.templates else None
    if args.target == LIBRARY_TARGET:
        if args.full or args.template or args.use_library is not None or args.job != "path":
            raise UsageError("generate jenkins-library takes only -o DIR, --templates and --check")
        return _generate_library(args, render_library(config, templates))
    text = render(config, args.target, templates=templates, full=args.full, job=args.job, template=args.template,
                  library=args.use_library)
    if args.check:
        if not args.output:
            raise UsageError("--check needs -o FILE: the file to compare with")
        output = Path(args.output)
        current = output.read_text(encoding="utf-8") if output.is_file() else None
        if current != text:
            options = "".join((" --full" if args.full else "", " --template" if args.template else "",
                               f" --use-library {args.use_library}" if args.use_library is not None else "",
                               "" if args.job == "path" else " --job " + args.job))
            raise StageFailed(f"{output} is not what envpipe.yml renders: run "
                              f"'envpipe generate {args.target}{options} -o {output}'")
        log.info("%s is up to date", output)
        return 0
    if args.output:
        output = Path(args.output)
        folder = output.parent if str(output.parent) else Path(".")
        if not folder.is_dir():
            raise UsageError(f"-o {output}: folder {folder} does not exist; create it first")
        write_named_file(output, text, "-o")  # in one step: a CD server never reads half a pipeline
        log.info("wrote %s", args.output)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return 0


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("generate", parents=[common], help="render the Jenkinsfile or GoCD pipeline config")
    parser.add_argument("target", choices=(*TARGETS, LIBRARY_TARGET),
                        help="what to render (jenkins-library: a Jenkins Shared Library of steps, into -o DIR)")
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    parser.add_argument("--templates", metavar="DIR",
                        help="folder whose *.j2 files replace the built-in templates of the same name")
    parser.add_argument("--full", action="store_true",
                        help="gocd-xml: a complete <cruise> document instead of a <pipelines> fragment")
    parser.add_argument("--template", action="store_true",
                        help="gocd-xml, gocd-yaml: the environments' pipelines use the GoCD pipeline templates "
                             "(envpipe-environment, envpipe-environment-manual), which the XML defines")
    parser.add_argument("--use-library", metavar="NAME",
                        help="jenkins: a short Jenkinsfile calling the steps of the Shared Library NAME "
                             "(see 'generate jenkins-library')")
    parser.add_argument("--job", choices=JOBS, default="path",
                        help="path: publish and the environments (default); reap: destroys expired on-demand "
                             "environments on a timer; environments: testers create, extend and destroy them")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if -o FILE differs from what would be written")
    parser.set_defaults(handler=run_generate)
