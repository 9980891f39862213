"""Promotion policy (SPEC §10): freezes, soak time and promotion windows, in one place.

``policy_holds`` lists what stops a change to an environment right now; promote,
apply, destroy and blue-green call ``enforce_policy`` after their gate, and
``status`` shows the same holds for the version waiting at each gate. The clock is a
parameter: nothing here reads the time by itself.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional

from envpipe_agent.config import Config
from envpipe_agent.errors import PolicyHold
from envpipe_agent.records import iso, latest_test, parse_iso, version_passed
from envpipe_agent.repository import KeyNotFound, Repository
from envpipe_agent.timespec import format_duration, next_opening, window_is_open

FREEZE_PREFIX = ".envpipe/freeze/"
# What each action is held by: a freeze stops every change; soak and windows concern
# bringing a version in, which destroy does not.
RULES = {"promote": ("freeze", "soak", "window"), "apply": ("freeze", "soak", "window"),
         "bluegreen": ("freeze", "soak", "window"), "destroy": ("freeze",)}
_OVERRIDE = {"promote": "envpipe promote {version} --to {environment}", "apply": "envpipe apply {environment}",
             "bluegreen": "envpipe bluegreen {environment} {version}", "destroy": "envpipe destroy {environment}"}


@dataclass(frozen=True)
class Hold:
    """One thing that stops a change now: its rule, one sentence, and when it ends by itself."""

    rule: str  # "gate", "freeze", "soak", "window" (or, in status, "approval")
    reason: str
    until: Optional[str] = None  # ISO 8601 UTC; None: until someone acts
    summary: str = ""  # a few words for status: "12m more", "opens Mon 09:00 Europe/London"

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def freeze_key(environment: str) -> str:
    return f"{FREEZE_PREFIX}{environment}.json"


def freeze_expired(freeze: Dict[str, Any], now: dt.datetime) -> bool:
    """A freeze whose ``until`` has passed is no freeze."""
    until = parse_iso(freeze.get("until"))
    return until is not None and until <= now


def stored_freeze(repository: Repository, environment: str) -> Optional[Dict[str, Any]]:
    """The freeze object of ``environment`` (expired or not), or None when there is none.

    A freeze is a guard: one that cannot be read (not JSON, not an object, written by
    hand) still freezes, saying so, rather than letting every change through unseen;
    ``envpipe unfreeze`` removes it like any other."""
    key = freeze_key(environment)
    try:
        freeze = json.loads(repository.read(key))
    except KeyNotFound:
        return None
    except ValueError:  # not JSON, or not UTF-8
        freeze = None
    if isinstance(freeze, dict):
        return freeze
    return {"environment": environment, "by": None, "until": None,
            "reason": f"its freeze object {key} cannot be read (not written by envpipe); 'envpipe unfreeze "
                      f"{environment}' removes it"}


def read_freeze(repository: Repository, environment: str, now: dt.datetime) -> Optional[Dict[str, Any]]:
    """The freeze on ``environment`` in force at ``now``, or None."""
    freeze = stored_freeze(repository, environment)
    if freeze is None or freeze_expired(freeze, now):
        return None
    return freeze


def describe_freeze(environment: str, freeze: Dict[str, Any]) -> str:
    until = f" until {freeze['until']}" if freeze.get("until") else " until 'envpipe unfreeze'"
    return (f"{environment} is frozen by {freeze.get('by') or 'unknown'} since {freeze.get('at', '?')}{until}: "
            f"{freeze.get('reason') or '(no reason given)'}")


def gate_hold(config: Config, repository: Repository, environment: str, version: str) -> Optional[Hold]:
    """The gate (SPEC §6) as a hold: None when ``version`` passed its tests in the
    environment before this one (or there is none before)."""
    previous = config.previous_environment(environment)
    if previous is None or version_passed(repository, previous.name, version):
        return None
    summary = f"not passed in {previous.name}"
    if not config.tests.path and not config.tests.http:
        # 'envpipe test' would only say there is nothing to test: point at the config.
        return Hold("gate", f"version {version} has not passed its tests in {previous.name}, and "
                            f"{config.path.name} configures none: set tests.path or tests.http, publish, "
                            f"then run 'envpipe test {previous.name}'", summary=summary)
    return Hold("gate", f"version {version} has not passed its tests in {previous.name}: promote it there and "
                        f"run 'envpipe test {previous.name}' first", summary=summary)


def _soak_hold(config: Config, repository: Repository, environment: str, version: str,
               now: dt.datetime) -> Optional[Hold]:
    env = config.environment(environment)
    previous = config.previous_environment(environment)
    if env.soak is None or previous is None:
        return None
    soak = format_duration(env.soak)
    record = latest_test(repository, previous.name, version)
    passed = parse_iso((record or {}).get("passing_since") or (record or {}).get("at")) \
        if record and record.get("result") == "passed" else None
    if passed is None:
        since = " since its last failure" if record else " yet"
        return Hold("soak", f"the {soak} soak of version {version} has not started: it has not passed its tests "
                            f"in {previous.name}{since}", summary=f"{soak}, not started")
    ready = passed + env.soak
    if ready <= now:
        return None
    return Hold("soak", f"version {version} passed its tests in {previous.name} at {iso(passed)}; the {soak} soak "
                        f"needs {format_duration(ready - now)} more (until {iso(ready)})", until=iso(ready),
                summary=f"{format_duration(ready - now)} more")


def _window_hold(config: Config, environment: str, now: dt.datetime) -> Optional[Hold]:
    windows = config.environment(environment).windows
    if window_is_open(windows, now):
        return None
    window, opening = next_opening(windows, now)
    texts = "; ".join(w.text for w in windows)
    opens = window.describe_opening(opening)
    return Hold("window", f"{environment} is outside its promotion window ({texts}): it next opens {opens}",
                until=iso(opening), summary=f"opens {opens}")


def policy_holds(config: Config, repository: Repository, environment: str, version: Optional[str],
                 now: dt.datetime, action: str = "promote") -> List[Hold]:
    """What stops ``action`` of ``version`` into ``environment`` at ``now`` ([] when nothing does)."""
    rules = RULES[action]
    holds: List[Optional[Hold]] = []
    if "freeze" in rules:
        freeze = read_freeze(repository, environment, now)
        holds.append(Hold("freeze", describe_freeze(environment, freeze), freeze.get("until"),
                          f"by {freeze.get('by') or 'unknown'}: {freeze.get('reason') or '?'}") if freeze else None)
    if "soak" in rules and version:
        holds.append(_soak_hold(config, repository, environment, version, now))
    if "window" in rules:
        holds.append(_window_hold(config, environment, now))
    return [hold for hold in holds if hold is not None]


def waits_for(config: Config, repository: Repository, environment: str, version: str,
              now: dt.datetime) -> List[Hold]:
    """What ``version``, waiting to enter ``environment``, waits for at ``now`` (for
    status): the gate, the policy's holds, and a person where approval is manual."""
    gate = gate_hold(config, repository, environment, version)
    holds = ([gate] if gate else []) + policy_holds(config, repository, environment, version, now, "promote")
    if config.environment(environment).manual:
        holds.append(Hold("approval", f"{environment} has approval: manual: a person approves each promotion",
                          summary="a person's approval"))
    return holds


