"""Manual approval (SPEC §6): an ``approval: manual`` environment changes only with an approver.

A pipeline's approval step is not the only way into production: ``envpipe promote``,
``apply``, ``bluegreen`` and ``destroy`` run anywhere, so the approval is a property of
the environment, checked here by each of them. The approver comes from ``--approved-by``
or ``ENVPIPE_APPROVER`` (the generated pipelines set it from the approval step's
submitter) and is recorded.
"""
from __future__ import annotations

from typing import Mapping, Optional

from envpipe_agent.config import Environment
from envpipe_agent.errors import ApprovalRequired, UsageError

APPROVER_VARIABLE = "ENVPIPE_APPROVER"
# GoCD's approval is a manual stage, and whoever triggered it approved it (GO_TRIGGER_USER).
# A GoCD pipeline cannot copy one variable's value into another, so its generated
# manual stages name the variable that holds the approver here instead.
APPROVER_FROM_VARIABLE = "ENVPIPE_APPROVER_FROM"
# What GoCD puts in GO_TRIGGER_USER when no person triggered the stage.
_NOT_A_PERSON = ("changes", "timer", "anonymous")


def approver(env: Environment, action: str, environ: Mapping[str, str],
             approved_by: Optional[str] = None) -> Optional[str]:
    """Who approved ``action`` on ``env``: ``approved_by``, else ``ENVPIPE_APPROVER``.

    Raises ApprovalRequired (exit 3) for an ``approval: manual`` environment without
    one. Elsewhere an approver given is returned, to be recorded, and none is needed.
    """
    who = (approved_by or environ.get(APPROVER_VARIABLE) or "").strip() or None
    if who is None and environ.get(APPROVER_FROM_VARIABLE):
        named = (environ.get(environ[APPROVER_FROM_VARIABLE]) or "").strip()
        who = named if named and named not in _NOT_A_PERSON else None
    if who is not None and not who.isprintable():
        # Recorded and shown in history: a line break would forge a line of its own.
        raise UsageError(f"the approver {who!r} holds a line break or control character: give one line of text "
                         f"(--approved-by WHO or {APPROVER_VARIABLE}); nothing was done")
    if env.manual and who is None:
        raise ApprovalRequired(
            f"{env.name} has approval: manual: {action} needs an approver: pass --approved-by WHO, or set "
            f"{APPROVER_VARIABLE} (the generated pipelines set it from the approval step's submitter); "
            "nothing was done")
    return who
