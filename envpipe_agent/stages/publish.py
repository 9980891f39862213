"""publish: copy the definition once into ``<repo>/<version>/`` (SPEC §3).

Before anything is uploaded the version is claimed: a conditional create of
``<version>/.envpipe/claim.json`` holding the content digest. Two publishers of one
version with different content (Jenkins multibranch jobs share BUILD_NUMBER) can then
never mix their files: the second is refused before it writes a byte, while a retry of
the same content finds its own claim and carries on. The manifest is written last, with
a conditional create too, so a version either exists whole or not at all; re-running an
interrupted publish uploads only what is missing.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from envpipe_agent.context import StageContext
from envpipe_agent.errors import ConfigError, UsageError, VersionConflict
from envpipe_agent.manifest import (
    CLAIM_KEY,
    MANIFEST_KEY,
    FileEntry,
    Manifest,
    content_digest,
    manifest_key,
    read_manifest,
)
from envpipe_agent.parallel import background, parallel_map
from envpipe_agent.records import iso, utc_now
from envpipe_agent.pause_points import pause_point
from envpipe_agent.repository import AlreadyExists, KeyNotFound, Repository
from envpipe_agent.source import SourceFile, read_definition

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishResult:
    version: str
    location: str
    digest: str
    files: int
    bytes: int
    uploaded: int
    already_published: bool
    seconds: float

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _refuse_other_content(version: str, published: Optional[Manifest], digest: str,
                          location: str) -> VersionConflict:
    if published is None:  # its manifest appeared and vanished while we looked
        return VersionConflict(
            f"version {version} at {location} changed while publishing (another publisher is at "
            "work, or someone deleted it): check 'envpipe status', then publish again"
        )
    return VersionConflict(
        f"version {version} is already published at {location} with other content "
        f"({published.digest[:19]}…, this source {digest[:19]}…): versions are immutable; "
        "publish under a new version"
    )


def _claimed_by(claim: Dict[str, Any]) -> str:
    """Who holds a claim, as its publisher's CI context tells it."""
    who = claim.get("build_url") or (f"build {claim['build']}" if claim.get("build") else None) \
        or f"{claim.get('user') or 'unknown'}@{claim.get('host') or claim.get('server') or '?'}"
    return f"{who}, at {claim.get('at', '?')}"


def _read_claim(repository: Repository, key: str, version: str) -> Optional[Dict[str, Any]]:
    """The claim's data, or None when it is gone; an unreadable claim is refused."""
    try:
        claim = json.loads(repository.read(key))
    except KeyNotFound:
        return None
    except ValueError:
        claim = None
    if not isinstance(claim, dict) or not isinstance(claim.get("digest"), str):
        raise VersionConflict(f"{repository.location(key)} is unreadable, so nobody can tell which content "
                              f"version {version} belongs to: publish under a new version")
    return claim


def claim_version(ctx: StageContext, version: str, digest: str, listed: bool) -> bool:
    """Take ``version`` for the content ``digest`` before anything is uploaded.

    Returns True when this run created the claim, False when an earlier or a
    concurrent run of the same content holds it. Raises VersionConflict when other
    content holds it: that publisher may still be uploading, and nothing of ours may
    land in its version. ``listed``: the version's listing already showed a claim,
    so reading it saves a failing PUT on a retry.
    """
    repository = ctx.repository
    key = f"{version}/{CLAIM_KEY}"
    location = repository.location(version)
    for _ in range(3):  # a claim deleted between our create and our read is tried again
        if not listed:
            claim = {"digest": digest, "project": ctx.config.project, "version": version, "at": iso(utc_now()),
                     **ctx.ci.known()}
            try:
                repository.write(key, (json.dumps(claim, indent=1, sort_keys=True) + "\n").encode("utf-8"),
                                 if_absent=True)
                return True
            except AlreadyExists:
                pass
        held = _read_claim(repository, key, version)
        if held is None:
            listed = False
            continue
        if held["digest"] == digest:
            return False
        raise VersionConflict(
            f"version {version} at {location} is taken by other content ({held['digest'][:19]}…, this source "
            f"{digest[:19]}…; claimed by {_claimed_by(held)}): versions are immutable, publish under a new "
            "version (if that publish was cut short, re-running it with its own source completes it)"
        )
    raise VersionConflict(f"the claim on version {version} at {location} keeps vanishing: is someone deleting "
                          "the version? Check 'envpipe status', then publish again")


