"""envpipe terraform ENV -- ARGS: a few Terraform commands on an environment's verified
definition, with the backend and variables envpipe gives it, so nobody rebuilds the
backend settings by hand to look at or repair state.

Read-only commands (``state list``, ``state show``, ``output``) take no lock and write
no record. ``import`` changes the state: it runs under the environment's lock, needs
an approver for an ``approval: manual`` environment, and is recorded (SPEC §6).
"""
from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence

from envpipe_agent.approval import approver
from envpipe_agent.context import StageContext
from envpipe_agent.errors import StageFailed, UsageError
from envpipe_agent.locking import environment_lock
from envpipe_agent.tools.base import RunRequest
from envpipe_agent.tools.terraform import TerraformRunner
from envpipe_agent.tools.terraform_args import command_changes_state
from envpipe_agent.workdir import fetched

log = logging.getLogger(__name__)
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class CommandResult:
    environment: str
    version: str
    args: List[str]
    output: str  # Terraform's standard output, redacted
    record: Optional[str] = None  # the record key, for a command that changes state

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def terraform_command(ctx: StageContext, environment: str, args: Sequence[str], keep_workdir: bool = False,
                      approved_by: Optional[str] = None, runner: Optional[TerraformRunner] = None) -> CommandResult:
    """Run ``terraform ARGS`` (allowlisted) on ``environment``'s verified definition."""
    if ctx.config.tool != "terraform":
        raise UsageError(f"'envpipe terraform' runs Terraform; {ctx.config.path.name} says tool: {ctx.config.tool}")
    args = list(args)
    changes = command_changes_state(args)
    env = ctx.environment(environment)
    who = approver(env, f"terraform {args[0]}", ctx.environ, approved_by) if changes else None
    credentials = ctx.credentials(env)
    redactor = ctx.redactor.with_values(credentials.secrets)
    lock = (environment_lock(ctx.repository, env.name, args[0], ctx.ci, timeout=ctx.lock_timeout) if changes
            else contextlib.nullcontext())
    with lock:
        with fetched(ctx.repository, env.name, keep_workdir, ctx.environ, ctx.config.project) as work:
            request = RunRequest(config=ctx.config, environment=env, version=work.manifest.version,
                                 manifest=work.manifest, workdir=work.path, environ=credentials.environ,
                                 redactor=redactor, repository=ctx.repository_as(credentials), ci=ctx.ci,
                                 client_factory=ctx.client_factory)
            log.info("%s: terraform %s on version %s", env.name, " ".join(args), work.manifest.version)
            completed = (runner or TerraformRunner()).passthrough(request, args)
        failed = completed.returncode != 0
        error = completed.first_error or f"exit code {completed.returncode}"
        record = None
        if changes:
            details = {"args": args, "tool": "terraform", **({"approved_by": who} if who else {}),
                       **({"error": error} if failed else {})}
            record = ctx.records.with_secrets(credentials.secrets).write(
                env.name, args[0], work.manifest.version, "failed" if failed else "done", details)["key"]
    if failed:
        raise StageFailed(f"terraform {' '.join(args)} failed in {env.name}: {error} (Terraform's output is above)")
    # Not every one of these commands takes -no-color: colour codes go here instead.
    return CommandResult(env.name, work.manifest.version, args, redactor(_COLOUR.sub("", completed.stdout)), record)
