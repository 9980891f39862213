"""Append-only audit records, and the small summaries kept beside them.

``<repo>/.envpipe/records/<env>/<YYYY-MM-DD>/<UTC stamp>-<action>-<version>.json`` is
written once and never changed. The UTC day folder keeps reading the newest records
cheap however long the history is: ``history`` lists a year's day folders (one
request), then only the newest days. Records written before the day folders
(``<env>/<stamp>-...json``) are still read. So that ``status`` and the promotion gate never have to read the
whole history, two small objects are updated with every record:
``.envpipe/summary/<env>/<action>.json`` (the latest record of each action) and
``.envpipe/results/<env>/<version>.json`` (the latest test of that version there).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, replace
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

from envpipe_agent.ci_context import CIContext
from envpipe_agent.errors import RepositoryError
from envpipe_agent.parallel import parallel_map
from envpipe_agent.redact import Redactor, redact_data
from envpipe_agent.repository import AlreadyExists, KeyNotFound, Repository

RECORDS_PREFIX = ".envpipe/records/"
SUMMARY_PREFIX = ".envpipe/summary/"
RESULTS_PREFIX = ".envpipe/results/"
ACTIONS = ("promote", "apply", "plan", "test", "destroy", "unlock", "override", "create", "extend", "freeze",
           "unfreeze", "bluegreen")
log = logging.getLogger(__name__)
# The fields every reader of a record relies on, and their types: a record without
# them (written by hand, by another tool, or damaged) is skipped with a warning.
_REQUIRED_FIELDS = {"action": str, "environment": str, "result": str, "at": str}
_OPTIONAL_FIELDS = {"version": (str, type(None)), "ci": dict, "outputs": dict, "sensitive_outputs": list,
                    "reason": str, "error": str, "lock": dict}
# Records of the flat layout (before day folders) are looked for over growing windows,
# so that listing stays bounded by the records of the window, not the whole history.
_WINDOWS_DAYS = (1, 7, 31, 366, None)
# history() reads records this many at a time, concurrently.
_READ_BATCH = 20


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def stamp(moment: dt.datetime) -> str:
    """A sortable UTC stamp: ``20261129T054312.123456Z``."""
    return moment.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_iso(text: Any) -> Optional[dt.datetime]:
    """An ISO 8601 time as written by ``iso`` (a naive one is UTC); None when it is none."""
    if not isinstance(text, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def read_json(repository: Repository, key: str) -> Optional[Dict[str, Any]]:
    """The JSON object stored at ``key``; None when absent or anything but an object."""
    try:
        data = json.loads(repository.read(key))
    except KeyNotFound:
        return None
    except ValueError:
        return None  # an unreadable summary is rebuilt by the next record
    # Valid JSON that is no object ([1], "x", null) is as unreadable to every caller,
    # which reads fields from it, as a broken file.
    return data if isinstance(data, dict) else None


def _problem(record: Mapping[str, Any]) -> Optional[str]:
    """What makes ``record`` unlike a record envpipe writes, or None."""
    for name, kind in _REQUIRED_FIELDS.items():
        if not isinstance(record.get(name), kind):
            return f"no {name!r} string" if name not in record else f"{name!r} is not a string"
    for name, kinds in _OPTIONAL_FIELDS.items():
        if name in record and not isinstance(record[name], kinds):
            return f"{name!r} is a {type(record[name]).__name__}"
    return None


def _read_record(repository: Repository, key: str) -> Optional[Dict[str, Any]]:
    """The record (or summary, or result) at ``key``; None, with a warning, when it is
    not one envpipe wrote: readers skip it rather than fail on it."""
    data = read_json(repository, key)
    if data is None:
        return None
    problem = _problem(data)
    if problem is not None:
        log.warning("skipping %s: not a record envpipe wrote (%s)", repository.location(key), problem)
        return None
    return data


@dataclass(frozen=True)
class RecordWriter:
    """Writes the records of one repository and CI context (``StageContext.records``).

    Its redactor (a StageContext's ``record_redactor``: secret values and AWS
    credentials) masks every string of a record's details, at any depth. It has no
    default: a writer cannot be made without one, so no stage can forget to redact
    (SPEC §6).
    """

    repository: Repository
    ci: CIContext
    redactor: Redactor

    def with_secrets(self, values: Iterable[str]) -> "RecordWriter":
        """This writer, masking ``values`` too (an assumed role's credentials)."""
        return replace(self, redactor=self.redactor.with_values(values))

    def write(self, environment: str, action: str, version: Optional[str], result: str,
              details: Optional[Mapping[str, Any]] = None, moment: Optional[dt.datetime] = None) -> Dict[str, Any]:
        """Write one record (never replacing another) and update the summaries."""
        return _write_record(self.repository, environment, action, version, result, self.ci,
                             redact_data(dict(details or {}), self.redactor), moment)


def _write_record(
    repository: Repository,
    environment: str,
    action: str,
    version: Optional[str],
    result: str,
    context: CIContext,
    details: Mapping[str, Any],
    moment: Optional[dt.datetime] = None,
) -> Dict[str, Any]:
    """Write one record, its details already redacted (RecordWriter.write)."""
    moment = moment or utc_now()
    record: Dict[str, Any] = {
        "action": action,
        "environment": environment,
        "version": version,
        "result": result,
        "at": iso(moment),
        "ci": context.as_record(),
    }
    record.update(details)
    if action == "test" and version and result == "passed":
        record["passing_since"] = _passing_since(repository, environment, version, record["at"])
    body = (json.dumps(record, indent=1, sort_keys=True, default=str) + "\n").encode("utf-8")
    for _ in range(5):
        key = record_key(environment, moment, action, version)
        try:
            repository.write(key, body, if_absent=True)
            break
        except AlreadyExists:  # same microsecond as another record: take the next one
            moment += dt.timedelta(microseconds=1)
    else:
        raise RepositoryError(f"cannot write a record for {environment}: {key} and the keys after it exist; "
                              "is the clock of this agent right?")
    record["key"] = key
    _update_summary(repository, environment, action, record)
    if action == "test" and version:
        repository.write(f"{RESULTS_PREFIX}{environment}/{version}.json", body)
    return record


def record_key(environment: str, moment: dt.datetime, action: str, version: Optional[str]) -> str:
    """Where the record of ``action`` at ``moment`` is kept: under its UTC day."""
    day = moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d")
    return f"{RECORDS_PREFIX}{environment}/{day}/{stamp(moment)}-{action}-{version or 'none'}.json"


def _passing_since(repository: Repository, environment: str, version: str, now: str) -> str:
    """Since when ``version`` has passed in ``environment`` with no failure between: the
    start of a soak (SPEC §10), which a re-run that passes again does not restart."""
    previous = latest_test(repository, environment, version)
    if previous and previous.get("result") == "passed":
        return str(previous.get("passing_since") or previous.get("at") or now)
    return now


def _update_summary(repository: Repository, environment: str, action: str, record: Dict[str, Any]) -> None:
    # One small object per (environment, action): updating it is a single write,
    # with no read-modify-write race between agents.
    body = (json.dumps(record, indent=1, sort_keys=True, default=str) + "\n").encode("utf-8")
    repository.write(f"{SUMMARY_PREFIX}{environment}/{action}.json", body)


def read_summary(repository: Repository, environment: str) -> Dict[str, Dict[str, Any]]:
    """The latest record of each action in ``environment`` ({} when none)."""
    prefix = f"{SUMMARY_PREFIX}{environment}/"
    summary = {}
    for info in repository.list(prefix):
        record = _read_record(repository, info.key)
        if record is not None:
            summary[info.key[len(prefix):-len(".json")]] = record
    return summary


def latest_record(repository: Repository, environment: str, action: str) -> Optional[Dict[str, Any]]:
    """The latest record of ``action`` in ``environment`` (one read of its summary), or None."""
    return _read_record(repository, f"{SUMMARY_PREFIX}{environment}/{action}.json")


def latest_test(repository: Repository, environment: str, version: str) -> Optional[Dict[str, Any]]:
    """The latest test record of ``version`` in ``environment``, or None."""
    return _read_record(repository, f"{RESULTS_PREFIX}{environment}/{version}.json")


def version_passed(repository: Repository, environment: str, version: str) -> bool:
    """Whether the latest test of ``version`` in ``environment`` passed (the gate's question)."""
    record = latest_test(repository, environment, version)
    return bool(record and record.get("result") == "passed")


def _keys_of_days(repository: Repository, prefix: str, days: List[str], wanted: int) -> List[str]:
    """Record keys of ``days`` (one year's day folders, newest first), newest first,
    until there are ``wanted``: the newest day, then ranges of 2, 4, 8... days, each
    one listing, so sparse days cost few requests and busy ones are not listed whole."""
    keys: List[str] = []
    start, span = 0, 1
    while start < len(days) and len(keys) < wanted:
        group = days[start:start + span]
        newest, oldest = group[0], group[-1]
        batch = []
        for info in repository.list(prefix + oldest[:5], start_after=prefix + oldest):
            if info.key[len(prefix):len(prefix) + len(newest)] > newest:
                break
            if info.key.endswith(".json"):
                batch.append(info.key)
        keys.extend(reversed(batch))
        start, span = start + span, span * 2
    return keys


def _flat_keys_since(repository: Repository, prefix: str, since: Optional[dt.datetime]) -> List[str]:
    """Keys of the flat layout (``<env>/<stamp>-...json``) after ``since``, oldest first.
    A year's day folders sort just before its flat keys (``2026-`` < ``20260101T``):
    the listing steps over them instead of reading them."""
    keys: List[str] = []
    start_after = f"{prefix}{stamp(since)}" if since else None
    while True:
        for info in repository.list(prefix, start_after=start_after):
            rest = info.key[len(prefix):]
            if "/" in rest:
                start_after = _past_days_of_year(prefix, rest)
                break
            if rest.endswith(".json"):
                keys.append(info.key)
        else:
            return keys


def _flat_keys(repository: Repository, prefix: str, limit: int, now: dt.datetime) -> List[str]:
    """The newest ``limit`` keys of the flat layout, newest first."""
    keys: List[str] = []
    for days in _WINDOWS_DAYS:
        keys = _flat_keys_since(repository, prefix, now - dt.timedelta(days=days) if days else None)
        if len(keys) >= limit:
            break
    return list(reversed(keys[-limit:]))


def _past_days_of_year(prefix: str, rest: str) -> str:
    """The key after every day folder of the year ``rest`` (``2026-11-29/...``) starts with."""
    return f"{prefix}{rest.split('-', 1)[0]}."


def _oldest_year(repository: Repository, prefix: str) -> Tuple[Optional[int], bool]:
    """The year of the oldest record of either layout, and whether any record of the
    flat layout exists (a year's flat keys sort after its day folders: one listing per
    year that has day folders but no flat records, until the first flat key)."""
    oldest_year, start_after = None, None
    while True:
        first = next(iter(repository.list(prefix, start_after=start_after)), None)
        if first is None:
            return oldest_year, False
        rest = first.key[len(prefix):]
        if oldest_year is None and rest[:4].isdigit():
            oldest_year = int(rest[:4])
        if "/" not in rest:
            return oldest_year, True
        start_after = _past_days_of_year(prefix, rest)


def newest_record_keys(repository: Repository, environment: str, limit: int,
                       now: Optional[dt.datetime] = None) -> List[str]:
    """The keys of the newest ``limit`` records of ``environment``, newest first.

    Requests do not grow with the number of records: one listing of this year's day
    folders, then the newest days' records. Earlier years, and the flat layout, are
    only looked at when this year holds fewer than ``limit`` records."""
    prefix = f"{RECORDS_PREFIX}{environment}/"
    now = now or utc_now()
    keys: List[str] = []
    year, oldest_year, flat = now.year, None, False
    while len(keys) < limit:
        days = [folder[len(prefix):-1] for folder in repository.list_folders(f"{prefix}{year:04d}-")]
        keys.extend(_keys_of_days(repository, prefix, days[::-1], limit - len(keys)))
        if len(keys) >= limit:
            break
        if oldest_year is None:
            oldest_year, flat = _oldest_year(repository, prefix)
            if oldest_year is None:
                break
        year -= 1
        if year < oldest_year:
            break
    if flat and len(keys) < limit:
        keys.extend(_flat_keys(repository, prefix, limit, now))
    keys.sort(key=lambda key: key.rsplit("/", 1)[-1], reverse=True)
    return keys[:limit]


def history(repository: Repository, environment: str, limit: int = 20,
            now: Optional[dt.datetime] = None) -> Iterator[Dict[str, Any]]:
    """Up to ``limit`` records of ``environment``, newest first (read a batch at a time,
    concurrently)."""
    if limit <= 0:
        return
    keys = newest_record_keys(repository, environment, limit, now)
    for start in range(0, len(keys), _READ_BATCH):
        batch = keys[start:start + _READ_BATCH]
        for key, record in zip(batch, parallel_map(lambda key: _read_record(repository, key), batch)):
            if record is not None:
                record["key"] = key
                yield record


def record_order(record: Mapping[str, Any]) -> str:
    """What records sort by, later ones higher: the stamp in the record's key (to the
    microsecond), else its 'at' (to the second)."""
    return str(record.get("key") or "").rsplit("/", 1)[-1] or str(record.get("at") or "")


def last_done(repository: Repository, environment: str, action: str, look_back: int = 200) -> Optional[Dict[str, Any]]:
    """The newest record of ``action`` in ``environment`` that completed (result done),
    looking past a newer failed or interrupted one."""
    latest = latest_record(repository, environment, action)
    if latest is None or latest.get("result") == "done":
        return latest
    return next((r for r in history(repository, environment, look_back)
                 if r.get("action") == action and r.get("result") == "done"), None)


def last_applied(repository: Repository, environment: str) -> Optional[Dict[str, Any]]:
    """The record of ``environment``'s last successful apply, unless a destroy came after it."""
    applied = last_done(repository, environment, "apply")
    if applied is None:
        return None
    destroyed = latest_record(repository, environment, "destroy")
    if destroyed and destroyed.get("result") == "done" and record_order(destroyed) > record_order(applied):
        return None
    return applied


def recorded_outputs(repository: Repository, environment: str) -> Dict[str, Any]:
    """The non-sensitive outputs of ``environment``'s last successful apply ({} if none)."""
    record = last_applied(repository, environment)
    if record is None:
        return {}
    sensitive = set(record.get("sensitive_outputs") or ())
    return {name: value for name, value in (record.get("outputs") or {}).items() if name not in sensitive}
