"""sandbox up|test|destroy: a developer's own instance of the working copy (SPEC §9).

Nothing is published. The working copy is read and checked exactly as publish checks
it (state, keys, ``.env`` files, links out of the folder; ``.envpipeignore``), then
uploaded straight into the sandbox's folder ``<repo>/NAME/``, only the files that
changed since the last ``up``, with a manifest written last whose version is
``wc-<first 12 hex digits of the content digest>``: ``status`` and ``env list`` show
which working copy is applied. From there on a sandbox is an on-demand instance like
any other: registered, applied and tested by the ordinary stages, its state in the
repository, reaped when it expires.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from envpipe_agent.context import StageContext
from envpipe_agent.errors import EnvpipeError, NotFound, Refused, UsageError
from envpipe_agent.locking import environment_lock
from envpipe_agent.manifest import MANIFEST_KEY, FileEntry, Manifest, content_digest, manifest_key, read_manifest
from envpipe_agent.parallel import parallel_map
from envpipe_agent.paths import check_relative_path
from envpipe_agent.records import iso, utc_now
from envpipe_agent.registrations import read_registration
from envpipe_agent.source import SourceFile, read_definition
from envpipe_agent.stages.apply import StageResult, apply
from envpipe_agent.stages.ondemand import DestroyResult, destroy, parse_ttl, register
from envpipe_agent.stages.testing import TestResult, run_tests
from envpipe_agent.tools.base import ToolRunner

log = logging.getLogger(__name__)

WORKING_COPY_PREFIX = "wc-"


@dataclass
class SandboxResult:
    name: str
    version: str
    expires: str
    registered: bool
    uploaded: int
    deleted: int
    unchanged: int
    applied: StageResult
    tested: Optional[TestResult] = None
    seconds: float = 0.0

    def as_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "version": self.version, "expires": self.expires, "registered": self.registered,
                "uploaded": self.uploaded, "deleted": self.deleted, "unchanged": self.unchanged,
                "applied": self.applied.as_dict(), "tested": self.tested.as_dict() if self.tested else None,
                "seconds": round(self.seconds, 3)}


def default_name(user: Optional[str]) -> str:
    """``sandbox-<user>``, the user's name made a valid environment name."""
    user = re.sub(r"[^a-z0-9-]+", "-", (user or "unknown").lower()).strip("-") or "unknown"
    return f"sandbox-{user}"[:63].rstrip("-")


def working_copy_version(digest: str) -> str:
    """``wc-`` and the first 12 hex digits of a content digest (``sha256:...``)."""
    return WORKING_COPY_PREFIX + digest.split(":", 1)[-1][:12]


def _sandbox(ctx: StageContext, name: Optional[str]) -> str:
    """The name of an existing sandbox (not an on-demand environment)."""
    name = name or default_name(ctx.ci.user)
    registration = read_registration(ctx.repository, name)
    if registration is None:
        raise NotFound(f"no sandbox named {name!r}: bring one up with 'envpipe sandbox up {name}' "
                       "('envpipe env list' shows what exists)")
    if registration.kind != "sandbox":
        raise UsageError(f"{name!r} is an on-demand environment, not a sandbox: use 'envpipe env ...' for it")
    return name