def _check_routers(ctx: StageContext, paths: List[str]) -> None:
    """A blue-green environment's router must be a stack of the same tool in the
    definition (SPEC §9): refused (exit 2) before anything is written."""
    config = ctx.config
    for env in config.environments:
        if env.bluegreen and not env.bluegreen.holds_router(paths, config.tool, config.cloudformation.template):
            raise ConfigError(f"{config.path}: {config.where(env.name)}.bluegreen.router: the definition has no "
                              f"{env.bluegreen.router_stack(config.tool, config.cloudformation.template)}: put "
                              f"the router's {config.tool} stack there, or fix the folder; nothing was published")


def publish(ctx: StageContext, source: Optional[Path] = None, version: Optional[str] = None) -> PublishResult:
    """Publish the definition at ``source`` (default: the config's) as ``version``."""
    started = time.monotonic()
    version = ctx.resolve_version(version)
    repository = ctx.repository
    location = repository.location(version)
    # One listing tells both whether the version exists and what an interrupted
    # earlier run already uploaded. It runs while the source is read and hashed;
    # an unsafe source is still the error reported first.
    prefix = f"{version}/"
    with background() as submit:
        listing = submit(lambda: {info.key[len(prefix):]: info for info in repository.list(prefix)})
        files = read_definition(Path(source) if source else ctx.config.source)
        existing = listing.result()
    _check_routers(ctx, [f.path for f in files])
    digest = content_digest({f.path: f.entry for f in files})
    if ctx.config.tool == "terraform":
        from envpipe_agent.tools.terraform_providers import missing_lock_file

        warning = missing_lock_file({f.path: f.local for f in files})
        if warning:
            log.warning("warning: %s", warning)
    # None also when the manifest was deleted between the listing and the read:
    # then the version does not exist, and this run publishes it.
    published = read_manifest(repository, version) if existing.pop(MANIFEST_KEY, None) else None
    claim_listed = existing.pop(CLAIM_KEY, None) is not None
    if published is not None:
        if published.digest == digest:
            log.info("version %s is already published with this content at %s", version, location)
            return PublishResult(version, location, digest, len(files), sum(f.entry.size for f in files),
                                 0, True, time.monotonic() - started)
        raise _refuse_other_content(version, published, digest, location)
    # Nothing is written into the version, leftovers included, until it is ours.
    claim_version(ctx, version, digest, claim_listed)
    pause_point("publish:claimed", ctx.environ)

    def upload(source_file: SourceFile) -> str:
        try:
            return repository.upload(f"{prefix}{source_file.path}", source_file.local, source_file.entry.size)
        except (KeyNotFound, FileNotFoundError):
            raise UsageError(f"{source_file.local} disappeared while publishing: is something changing "
                             "the working copy? Run publish again") from None

    def already_there(source_file: SourceFile) -> bool:
        info = existing.get(source_file.path)
        return info is not None and info.size == source_file.entry.size and info.etag in source_file.etags

    pending = [f for f in files if not already_there(f)]
    log.info("publishing %s: %d files (%d to upload) to %s", version, len(files), len(pending), location)
    etags = {f.path: existing[f.path].etag for f in files if already_there(f)}
    etags.update(zip((f.path for f in pending), parallel_map(upload, pending)))
    # Left by an interrupted publish of other content from before versions were
    # claimed: not part of this version.
    leftovers = sorted(set(existing) - {f.path for f in files})
    if leftovers:
        repository.delete([prefix + path for path in leftovers])

    entries = {f.path: FileEntry(size=f.entry.size, sha256=f.entry.sha256, etag=etags[f.path]) for f in files}
    published_by = {"at": iso(utc_now()), **ctx.ci.known()}
    manifest = Manifest.build(ctx.config.project, version, entries, published_by)
    pause_point("publish:uploaded", ctx.environ)
    try:
        repository.write(manifest_key(version), manifest.to_json(), if_absent=True)
    except AlreadyExists:  # another publisher of the same version finished first
        published = read_manifest(repository, version)
        if published is None or published.digest != digest:
            raise _refuse_other_content(version, published, digest, location) from None
    return PublishResult(version, location, digest, len(files), sum(f.entry.size for f in files),
                         len(pending), False, time.monotonic() - started)
