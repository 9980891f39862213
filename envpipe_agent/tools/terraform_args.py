"""Terraform arguments a user may pass through envpipe, against short allowlists.

``envpipe apply ENV -- -target=ADDR`` narrows or forces what an apply does without
touching the definition; ``envpipe terraform ENV -- state list`` reaches Terraform's
state commands on the environment's verified definition with envpipe's own backend
settings. Anything else is refused with what is allowed: a flag passed blindly could
point Terraform at another state, write files into the agent, or print secrets.
"""
from __future__ import annotations

from typing import List, Sequence

from envpipe_agent.errors import UsageError

# apply/plan: flags of the form -NAME=VALUE.
PLAN_FLAGS = ("-target", "-replace")
# envpipe terraform: command words, and whether they change anything (then run under
# the environment's lock, and recorded).
COMMANDS = {("state", "list"): False, ("state", "show"): False, ("output",): False, ("import",): True}
# Printing every output in clear, sensitive ones included: not through envpipe.
_REFUSED_OUTPUT_FLAGS = ("-json", "-raw")


def plan_arguments(args: Sequence[str]) -> List[str]:
    """``args`` when each is ``-target=ADDR`` or ``-replace=ADDR``; a usage error otherwise."""
    for arg in args:
        name, equals, value = arg.partition("=")
        if name not in PLAN_FLAGS or not equals or not value.strip() or "\n" in value:
            allowed = ", ".join(f"{flag}=ADDRESS" for flag in PLAN_FLAGS)
            raise UsageError(f"Terraform argument {arg!r} is not accepted: after '--' apply and plan take {allowed} "
                             "(repeatable); change anything else in the definition and publish it")
    return list(args)


def command_changes_state(args: Sequence[str]) -> bool:
    """Whether ``envpipe terraform ENV -- ARGS`` changes anything; a usage error for
    anything off the allowlist."""
    words = tuple(arg for arg in args[:2] if not arg.startswith("-"))
    for command, changes in COMMANDS.items():
        if words[:len(command)] == command:
            if command == ("output",) and any(a.split("=", 1)[0] in _REFUSED_OUTPUT_FLAGS for a in args[1:]):
                raise UsageError("terraform output -json/-raw print sensitive outputs in clear: run 'envpipe terraform "
                                 "ENV -- output [NAME]' (sensitive ones show as <sensitive>)")
            return changes
    allowed = ", ".join(" ".join(command) for command in COMMANDS)
    raise UsageError(f"'terraform {' '.join(args) or '(nothing)'}' is not available through envpipe: after '--' give "
                     f"one of: {allowed}")