def upload_working_copy(ctx: StageContext, name: str, files: List[SourceFile], source: Path) -> Dict[str, Any]:
    """Make ``<repo>/NAME/`` hold exactly ``files``, uploading only what changed, under
    NAME's lock; the manifest is written last, so a cut-short upload fails verification
    instead of passing for a working copy."""
    repository = ctx.repository
    prefix = f"{name}/"
    digest = content_digest({f.path: f.entry for f in files})
    version = working_copy_version(digest)
    with environment_lock(repository, name, "upload", ctx.ci, timeout=ctx.lock_timeout) as lease:
        listing = {}
        for info in repository.list(prefix):
            relative = info.key[len(prefix):]
            check_relative_path(relative, repository.location(prefix))
            listing[relative] = info
        try:
            previous = read_manifest(repository, name) if listing.pop(MANIFEST_KEY, None) else None
        except Refused:
            previous = None  # a damaged manifest is replaced
        unchanged = [f for f in files if f.path in listing and listing[f.path].size == f.entry.size
                     and listing[f.path].etag in f.etags]
        kept = {f.path for f in unchanged}
        pending = [f for f in files if f.path not in kept]
        stale = sorted(set(listing) - {f.path for f in files})
        counts = {"uploaded": len(pending), "deleted": len(stale), "unchanged": len(unchanged)}
        if not pending and not stale and previous is not None and previous.digest == digest \
                and previous.environment == name and previous.project == ctx.config.project:
            log.info("%s already holds this working copy (%s): nothing to upload", name, version)
            return {**counts, "version": version}
        log.info("%s: uploading the working copy as %s: %d to upload, %d to delete, %d unchanged", name, version,
                 len(pending), len(stale), len(unchanged))
        tags = {f.path: listing[f.path].etag for f in unchanged}
        tags.update(zip((f.path for f in pending),
                        parallel_map(lambda f: repository.upload(prefix + f.path, f.local, f.entry.size), pending)))
        if stale:
            repository.delete([prefix + path for path in stale])
        at = iso(utc_now())
        by = ctx.ci.known()
        entries = {f.path: FileEntry(size=f.entry.size, sha256=f.entry.sha256, etag=tags[f.path]) for f in files}
        manifest = Manifest.build(ctx.config.project, version, entries,
                                  {"at": at, "working_copy": str(source), **by})
        lease.check()
        repository.write(manifest_key(name), manifest.for_environment(name, entries, {"at": at, **by}).to_json())
        ctx.records.write(name, "promote", version, "done",
                          {"digest": digest, "working_copy": str(source), **counts})
    return {**counts, "version": version}


def up(ctx: StageContext, name: Optional[str] = None, source: Optional[Path] = None, ttl: Optional[str] = None,
       test: bool = False, runner: Optional[ToolRunner] = None) -> SandboxResult:
    """Bring the sandbox ``name`` (default ``sandbox-<user>``) to the working copy at
    ``source`` (default: the config's) and apply it; with ``test``, test it too."""
    started = time.monotonic()
    name = name or default_name(ctx.ci.user)
    lifetime = parse_ttl(ctx, ttl) if ttl is not None else None
    source = Path(source) if source else ctx.config.source
    # The working copy is checked before anything is registered or written.
    files = read_definition(source)
    registration, registered = register(ctx, name, "sandbox", lifetime)
    counts = upload_working_copy(ctx, name, files, source)
    applied = apply(ctx, name, runner=runner)
    tested = run_tests(ctx, name) if test else None
    return SandboxResult(name=name, version=counts["version"], expires=registration.expires, registered=registered,
                         uploaded=counts["uploaded"], deleted=counts["deleted"], unchanged=counts["unchanged"],
                         applied=applied, tested=tested, seconds=time.monotonic() - started)


def run_sandbox_tests(ctx: StageContext, name: Optional[str] = None, source: Optional[Path] = None,
                      junit: Optional[Path] = None) -> TestResult:
    """Run the tests against the sandbox: the suite of the working copy its last ``up``
    applied, which is what its infrastructure runs. An edited working copy is named."""
    name = _sandbox(ctx, name)
    held = read_manifest(ctx.repository, name)
    source = Path(source) if source else ctx.config.source
    try:
        current = working_copy_version(content_digest({f.path: f.entry for f in read_definition(source)}))
    except EnvpipeError:  # no working copy here, or one that would be refused: nothing to compare
        current = None
    if held is not None and current is not None and current != held.version:
        log.warning("%s: the working copy (%s) changed since the last 'sandbox up' (%s): testing what is "
                    "applied; run 'envpipe sandbox up' to apply the edits", name, current, held.version)
    return run_tests(ctx, name, junit=junit)


def destroy_sandbox(ctx: StageContext, name: Optional[str] = None, keep_workdir: bool = False,
                    runner: Optional[ToolRunner] = None) -> DestroyResult:
    """As ``env destroy``, for a sandbox."""
    return destroy(ctx, _sandbox(ctx, name), keep_workdir=keep_workdir, runner=runner)
