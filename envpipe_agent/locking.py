"""Environment leases: one holder at a time, with an expiry (SPEC §6).

The lock is a conditional create of ``.envpipe/locks/<env>.json`` (S3
``If-None-Match: *``, an exclusive link on a folder), so two agents can never both
hold it. It names its holder and build, and expires so a killed agent cannot
block an environment for ever. A holder renews its lease while it works (a heartbeat
thread), so a long apply keeps the lock however long it runs, and a holder that
finds its lease gone stops before its next piece of work.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import threading
import time
import uuid
from typing import Any, Callable, Dict, Iterator, Optional

from envpipe_agent.ci_context import CIContext
from envpipe_agent.errors import LockHeld, LockLost, RepositoryError, UsageError
from envpipe_agent.records import iso, utc_now
from envpipe_agent.repository import AlreadyExists, KeyNotFound, Repository

LOCKS_PREFIX = ".envpipe/locks/"
# A lease this long, renewed every RENEW_FRACTION of it while its holder works: a
# killed agent's lock runs out within minutes, however long a live apply takes.
DEFAULT_TTL_SECONDS = 15 * 60
# The heartbeat renews the lease this often, as a fraction of its length: three
# renewals can fail in a row (S3 briefly unreachable) before the lease runs out.
RENEW_FRACTION = 0.25
log = logging.getLogger(__name__)


def lock_key(environment: str) -> str:
    return f"{LOCKS_PREFIX}{environment}.json"


_UNREADABLE = {"holder": "unknown (unreadable lock)", "expires": "1970-01-01T00:00:00Z"}


def read_lock(repository: Repository, environment: str) -> Optional[Dict[str, Any]]:
    """The lock on ``environment``, or None; an unreadable lock reads as long expired."""
    try:
        lock = json.loads(repository.read(lock_key(environment)))
    except KeyNotFound:
        return None
    except ValueError:
        return dict(_UNREADABLE)
    return lock if isinstance(lock, dict) else dict(_UNREADABLE)


def lock_expired(lock: Dict[str, Any], now: dt.datetime) -> bool:
    """Whether ``lock``'s lease has run out (an unreadable expiry counts as run out)."""
    try:
        expires = dt.datetime.fromisoformat(str(lock["expires"]).replace("Z", "+00:00"))
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=dt.timezone.utc)
        return expires <= now
    except (KeyError, ValueError, TypeError):
        return True


def _describe(lock: Dict[str, Any]) -> str:
    build = lock.get("build_url") or (f"build {lock['build']}" if lock.get("build") else "no CI build")
    return f"{lock.get('holder', 'unknown')} ({lock.get('action', '?')}, {build}, since {lock.get('acquired', '?')})"


