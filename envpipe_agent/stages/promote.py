"""promote: make an environment's folder hold exactly one version (SPEC §3, §6).

Files are compared by content, never by timestamp: an environment object is kept
only when its size and tag equal those the version recorded for that file; every
other file is copied server-side, stale files are deleted, and the environment's
manifest is written last. Rolling back or promoting out of order therefore always
ends with exactly the chosen version's bytes.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from dataclasses import asdict, dataclass, replace
from types import MappingProxyType
from typing import Any, Dict, List, Optional, Tuple

from envpipe_agent.approval import approver
from envpipe_agent.config import Environment
from envpipe_agent.context import StageContext
from envpipe_agent.errors import GateNotPassed, IntegrityError, NotFound, Refused, Terminated, UsageError
from envpipe_agent.instances import refuse_bluegreen_target
from envpipe_agent.locking import Lease, environment_lock
from envpipe_agent.manifest import MANIFEST_KEY, FileEntry, Manifest, manifest_key, read_manifest
from envpipe_agent.parallel import background, parallel_map
from envpipe_agent.paths import check_relative_path
from envpipe_agent.pause_points import pause_point
from envpipe_agent.policy import Hold, enforce_policy, gate_hold, override_details, policy_holds
from envpipe_agent.records import iso, last_done, latest_record, record_order, utc_now
from envpipe_agent.repository import KeyNotFound

log = logging.getLogger(__name__)

# What a promotion's data says about a gate overridden to let its version in.
FORCED_KEYS = ("forced", "reason", "gate", "forced_by", "overridden", "holds")


@dataclass(frozen=True)
class PromoteResult:
    environment: str
    version: str
    previous_version: Optional[str]
    copied: int
    deleted: int
    unchanged: int
    forced: bool
    seconds: float
    repair: bool = False  # the version the environment already held, promoted again without the gate
    approved_by: Optional[str] = None  # who approved it, for an approval: manual environment
    overridden: Tuple[str, ...] = ()  # with forced: "gate", "freeze", "soak", "window"

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """``was 1.0.1; 2 copied, 0 deleted, 3 unchanged``: what the promote did."""
        return (f"was {self.previous_version or 'empty'}; {self.copied} copied, {self.deleted} deleted, "
                f"{self.unchanged} unchanged"
                + (f"; {' and '.join(self.overridden or ('gate',))} overridden, recorded" if self.forced else "")
                + ("; a repair, recorded" if self.repair else "")
                + (f"; approved by {self.approved_by}" if self.approved_by else ""))


def load_version(ctx: StageContext, version: str) -> Manifest:
    """The published manifest of ``version``; a clear error when it is not published."""
    manifest = read_manifest(ctx.repository, version)
    if manifest is None:
        raise NotFound(
            f"version {version} is not published in {ctx.repository.location()}: "
            "run 'envpipe publish' first, or 'envpipe status' to see what is there"
        )
    if manifest.version != version:
        raise IntegrityError(
            f"{ctx.repository.location(version)} holds the manifest of version {manifest.version}, "
            f"not {version}: it was copied or edited; publish the definition under a new version"
        )
    if manifest.project != ctx.config.project:
        raise Refused(
            f"version {version} in {ctx.repository.location()} belongs to project "
            f"{manifest.project!r}, not {ctx.config.project!r}: check 'repository' in envpipe.yml"
        )
    return manifest


def check_gate(ctx: StageContext, environment: str, version: str, force: bool) -> Optional[str]:
    """Refuse unless ``version`` passed its tests in the environment before this one.

    Returns the environment whose gate was overridden with ``force``, if any.
    """
    hold = gate_hold(ctx.config, ctx.repository, environment, version)
    if hold is None:
        return None
    previous = ctx.config.previous_environment(environment)
    if force:
        return previous.name if previous else None
    raise GateNotPassed(f"{hold.reason}; or override with "
                        f"'envpipe promote {version} --to {environment} --force --reason \"...\"'")


def _repaired(ctx: StageContext, environment: str, version: str) -> Optional[Dict[str, Any]]:
    """How ``environment`` came to hold ``version``, if it holds it: then promoting it again
    is a repair (a hand edit, an interrupted promote), and the version went through the
    gate once already, so the gate is not asked again (SPEC §6). Read only when the gate
    would refuse or is overridden, so an ordinary promote makes no extra request.

    What it holds is its own manifest's version, else (the manifest deleted or damaged by
    hand) its last completed promote's, unless a destroy emptied it since. The result
    carries the promotion's data: who, and whether and why it was forced."""
    manifest = _previous_manifest(ctx, environment)
    if manifest is not None and manifest.environment == environment and manifest.project == ctx.config.project:
        held = {**(manifest.promoted or {}), "version": manifest.version}
    else:
        held = last_done(ctx.repository, environment, "promote")
        destroyed = latest_record(ctx.repository, environment, "destroy") if held else None
        if destroyed and destroyed.get("result") == "done" and record_order(destroyed) > record_order(held):
            held = None
    return held if held and held.get("version") == version else None