def refusal(action: str, environment: str, version: Optional[str], holds: List[Hold]) -> str:
    """The one line a refused action prints: every hold, then how to override."""
    override = _OVERRIDE[action].format(environment=environment, version=version or "").replace("  ", " ")
    preposition = "of" if action == "destroy" else "into"
    return (f"{action} {preposition} {environment} refused: " + "; ".join(hold.reason for hold in holds)
            + f"; to override, run '{override} --force --reason \"...\"' (recorded)")


def enforce_policy(config: Config, repository: Repository, environment: str, version: Optional[str],
                   now: dt.datetime, action: str, force: bool) -> List[Hold]:
    """Refuse ``action`` while a hold stands, unless ``force``; return the holds overridden."""
    holds = policy_holds(config, repository, environment, version, now, action)
    if holds and not force:
        raise PolicyHold(refusal(action, environment, version, holds))
    return holds


def override_details(holds: List[Hold], *guards: str) -> Dict[str, Any]:
    """What a record of a forced action says was overridden (SPEC §10): other ``guards``
    first ("gate", "approval"), then each hold of the policy."""
    overridden = [*guards, *(hold.rule for hold in holds)]
    details: Dict[str, Any] = {"overridden": overridden}
    if holds:
        details["holds"] = [hold.as_dict() for hold in holds]
    return details
