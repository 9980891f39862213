"""The status page: one self-contained HTML file showing the path to production.

Jenkins publishes it (HTML Publisher) and GoCD shows it as an artifact tab, so it
has no external resources: styles are inline, there is no script. Like ``status``,
it reads only the environment manifests, summaries and the current version's test
result, so its cost does not grow with the number of versions or records.
"""
from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence
from urllib.parse import urlsplit

import jinja2

from envpipe_agent.context import StageContext
from envpipe_agent.files import prepare_named_file, write_named_file
from envpipe_agent.records import iso, latest_test, record_order, utc_now
from envpipe_agent.stages.status import on_demand_status, status

TEMPLATE = "status.html.j2"
RECENT_CHANGES = 15


def _link(url: Optional[str]) -> Optional[str]:
    """Only http(s) URLs become links: a record is data, not a place for ``javascript:``."""
    if not url or not isinstance(url, str):
        return None
    return url if urlsplit(url).scheme in ("http", "https") else None


def _when(stamp: Any) -> str:
    """``2026-11-29T05:54:27Z`` → ``2026-11-29 05:54:27 UTC``; anything else as it is
    (a manifest's promotion data is written by whoever promoted)."""
    if stamp is None or stamp == "":
        return ""
    if not isinstance(stamp, str):
        return str(stamp)
    return stamp.replace("T", " ").replace("Z", " UTC")


def _environment_view(ctx: StageContext, entry: Mapping[str, Any]) -> Dict[str, Any]:
    version = entry["version"]
    last = entry.get("last") or {}
    applied = last.get("apply")
    # What counts is the current version's state; a record of an older version is history.
    if applied and applied.get("version") != version:
        applied = None
    tested = latest_test(ctx.repository, entry["environment"], version) if version else None
    if version is None:
        state = "empty"
    elif tested:
        state = tested.get("result") or "unknown"
    elif applied:
        state = "applied" if applied.get("result") != "failed" else "failed"
    else:
        state = "promoted"
    return {**entry, "applied": applied, "tested": tested, "state": state}


def _recent(entries: Sequence[Mapping[str, Any]], limit: int) -> List[Dict[str, Any]]:
    """The newest records across environments, from the per-environment summaries."""
    records = [dict(record) for entry in entries for record in (entry.get("last") or {}).values()]
    # The key's file name starts with a microsecond stamp: a finer order than "at".
    records.sort(key=record_order, reverse=True)
    return records[:limit]


def _environment() -> jinja2.Environment:
    source = importlib.resources.files("envpipe_agent.templates").joinpath(TEMPLATE).read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True,
                             loader=jinja2.DictLoader({TEMPLATE: source}))
    env.filters["link"] = _link
    env.filters["when"] = _when
    return env


def render_status_page(ctx: StageContext, entries: Optional[Sequence[Mapping[str, Any]]] = None,
                       instances: Optional[Sequence[Mapping[str, Any]]] = None) -> str:
    """The page's HTML; ``entries`` are ``status(ctx)``'s and ``instances``
    ``on_demand_status(ctx)``'s, read here when not given."""
    entries = list(entries if entries is not None else status(ctx))
    instances = list(instances if instances is not None else on_demand_status(ctx))
    html = _environment().get_template(TEMPLATE).render(
        project=ctx.config.project,
        description=ctx.config.description,
        repository=ctx.repository.location(),
        generated=_when(iso(utc_now())),
        environments=[_environment_view(ctx, entry) for entry in entries],
        recent=_recent(entries, RECENT_CHANGES),
        instances=instances,
    )
    return ctx.redactor(html)


def write_status_page(ctx: StageContext, path: Path, entries: Optional[Sequence[Mapping[str, Any]]] = None,
                      instances: Optional[Sequence[Mapping[str, Any]]] = None) -> Path:
    """Write the page to ``path`` in one step and return the path."""
    path = prepare_named_file(path, "--html")
    return write_named_file(path, render_status_page(ctx, entries, instances), "--html")