def _previous_manifest(ctx: StageContext, environment: str) -> Optional[Manifest]:
    """The environment's current manifest; a damaged one is replaced, not a reason to stop."""
    try:
        return read_manifest(ctx.repository, environment)
    except Refused as exc:
        log.warning("ignoring the damaged manifest of %s (%s); promote rewrites it", environment, exc)
        return None


@dataclass(frozen=True)
class _Folder:
    """An environment folder as listed: its objects by relative path, and its manifest."""

    listing: Dict[str, Any]
    previous: Optional[Manifest]


def _read_folder(ctx: StageContext, environment: str) -> _Folder:
    repository = ctx.repository
    prefix = f"{environment}/"
    listing = {}
    previous_read = None
    with background() as submit:
        for info in repository.list(prefix):
            relative = info.key[len(prefix):]
            check_relative_path(relative, repository.location(prefix))
            if relative == MANIFEST_KEY:
                # It sorts first ('.' precedes digits and letters): read it while
                # the rest of the listing pages in, instead of one round trip after.
                previous_read = submit(_previous_manifest, ctx, environment)
                continue
            listing[relative] = info
        previous = previous_read.result() if previous_read else None
    return _Folder(listing, previous)


def _changes(folder: _Folder, environment: str, manifest: Manifest) -> Tuple[List[str], List[str], bool]:
    """(files to copy, stale files to delete, whether the folder already is ``manifest``'s)."""
    listing, previous = folder.listing, folder.previous

    def current(path: str, entry: FileEntry) -> bool:
        """Does the environment's object already hold this file's content?"""
        info = listing.get(path)
        if info is None or info.size != entry.size:
            return False
        if entry.etag is not None and info.etag == entry.etag:
            return True
        # A server-side copy may carry another tag than its source (the copy of a
        # multipart upload does): the environment manifest remembers the tag each
        # object got when it was copied, and which content that was.
        held = previous.files.get(path) if previous else None
        return (held is not None and held.etag is not None and held.etag == info.etag
                and (held.size, held.sha256) == (entry.size, entry.sha256))

    to_copy = sorted(p for p, e in manifest.files.items() if not current(p, e))
    stale = sorted(set(listing) - set(manifest.files))
    # A folder copied by hand holds the right files under another folder's manifest
    # (no environment, or another one): that is not "already promoted", and promoting
    # again is how it is repaired, so only the environment's own manifest makes a no-op;
    # one marked with an unfinished promote is rewritten without the mark.
    done = (not to_copy and not stale and previous is not None and previous.digest == manifest.digest
            and previous.version == manifest.version and previous.environment == environment
            and previous.project == manifest.project and not previous.promoting)
    return to_copy, stale, done


def _still(ctx: StageContext, environment: str, folder: Optional[_Folder]) -> _Folder:
    """``folder`` as read before the lock, when it is still what the folder holds; else read
    again. Every promote marks the manifest before it changes a file, and destroy removes
    it, so an unchanged manifest means unchanged files. An empty folder has no manifest
    to mark: it is listed again."""
    if folder is None or folder.previous is None:
        return _read_folder(ctx, environment)
    now = _previous_manifest(ctx, environment)
    if now is not None and now.to_json() == folder.previous.to_json():
        return folder
    return _read_folder(ctx, environment)


