"""unlock: break an environment's lock, on purpose and on the record."""
from __future__ import annotations

from typing import Any, Dict, Optional

from envpipe_agent.context import StageContext
from envpipe_agent.locking import break_lock
from envpipe_agent.records import write_record


def unlock(ctx: StageContext, environment: str) -> Optional[Dict[str, Any]]:
    """Remove ``environment``'s lock; return the lock that was there (None if none)."""
    name = ctx.environment(environment).name
    previous = break_lock(ctx.repository, name)
    if previous is not None:
        write_record(ctx.repository, name, "unlock", None, "done", ctx.ci, {"lock": previous},
                     redactor=ctx.record_redactor)
    return previous
