"""Which blue-green instance is live: ``<repo>/.envpipe/live/<env>.json`` (SPEC §9).

The live object is the one place that says where traffic goes. It changes only after
a router apply completed (the swap, a rollback), so an interrupted release leaves it
naming the instance of the last completed swap. Beside the live color and version
it keeps the old instance (while it exists, for ``--rollback``) and the release under
way with its step, so the next ``bluegreen`` and ``status`` know what happened.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, Optional

from envpipe_agent.records import read_json
from envpipe_agent.repository import Repository

LIVE_PREFIX = ".envpipe/live/"
COLORS = ("blue", "green")
# A release's steps, in order (SPEC §9); the live object names the one under way.
STEPS = ("gate", "deploy", "test", "swap", "record", "destroy-old")


def live_key(environment: str) -> str:
    return f"{LIVE_PREFIX}{environment}.json"


def other_color(color: str) -> str:
    return COLORS[1 - COLORS.index(color)]


@dataclass(frozen=True)
class Live:
    environment: str
    color: Optional[str] = None  # the live instance's color; None before the first swap
    version: Optional[str] = None  # the version the live instance holds
    since: Optional[str] = None  # when traffic last moved (ISO 8601 UTC)
    # The instance traffic left at the last swap, while it exists: {"color", "version"}.
    old: Optional[Dict[str, Any]] = None
    # The release under way or cut short: {"version", "color", "step", "state"
    # (running | failed | interrupted), "started", "user", "build_url", "error"}.
    release: Optional[Dict[str, Any]] = None

    @property
    def idle_color(self) -> str:
        """The instance a release goes into: the one not live (blue when none is)."""
        return other_color(self.color) if self.color else COLORS[0]

    def instance(self, color: Optional[str] = None) -> Optional[str]:
        color = color or self.color
        return f"{self.environment}-{color}" if color else None

    def with_release(self, **fields: Any) -> "Live":
        return replace(self, release={**(self.release or {}), **fields})

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def read_live(repository: Repository, environment: str) -> Live:
    """The live object of ``environment`` (an empty one before its first release)."""
    data = read_json(repository, live_key(environment)) or {}
    color = data.get("color") if data.get("color") in COLORS else None
    old = data.get("old") if isinstance(data.get("old"), dict) and data["old"].get("color") in COLORS else None
    release = data.get("release") if isinstance(data.get("release"), dict) else None
    return Live(environment=environment, color=color, version=data.get("version") if color else None,
                since=data.get("since"), old=old, release=release)


def write_live(repository: Repository, live: Live) -> None:
    body = json.dumps(live.as_dict(), indent=1, sort_keys=True) + "\n"
    repository.write(live_key(live.environment), body.encode("utf-8"))
