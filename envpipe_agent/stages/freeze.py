"""freeze and unfreeze: stop changes to an environment, and let them go again (SPEC §10).

The freeze is one object, ``<repo>/.envpipe/freeze/<env>.json`` (who, when, why,
until, the CI build), read by ``envpipe_agent.policy`` wherever an environment is
changed. Both commands are recorded.
"""
from __future__ import annotations

import datetime as dt
import json
from typing import Any, Dict, Optional

from envpipe_agent.context import StageContext
from envpipe_agent.errors import UsageError
from envpipe_agent.policy import freeze_expired, freeze_key, stored_freeze
from envpipe_agent.records import iso, parse_iso, utc_now
from envpipe_agent.redact import redact_data
from envpipe_agent.timespec import TimeSpecError, parse_duration


def freeze_until(text: Optional[str], now: dt.datetime) -> Optional[dt.datetime]:
    """``--until``: an ISO 8601 time (without a zone: UTC) or a duration from now; in the future."""
    if text is None:
        return None
    until = parse_iso(text)
    if until is None:
        try:
            until = now + parse_duration(text)
        except TimeSpecError as exc:
            if text.strip()[-1:] in ("d", "h", "m"):  # meant as a duration: say what is wrong with it
                raise UsageError(f"--until: {exc}: nothing was frozen") from None
            raise UsageError(f"--until {text!r} is neither an ISO 8601 time (2026-12-24T18:00:00Z) nor a "
                             "duration (8h, 2d): nothing was frozen") from None
    if until <= now:
        raise UsageError(f"--until {text!r} is in the past ({iso(until)}, now {iso(now)}): nothing was frozen")
    return until


def _who(ctx: StageContext) -> str:
    ci = ctx.ci
    return ci.user or ci.build_url or (f"{ci.server} build {ci.build}" if ci.build else ci.server)


def freeze(ctx: StageContext, environment: str, reason: str, until: Optional[str] = None,
           now: Optional[dt.datetime] = None) -> Dict[str, Any]:
    """Freeze ``environment`` (replacing a freeze already there); return the freeze."""
    now = now or utc_now()
    env = ctx.config.environment(environment)
    if not (reason and reason.strip()):
        raise UsageError("freeze needs --reason TEXT saying why (everyone refused is shown it): nothing was frozen")
    ends = freeze_until(until, now)
    # Masked as records are: the reason is shown to everyone refused.
    body = redact_data({"environment": env.name, "by": _who(ctx), "at": iso(now), "reason": reason.strip(),
                        "until": iso(ends) if ends else None, "ci": ctx.ci.as_record()}, ctx.record_redactor)
    ctx.repository.write(freeze_key(env.name), (json.dumps(body, indent=1, sort_keys=True) + "\n").encode("utf-8"))
    ctx.records.write(env.name, "freeze", None, "done", {"reason": body["reason"], "until": body["until"]},
                      moment=now)
    return body


def unfreeze(ctx: StageContext, environment: str, now: Optional[dt.datetime] = None) -> Optional[Dict[str, Any]]:
    """Remove ``environment``'s freeze; return it (None when it was not frozen)."""
    now = now or utc_now()
    env = ctx.config.environment(environment)
    previous = stored_freeze(ctx.repository, env.name)
    if previous is None:
        return None
    ctx.repository.delete([freeze_key(env.name)])
    if freeze_expired(previous, now):
        return None  # it had ended by itself: removing it is tidying, not a change of policy
    ctx.records.write(env.name, "unfreeze", None, "done", {"freeze": previous}, moment=now)
    return previous
