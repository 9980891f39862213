"""Registrations of on-demand environments and sandboxes (SPEC §9).

``<repo>/.envpipe/on-demand/<name>.json`` says that an instance exists, whose it is
and when it expires. It is written before anything of the instance is promoted or
applied and deleted only after its infrastructure is destroyed, so an instance whose
create failed or was killed is still listed, and reaped.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional

from envpipe_agent.config import ENVIRONMENT_RE
from envpipe_agent.errors import Refused
from envpipe_agent.manifest import read_manifest
from envpipe_agent.parallel import parallel_map
from envpipe_agent.records import iso, parse_iso, utc_now
from envpipe_agent.repository import KeyNotFound, Repository

REGISTRATIONS_PREFIX = ".envpipe/on-demand/"
# What an unreadable registration expires at: long ago, so reap removes what it left.
_LONG_AGO = "1970-01-01T00:00:00Z"


@dataclass(frozen=True)
class Registration:
    name: str
    kind: str  # "env" (an on-demand environment) or "sandbox"
    owner: str
    created: str  # ISO 8601 UTC, 2026-11-29T18:00:00Z
    expires: str
    like: str  # the path environment whose vars, role and account it copies

    def expired(self, now: dt.datetime) -> bool:
        expires = parse_iso(self.expires)
        return expires is None or expires <= now

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def to_json(self) -> bytes:
        return (json.dumps(self.as_dict(), indent=1, sort_keys=True) + "\n").encode("utf-8")


def registration_key(name: str) -> str:
    return f"{REGISTRATIONS_PREFIX}{name}.json"


def read_registration(repository: Repository, name: str) -> Optional[Registration]:
    """``name``'s registration, or None. One that cannot be read (damaged, written by
    hand) counts as expired long ago, so reap removes what it left rather than keeping
    it for ever. A name no instance can have (``../x``, ``Bad Name``) has none: a typed
    name never becomes a key."""
    if not ENVIRONMENT_RE.match(name):
        return None
    try:
        raw = repository.read(registration_key(name))
    except KeyNotFound:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    data = data if isinstance(data, dict) else {}
    fields = {key: data.get(key) for key in ("kind", "owner", "created", "expires", "like")}
    if not all(isinstance(value, str) and value for value in fields.values()) or parse_iso(fields["expires"]) is None:
        return Registration(name=name, kind=str(fields["kind"] or "env"), owner="unknown (unreadable registration)",
                            created=_LONG_AGO, expires=_LONG_AGO, like=str(fields["like"] or ""))
    return Registration(name=name, **fields)


def write_registration(repository: Repository, registration: Registration, *, new: bool = False) -> None:
    """Store ``registration``; with ``new``, raise AlreadyExists if the name is taken."""
    repository.write(registration_key(registration.name), registration.to_json(), if_absent=new)


def delete_registration(repository: Repository, name: str) -> None:
    repository.delete([registration_key(name)])


def _names(repository: Repository) -> List[str]:
    """The registered names; an object whose name no instance could have is not one."""
    names = (info.key[len(REGISTRATIONS_PREFIX):] for info in repository.list(REGISTRATIONS_PREFIX))
    return [name[:-len(".json")] for name in names if name.endswith(".json") and ENVIRONMENT_RE.match(name[:-5])]


def list_registrations(repository: Repository) -> List[Registration]:
    """Every registration, by name: one listing, then the objects read in parallel."""
    found = parallel_map(lambda name: read_registration(repository, name), _names(repository))
    return [registration for registration in found if registration is not None]


def new_registration(name: str, kind: str, owner: str, like: str, now: dt.datetime,
                     ttl: dt.timedelta) -> Registration:
    return Registration(name=name, kind=kind, owner=owner, created=iso(now), expires=iso(now + ttl), like=like)



@dataclass(frozen=True)
class InstanceInfo:
    """A registered instance and the version its folder holds (``env list``, ``status``)."""

    name: str
    kind: str
    version: Optional[str]
    owner: str
    created: str
    expires: str
    expired: bool
    like: str

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def list_instances(repository: Repository, now: Optional[dt.datetime] = None) -> List[InstanceInfo]:
    """Every on-demand environment and sandbox with the version it holds, by name:
    one listing, then each registration and its folder's manifest read in parallel."""
    now = now or utc_now()

    def read(name: str) -> Optional[InstanceInfo]:
        registration = read_registration(repository, name)
        if registration is None:  # destroyed since the listing
            return None
        try:
            manifest = read_manifest(repository, name)
        except Refused:  # a damaged folder is still listed, without a version
            manifest = None
        return InstanceInfo(name=name, kind=registration.kind, version=manifest.version if manifest else None,
                            owner=registration.owner, created=registration.created, expires=registration.expires,
                            expired=registration.expired(now), like=registration.like)

    return [info for info in parallel_map(read, _names(repository)) if info is not None]
