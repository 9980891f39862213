"""The manifest: what a version (or an environment folder) holds, file by file.

``<repo>/<version>/.envpipe/manifest.json`` is written last by publish: a version
without it does not exist. An environment folder's manifest is the promoted version's
manifest plus the promotion data, and per file the tag of the object in that folder.

``check_folder`` checks a folder against its manifest (``envpipe verify``) and is how
apply and test fetch a definition: with a destination it downloads every file while
hashing it, and refuses the whole folder when anything is missing, extra, altered or
unsafe, or when its manifest is another folder's (a folder copied by hand must not
pass for a promoted one).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Dict, List, Mapping, Optional, Tuple

from envpipe_agent.config import ENVIRONMENT_RE
from envpipe_agent.errors import IntegrityError, NotFound, UnsafePath, VersionMismatch
from envpipe_agent.parallel import background, parallel_map
from envpipe_agent.paths import check_relative_path, local_path
from envpipe_agent.repository import KeyNotFound, Repository
from envpipe_agent.repository.base import download, stream_sha256

MANIFEST_KEY = ".envpipe/manifest.json"
# Written first by publish (a conditional create holding the content digest): the
# version's number is taken by that content. It is not the manifest: a version
# with a claim but no manifest still does not exist.
CLAIM_KEY = ".envpipe/claim.json"
RESERVED_PREFIX = ".envpipe/"
FORMAT = 1


@dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str
    # The backend's tag of the stored object (S3 ETag, local MD5): lets promote see
    # that an environment file already holds this content without reading it.
    etag: Optional[str] = None

    def as_dict(self) -> Dict[str, Any]:
        data: Dict[str, Any] = {"size": self.size, "sha256": self.sha256}
        if self.etag:
            data["etag"] = self.etag
        return data


def content_digest(files: Mapping[str, FileEntry]) -> str:
    """One SHA-256 over every (path, size, sha256): equal digests, equal content."""
    sha = hashlib.sha256()
    for path in sorted(files):
        entry = files[path]
        sha.update(f"{path}\0{entry.size}\0{entry.sha256}\n".encode("utf-8"))
    return "sha256:" + sha.hexdigest()


@dataclass(frozen=True)
class Manifest:
    project: str
    version: str
    files: Mapping[str, FileEntry]
    digest: str
    published: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    environment: Optional[str] = None
    promoted: Optional[Mapping[str, Any]] = None
    # Set on an environment's manifest while a promote replaces its files (which
    # version, when, by whom); the promote's own manifest, written last, has none. Found
    # set, it says the folder holds part of that version: the promote was cut short.
    promoting: Optional[Mapping[str, Any]] = None

    @classmethod
    def build(cls, project: str, version: str, files: Mapping[str, FileEntry],
              published: Mapping[str, Any]) -> "Manifest":
        return cls(project=project, version=version, files=MappingProxyType(dict(files)),
                   digest=content_digest(files), published=MappingProxyType(dict(published)))

    def for_environment(self, environment: str, files: Mapping[str, FileEntry],
                        promoted: Mapping[str, Any]) -> "Manifest":
        """This version's manifest as held by ``environment``'s folder."""
        return replace(self, files=MappingProxyType(dict(files)), environment=environment,
                       promoted=MappingProxyType(dict(promoted)), promoting=None)

    def to_json(self) -> bytes:
        data: Dict[str, Any] = {
            "format": FORMAT,
            "project": self.project,
            "version": self.version,
            "digest": self.digest,
            "published": dict(self.published),
            "files": {path: self.files[path].as_dict() for path in sorted(self.files)},
        }
        if self.environment is not None:
            data["environment"] = self.environment
            data["promoted"] = dict(self.promoted or {})
        if self.promoting is not None:
            data["promoting"] = dict(self.promoting)
        return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes, where: str) -> "Manifest":
        """Parse and check a stored manifest; anything odd is an integrity refusal."""
        try:
            data = json.loads(raw)
            files = {}
            for path, entry in data["files"].items():
                check_relative_path(path, where)
                if path.startswith(RESERVED_PREFIX):
                    raise ValueError(f"reserved path {path!r}")
                files[path] = FileEntry(size=int(entry["size"]), sha256=str(entry["sha256"]),
                                        etag=entry.get("etag"))
            manifest = cls(
                project=str(data["project"]),
                version=str(data["version"]),
                files=MappingProxyType(files),
                digest=str(data["digest"]),
                published=MappingProxyType(dict(data.get("published") or {})),
                environment=data.get("environment"),
                promoted=MappingProxyType(dict(data["promoted"])) if data.get("promoted") is not None else None,
                promoting=MappingProxyType(dict(data["promoting"])) if isinstance(data.get("promoting"), dict)
                else None,
            )
        except IntegrityError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IntegrityError(f"{where}: unreadable manifest ({exc}); re-publish or re-promote") from None
        if content_digest(manifest.files) != manifest.digest:
            raise IntegrityError(f"{where}: manifest digest does not match its file list; it was edited")
        return manifest


def manifest_key(folder: str) -> str:
    """The manifest's key in a version or environment folder."""
    return f"{folder}/{MANIFEST_KEY}"


def read_manifest(repository: Repository, folder: str) -> Optional[Manifest]:
    """The manifest of ``folder`` (a version or an environment), or None if it has none."""
    try:
        raw = repository.read(manifest_key(folder))
    except KeyNotFound:
        return None
    return Manifest.from_json(raw, repository.location(manifest_key(folder)))


def check_holds(environment: str, held: str, expected: Optional[str], command: str) -> None:
    """Refuse (exit 3) when ``environment`` holds ``held`` but the caller asked for
    ``expected``: a pipeline never applies or tests what another build promoted."""
    if expected is not None and held != expected:
        raise VersionMismatch(
            f"{environment} holds version {held}, not {expected}: 'envpipe {command} --version' runs only on "
            f"the version it is given, never on what another build promoted; to go on with {expected}, "
            f"promote it again ('envpipe promote {expected} --to {environment}')"
        )


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
    prefix = f"{folder}/"
    with background() as submit:
        # The folder is listed while its manifest is read: one round trip, not two.
        listing = submit(lambda: list(repository.list(prefix)))
        manifest = read_manifest(repository, folder)
        if manifest is None:
            if not listing.result():
                raise NotFound(f"{location} has no manifest: nothing was published or promoted there")
            # Files without a manifest: the first promote into it, or a publish, cut short.
            if ENVIRONMENT_RE.match(folder):
                raise IntegrityError(f"{location} holds files but no manifest: a promote into it was cut short (or "
                                     f"they were put there by hand); promote a version into it "
                                     f"('envpipe promote VERSION --to {folder}')")
            raise NotFound(f"{location} holds files but no manifest: its publish was cut short and the version "
                           "does not exist; run that publish again to complete it")
        check_owner(repository, folder, manifest, project)
        infos = listing.result()
    listed = {}
    for info in infos:
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
