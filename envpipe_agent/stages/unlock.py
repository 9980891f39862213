"""unlock: break an environment's lock, or a stale Terraform state lock, on purpose and
on the record."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Tuple

from envpipe_agent.context import StageContext
from envpipe_agent.errors import UsageError
from envpipe_agent.locking import break_lock, environment_lock
from envpipe_agent.repository import KeyNotFound
from envpipe_agent.tools.terraform import STATE_LOCK_FILES, STATE_PREFIX


@dataclass
class StateUnlock:
    environment: str
    removed: Optional[Dict[str, Any]]  # Terraform's lock information (ID, Who, Operation, Created)
    keys: Tuple[str, ...]  # the lock files removed
    record: Optional[str] = None

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def unlock(ctx: StageContext, environment: str, reason: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """Remove ``environment``'s lock; return the lock that was there (None if none)."""
    name = ctx.environment(environment).name
    previous = break_lock(ctx.repository, name)
    if previous is not None:
        details: Dict[str, Any] = {"lock": previous}
        if reason:
            details["reason"] = reason
        ctx.records.write(name, "unlock", None, "done", details)
    return previous


def unlock_state(ctx: StageContext, environment: str, reason: str) -> StateUnlock:
    """Remove a stale Terraform state lock of ``environment`` kept in the repository.

    A killed apply (or a lost answer to Terraform's own conditional write) leaves its
    lock file, and every later apply fails on it; ``terraform force-unlock`` would need
    the work folder that is gone. It is removed only under envpipe's own environment
    lock, so never under an apply that is still running (its lock would be held).
    """
    if not (reason and reason.strip()):
        raise UsageError("--state needs --reason TEXT saying why the state lock is stale (recorded)")
    env = ctx.environment(environment)
    state = ctx.config.state(env)
    if state is not None:
        raise UsageError(
            f"{env.name}'s Terraform state is in s3://{state.bucket}/, outside the artefact "
            "repository: once sure no apply runs, remove its '.tflock' object there by hand"
        )
    folder = f"{STATE_PREFIX}{env.name}/"
    with environment_lock(ctx.repository, env.name, "unlock", ctx.ci, timeout=ctx.lock_timeout):
        present = {info.key for info in ctx.repository.list(folder)}
        keys = tuple(folder + name for name in STATE_LOCK_FILES if folder + name in present)
        info = None
        for key in keys:
            try:
                info = info or json.loads(ctx.repository.read(key))
            except (KeyNotFound, ValueError):
                pass
        result = StateUnlock(env.name, info if isinstance(info, dict) else None, keys)
        if keys:
            ctx.repository.delete(list(keys))
            written = ctx.records.write(env.name, "unlock", None, "done",
                                        {"state_lock": result.removed or {}, "keys": list(keys), "reason": reason.strip()})
            result.record = written["key"]
    return result