@contextlib.contextmanager
def environment_lock(
    repository: Repository,
    environment: str,
    action: str,
    context: CIContext,
    timeout: float = 0,
    ttl: float = DEFAULT_TTL_SECONDS,
    clock: Callable[[], dt.datetime] = utc_now,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator["Lease"]:
    """Hold ``environment``'s lock for the block; wait up to ``timeout`` seconds for it."""
    if not math.isfinite(timeout) or timeout < 0:  # nan compares false: it would wait for ever
        raise UsageError(f"invalid lock timeout {timeout!r}: give the seconds to wait, a number >= 0")
    lock_id = uuid.uuid4().hex
    start = clock()
    waiting_said = False
    while True:
        now = clock()
        lock = {
            "id": lock_id,
            "environment": environment,
            "action": action,
            "holder": f"{context.user or 'unknown'}@{context.host or context.server}",
            "build": context.build,
            "build_url": context.build_url,
            "acquired": iso(now),
            "expires": iso(now + dt.timedelta(seconds=ttl)),
        }
        try:
            repository.write(lock_key(environment), json.dumps(lock, indent=1).encode(), if_absent=True)
            break
        except RepositoryError:
            # Every attempt failed, but one may have reached S3 (its answer lost): if
            # the lock is there and ours, we hold it; else nobody does, and we say why.
            with contextlib.suppress(RepositoryError):
                current = read_lock(repository, environment)
                if current is not None and current.get("id") == lock_id:
                    lock = current
                    break
            raise
        except AlreadyExists:
            current = read_lock(repository, environment)
            if current is None:
                continue  # released between our create and our read
            if current.get("id") == lock_id:
                # Our create reached the server but its answer was lost, and the
                # retry found our own lock: it is ours, not someone else's.
                lock = current
                break
            if lock_expired(current, now):
                # Two agents may both find it expired. Reading it once more just
                # before the delete makes it very unlikely that one deletes the fresh
                # lock the other has just taken (there is no conditional delete to
                # rule it out); the lock's id tells the two apart.
                if read_lock(repository, environment) == current:
                    log.warning("breaking expired lock on %s held by %s", environment, _describe(current))
                    repository.delete([lock_key(environment)])
                continue
            waited = (now - start).total_seconds()
            if waited >= timeout:
                raise LockHeld(
                    f"environment {environment!r} is locked by {_describe(current)} until "
                    f"{current.get('expires')}; wait for it (--lock-timeout SECONDS) or, if that "
                    f"build is dead, run 'envpipe unlock {environment}'"
                ) from None
            if not waiting_said:  # a CI log then shows why the stage stands still
                log.info("environment %s is locked by %s; waiting up to %gs", environment,
                         _describe(current), timeout)
                waiting_said = True
            sleep(min(5.0, max(0.2, timeout - waited)))
    lease = Lease(repository, environment, lock, ttl, clock)
    heartbeat = threading.Thread(target=lease.heartbeat, args=(ttl * RENEW_FRACTION,),
                                 name=f"envpipe-lease-{environment}", daemon=True)
    heartbeat.start()
    try:
        yield lease
    finally:
        lease.stop()
        heartbeat.join()
        _release(lease, sleep)


# Pauses between attempts to release a lock when S3 keeps failing: a lock left behind
# blocks the environment until its lease runs out, so release tries harder than the
# client's own retries do.
RELEASE_PAUSES = (1.0, 2.0, 4.0)


def _release(lease: "Lease", sleep: Callable[[float], None]) -> None:
    key = lock_key(lease.environment)
    for pause in (*RELEASE_PAUSES, None):
        try:
            # Even an unexpired lease may have been broken ('envpipe unlock') and the
            # lock taken by another run since: delete it only while it is still ours.
            current = read_lock(lease.repository, lease.environment)
            if current and current.get("id") == lease["id"]:
                lease.repository.delete([key])
            return
        except RepositoryError as exc:
            if pause is None:
                # The work is done or has failed on its own account: say so, do not
                # turn its outcome into this error.
                log.warning("envpipe: could not release the lock on %s (%s): it runs out at %s, or run "
                            "'envpipe unlock %s'", lease.environment, exc, lease.record.get("expires"),
                            lease.environment)
                return
            sleep(pause)


class Lease:
    """A held lock: its record (``lease["id"]``), its renewal, and whether it was lost."""

    def __init__(self, repository: Repository, environment: str, record: Dict[str, Any], ttl: float,
                 clock: Callable[[], dt.datetime] = utc_now) -> None:
        self.repository = repository
        self.environment = environment
        self.record = record
        self.ttl = ttl
        self.clock = clock
        self.renewed = time.monotonic()
        self.lost: Optional[str] = None
        self._stopped = threading.Event()

    def __getitem__(self, name: str) -> Any:
        return self.record[name]

    def renew(self) -> bool:
        """Extend the lease by its length from now; False (and ``lost`` says why) when
        the lock is no longer ours. A failed write leaves the lease as it was: the
        next renewal tries again, well before it runs out."""
        if self._taken():
            return False
        started = time.monotonic()
        renewed = dict(self.record, expires=iso(self.clock() + dt.timedelta(seconds=self.ttl)))
        try:
            self.repository.write(lock_key(self.environment), json.dumps(renewed, indent=1).encode())
        except RepositoryError as exc:
            log.warning("could not renew the lock on %s (will retry): %s", self.environment, exc)
            return True
        self.record, self.renewed = renewed, started
        return True

    def _taken(self) -> bool:
        """Whether the lock is no longer this lease's (``lost`` then says who has it)."""
        current = read_lock(self.repository, self.environment)
        if current is not None and current.get("id") == self.record["id"]:
            return False
        who = "nobody" if current is None else _describe(current)
        self.lost = (f"the lock on environment {self.environment!r} was taken from this run "
                     f"(now held by {who}): someone ran 'envpipe unlock' or the lease ran out")
        return True

    def heartbeat(self, interval: float) -> None:
        """Renew every ``interval`` seconds until stopped or lost (the lease's thread)."""
        while not self._stopped.wait(interval):
            try:
                if not self.renew():
                    log.warning("envpipe: %s; stopping before the next step", self.lost)
                    return
            except Exception as exc:  # noqa: BLE001 - a renewal must never kill the thread silently
                log.warning("could not renew the lock on %s (will retry): %s", self.environment, exc)

    def stop(self) -> None:
        self._stopped.set()

    def check(self) -> None:
        """Raise LockLost when the lease was lost, or ran out because S3 refused every
        renewal (anyone may have broken it since): called before each step of work."""
        if self.lost is None and time.monotonic() - self.renewed >= self.ttl:
            self.lost = (f"the lock on environment {self.environment!r} could not be renewed for "
                         f"{self.ttl:g}s and its lease ran out")
        if self.lost is None:
            # The heartbeat notices a broken lock only at its next renewal, minutes away:
            # before a step that changes something, look (one read).
            self._taken()
        if self.lost is not None:
            raise LockLost(f"{self.lost}; stopped before the next step, so nothing more was changed "
                           f"under a lock that is not ours. Check 'envpipe status' and run the stage again")


def break_lock(repository: Repository, environment: str) -> Optional[Dict[str, Any]]:
    """Remove ``environment``'s lock whoever holds it; return what it was."""
    current = read_lock(repository, environment)
    if current is not None:
        repository.delete([lock_key(environment)])
    return current