def sync_environment(ctx: StageContext, environment: str, manifest: Manifest,
                     promoted: Dict[str, Any], lease: Optional[Lease] = None,
                     folder: Optional[_Folder] = None) -> Dict[str, Any]:
    """Make ``<environment>/`` hold exactly ``manifest``'s files; write its manifest last.
    ``folder``: the folder as read before the lock was taken, re-checked here."""
    repository = ctx.repository
    prefix = f"{environment}/"
    folder = _still(ctx, environment, folder)
    listing, previous = folder.listing, folder.previous
    to_copy, stale, done = _changes(folder, environment, manifest)
    counts = {"previous_version": previous.version if previous else None, "copied": len(to_copy),
              "deleted": len(stale), "unchanged": len(manifest.files) - len(to_copy)}
    if done:
        log.info("%s already holds version %s: nothing to do", environment, manifest.version)
        return {**counts, "noop": True}

    log.info("promoting %s to %s: %d to copy, %d to delete, %d unchanged",
             manifest.version, environment, len(to_copy), len(stale), counts["unchanged"])
    if previous is not None and previous.environment == environment:
        # Said before the first file changes: a promote killed from here on leaves a
        # folder whose manifest tells status and verify what happened and how to repair.
        marked = replace(previous, promoting=MappingProxyType({
            "version": manifest.version, "digest": manifest.digest,
            **{k: v for k, v in promoted.items() if k in ("at", "user", "host", "build", "build_url")}}))
        repository.write(manifest_key(environment), marked.to_json())
    pause_point("promote:copying", ctx.environ)

    def copy(path: str) -> str:
        try:
            return repository.copy(f"{manifest.version}/{path}", prefix + path, manifest.files[path].size)
        except KeyNotFound:
            raise IntegrityError(
                f"{repository.location(manifest.version + '/' + path)} is listed in the manifest of version "
                f"{manifest.version} but missing: the version was damaged; publish a new version"
            ) from None

    with background() as submit:
        # Stale files go while the copies run: the environment's manifest, written
        # last, is what marks the folder complete, so the order does not matter.
        deleting = submit(repository.delete, [prefix + path for path in stale]) if stale else None
        etags = dict(zip(to_copy, parallel_map(copy, to_copy)))
        if deleting is not None:
            deleting.result()
    files = {
        path: FileEntry(size=entry.size, sha256=entry.sha256,
                        etag=etags.get(path, listing[path].etag if path in listing else entry.etag))
        for path, entry in manifest.files.items()
    }
    if previous is not None and previous.environment == environment and previous.version == manifest.version \
            and not promoted.get("forced"):
        # A repair: the version is still the one a person forced in, if one did.
        promoted = {**{k: v for k, v in (previous.promoted or {}).items() if k in FORCED_KEYS}, **promoted}
    environment_manifest = manifest.for_environment(environment, files, promoted)
    pause_point("promote:copied", ctx.environ)
    if lease is not None:
        lease.check()  # the manifest marks the folder complete: only under a lock still ours
    repository.write(manifest_key(environment), environment_manifest.to_json())
    return {**counts, "noop": False}


@dataclass(frozen=True)
class PromotionCheck:
    """What promoting ``version`` into ``environment`` would meet now (``--check``)."""

    environment: str
    version: str
    holds: Tuple[Hold, ...]

    @property
    def allowed(self) -> bool:
        return not self.holds

    def as_dict(self) -> Dict[str, Any]:
        return {"environment": self.environment, "version": self.version, "allowed": self.allowed,
                "holds": [hold.as_dict() for hold in self.holds]}


def check_promotion(ctx: StageContext, environment: str, version: Optional[str] = None,
                    now: Optional[dt.datetime] = None) -> PromotionCheck:
    """The gate and the policy for promoting ``version`` into ``environment`` now; changes
    nothing and takes no lock, so a pipeline can ask before it asks a person."""
    env = ctx.environment(environment)
    version = ctx.resolve_version(version, f"give the version: envpipe promote VERSION --to {env.name} --check")
    load_version(ctx, version)
    if not env.on_path:
        return PromotionCheck(env.name, version, ())  # an on-demand instance has no gate and no policy
    gate = gate_hold(ctx.config, ctx.repository, env.name, version)
    if gate is not None and _repaired(ctx, env.name, version) is not None:
        gate = None  # a repair of what the environment holds is not asked the gate again
    holds = policy_holds(ctx.config, ctx.repository, env.name, version, now or utc_now(), "promote")
    return PromotionCheck(env.name, version, tuple(([gate] if gate else []) + holds))


def _admitted(ctx: StageContext, env: Environment, version: str, force: bool, approved_by: Optional[str],
              now: Optional[dt.datetime]) -> Tuple[Optional[str], Manifest, Optional[str], Optional[Dict[str, Any]],
                                                   List[Hold]]:
    """What lets ``version`` into ``env``: the approver, the version's manifest, the gate
    overridden (if any), the promotion a repair keeps (if any) and the policy holds
    overridden. Raises the refusal when something does not let it in."""
    who = approver(env, "promote", ctx.environ, approved_by)
    with background(threads=2) as submit:
        # The gate's test result and the policy's freeze are read alongside the version's
        # manifest (one round trip, not three); a missing version is still the error
        # reported first, then the gate, then the policy (SPEC §10: after the gate). An
        # instance off the path (on-demand, sandbox) has neither gate nor policy.
        gate = submit(check_gate, ctx, env.name, version, force) if env.on_path else None
        policy = submit(enforce_policy, ctx.config, ctx.repository, env.name, version, now or utc_now(),
                               "promote", force) if env.on_path else None
        manifest = load_version(ctx, version)
        try:
            overridden = gate.result() if gate else None
            held = _repaired(ctx, env.name, version) if overridden else None
        except GateNotPassed:
            held = _repaired(ctx, env.name, version)
            if held is None:
                raise
        if held is not None:
            overridden = None
            if force:
                log.warning("%s already holds version %s: promoting it again is a repair and needs no "
                            "gate override", env.name, version)
        held_by = policy.result() if policy else []
    return who, manifest, overridden, held, held_by


