"""verify: a version or an environment folder against its manifest, byte for byte.

``check_folder`` is also how apply and test fetch a definition: with a destination it
downloads every file while hashing it, and refuses the whole folder when anything
is missing, extra, altered or unsafe, or when its manifest is another folder's (a
folder copied by hand must not pass for a promoted one).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from envpipe_agent.config import ENVIRONMENT_RE, VERSION_RE
from envpipe_agent.context import StageContext
from envpipe_agent.errors import IntegrityError, NotFound, UnsafePath, UsageError
from envpipe_agent.manifest import CLAIM_KEY, MANIFEST_KEY, Manifest, read_manifest
from envpipe_agent.parallel import parallel_map
from envpipe_agent.paths import check_relative_path, local_path
from envpipe_agent.repository import KeyNotFound, Repository
from envpipe_agent.repository.base import download, stream_sha256

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifyResult:
    target: str
    version: str
    digest: str
    files: int
    missing: List[str] = field(default_factory=list)
    extra: List[str] = field(default_factory=list)
    altered: List[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.altered)

    def as_dict(self) -> Dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def problem(self, location: str) -> str:
        parts = []
        for label, paths in (("missing", self.missing), ("extra", self.extra), ("altered", self.altered)):
            if paths:
                shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
                parts.append(f"{label}: {shown}")
        return f"{location} does not match its manifest ({'; '.join(parts)})"


def check_owner(repository: Repository, folder: str, manifest: Manifest, project: Optional[str] = None) -> None:
    """Refuse a manifest that is not ``folder``'s own.

    Files matching a manifest prove little if the manifest is another folder's: an
    environment folder's must name that environment, a version folder's that version
    and no environment, and both the project (when ``project`` is given).
    """
    location = repository.location(folder)
    # Environment names and versions never look alike (a letter or a digit first), so
    # one comparison covers both: a version's manifest has no environment.
    owner = manifest.environment if manifest.environment is not None else manifest.version
    if ENVIRONMENT_RE.match(folder):
        remedy = f"re-promote a version into it ('envpipe promote VERSION --to {folder}')"
    else:
        remedy = "publish the definition under a new version"
    if owner != folder:
        raise IntegrityError(f"{location} holds the manifest of {owner!r}, not {folder!r}: it was copied there; "
                             f"{remedy}")
    if project is not None and manifest.project != project:
        raise IntegrityError(f"{location} holds a manifest of project {manifest.project!r}, not {project!r}: it "
                             f"was copied from another project's repository; {remedy}")


def _repair(folder: str, manifest: Manifest) -> str:
    """The exact command that restores ``folder``'s files, and what else to do."""
    if manifest.promoting:
        # Nobody changed it by hand: a promote was cut short while it replaced the files.
        started = manifest.promoting
        who = started.get("build_url") or started.get("user") or "unknown"
        return (f"a promote of version {started.get('version')} into it (by {who}, at {started.get('at', '?')}) "
                f"was cut short while copying: complete it with 'envpipe promote {started.get('version')} --to "
                f"{folder}', or go back with 'envpipe promote {manifest.version} --to {folder}'")
    if ENVIRONMENT_RE.match(folder):
        # Promoting the version it holds is a repair: no gate (SPEC §6), recorded as such.
        return (f"repair it with 'envpipe promote {manifest.version} --to {folder}' (the version it holds: no "
                "gate), and find out who changed it")
    return "this version was damaged: publish the definition under a new version, and find out who changed it"


def check_folder(repository: Repository, folder: str, destination: Optional[Path] = None,
                 project: Optional[str] = None) -> Tuple[Manifest, VerifyResult]:
    """Check every file of ``folder`` against its manifest; download into ``destination``
    when given. Raises IntegrityError naming the files when anything differs, or when
    the manifest belongs to another folder or (given ``project``) another project."""
    started = time.monotonic()
    location = repository.location(folder)
    manifest = read_manifest(repository, folder)
    if manifest is None:
        raise NotFound(f"{location} has no manifest: nothing was published or promoted there")
    check_owner(repository, folder, manifest, project)
    prefix = f"{folder}/"
    listed = {}
    for info in repository.list(prefix):
        relative = info.key[len(prefix):]
        if relative in (MANIFEST_KEY, CLAIM_KEY):  # envpipe's own, not the definition's
            continue
        try:
            check_relative_path(relative, location)
        except UnsafePath as exc:
            raise UnsafePath(f"{exc} (found in {location})") from None
        listed[relative] = info
    missing = sorted(set(manifest.files) - set(listed))
    extra = sorted(set(listed) - set(manifest.files))

    def check(path: str) -> Optional[str]:
        expected = manifest.files[path]
        try:
            if destination is not None:
                target = local_path(destination, path, location)
                target.parent.mkdir(parents=True, exist_ok=True)
                size, sha = download(repository, prefix + path, target)
            else:
                size, sha = stream_sha256(repository, prefix + path)
        except KeyNotFound:
            return "missing"
        return None if (size, sha) == (expected.size, expected.sha256) else "altered"

    present = sorted(set(manifest.files) & set(listed))
    outcomes = dict(zip(present, parallel_map(check, present)))
    missing += [p for p, outcome in outcomes.items() if outcome == "missing"]
    altered = [p for p, outcome in outcomes.items() if outcome == "altered"]
    result = VerifyResult(target=folder, version=manifest.version, digest=manifest.digest,
                          files=len(manifest.files), missing=sorted(missing), extra=extra, altered=altered,
                          seconds=time.monotonic() - started)
    if not result.ok:
        raise IntegrityError(result.problem(location) + "; " + _repair(folder, manifest))
    return manifest, result


def verify(ctx: StageContext, target: str) -> VerifyResult:
    """Verify a published version (``1.0.123``) or an environment folder (``staging``)."""
    if ENVIRONMENT_RE.match(target):
        ctx.environment(target)  # a clear error for an unknown environment
    elif not VERSION_RE.match(target) or ".." in target:
        raise UsageError(f"{target!r} is neither a version nor an environment name")
    _, result = check_folder(ctx.repository, target, project=ctx.config.project)
    # The command prints the result; this is for -v and Python callers' logs.
    log.debug("%s: %d files match manifest of version %s", ctx.repository.location(target), result.files,
              result.version)
    return result
