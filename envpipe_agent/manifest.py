"""The manifest: what a version (or an environment folder) holds, file by file.

``<repo>/<version>/.envpipe/manifest.json`` is written last by publish: a version
without it does not exist. An environment folder's manifest is the promoted version's
manifest plus the promotion data, and per file the tag of the object in that folder.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional

from envpipe_agent.errors import IntegrityError, VersionMismatch
from envpipe_agent.paths import check_relative_path

if TYPE_CHECKING:
    from envpipe_agent.repository import Repository

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


def read_manifest(repository: "Repository", folder: str) -> Optional[Manifest]:
    """The manifest of ``folder`` (a version or an environment), or None if it has none."""
    from envpipe_agent.repository import KeyNotFound

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