def promote(ctx: StageContext, environment: str, version: Optional[str] = None,
            force: bool = False, reason: Optional[str] = None, approved_by: Optional[str] = None,
            now: Optional[dt.datetime] = None) -> PromoteResult:
    """Promote ``version`` (default: this build's) into ``environment``.

    An ``approval: manual`` environment needs an approver (``approved_by`` or
    ENVPIPE_APPROVER), recorded with the promotion."""
    started = time.monotonic()
    if force and not (reason and reason.strip()):
        raise UsageError("--force needs --reason TEXT saying why the gate or policy is overridden")
    env = ctx.environment(environment)
    refuse_bluegreen_target(env, "promote")
    version = ctx.resolve_version(version, f"give the version: envpipe promote VERSION --to {env.name}")
    with background() as submit:
        # The environment's folder is read while the promotion is admitted: when it
        # already holds the version (a retried stage), nothing is locked or written.
        folder_read = submit(_read_folder, ctx, env.name)
        try:
            who, manifest, overridden, held, held_by = _admitted(ctx, env, version, force, approved_by, now)
        except Refused as exc:
            # Refused before anything changed (approval, gate, policy, a damaged version):
            # on the record all the same, so history shows who tried what, and why not.
            try:
                ctx.records.write(env.name, "promote", version, "refused", {"error": str(exc)})
            except Exception as problem:  # noqa: BLE001 - the refusal is what the user must see
                log.warning("%s: could not record the refused promote: %s", env.name, problem)
            raise
        folder = folder_read.result()
    if _changes(folder, env.name, manifest)[2]:
        log.info("%s already holds version %s: nothing to do, nothing locked", env.name, version)
        return PromoteResult(env.name, version, version, 0, 0, len(manifest.files), False,
                             time.monotonic() - started, approved_by=who)
    # What a forced promotion overrode: on the manifest, the promote record and the override record.
    forced: Dict[str, Any] = {}
    if overridden or held_by:
        forced = {"forced": True, "reason": reason, **({"gate": overridden} if overridden else {}),
                  "forced_by": ctx.ci.user, **override_details(held_by, *(["gate"] if overridden else []))}
    with environment_lock(ctx.repository, env.name, "promote", ctx.ci, timeout=ctx.lock_timeout) as lease:
        promoted = {"at": iso(utc_now()), **ctx.ci.known(), **({"approved_by": who} if who else {})}
        if forced:
            promoted.update(forced)
        elif held:
            # Still the version a person forced in, if one did: status keeps saying so.
            promoted.update({key: held[key] for key in FORCED_KEYS if key in held})
        try:
            # Checked again under the lock: another agent may have promoted meanwhile.
            outcome = sync_environment(ctx, env.name, manifest, promoted, lease, folder)
        except KeyboardInterrupt as exc:
            # Cut short while copying (Ctrl-C, an aborted build): the folder may hold
            # part of the version under the old manifest, so it fails verification
            # until a promote completes. Leave a trace for status while the lock is held.
            how = "SIGTERM" if isinstance(exc, Terminated) else "SIGINT"
            with contextlib.suppress(Exception):
                ctx.records.write(env.name, "promote", version, "interrupted", {
                    "digest": manifest.digest, "signal": how,
                    "error": f"interrupted ({how}) while copying: {env.name}'s folder may hold part of version "
                             f"{version}; promote it again to complete it",
                    **forced,
                })
            raise
        if outcome["noop"]:  # nothing changed, so nothing to record
            return PromoteResult(env.name, version, outcome["previous_version"], 0, 0, outcome["unchanged"],
                                 False, time.monotonic() - started, approved_by=who)
        # Promoting the version the environment already holds repairs its folder (a
        # hand edit, an interrupted promote): recorded as such.
        repair = held is not None or outcome["previous_version"] == version
        details = {"digest": manifest.digest, **outcome, **({"repair": True} if repair else {}),
                   **({"approved_by": who} if who else {})}
        if forced:
            details.update(forced)
            ctx.records.write(env.name, "override", version, "forced", {**forced, "overrides": "promote"})
        ctx.records.write(env.name, "promote", version, "done", details)
    return PromoteResult(env.name, version, outcome["previous_version"], outcome["copied"], outcome["deleted"],
                         outcome["unchanged"], bool(forced), time.monotonic() - started, repair, who,
                         tuple(forced.get("overridden", ())))
