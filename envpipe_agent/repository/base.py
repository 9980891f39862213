"""The interface every repository backend offers, and the URL → backend registry.

Keys are ``/``-separated and relative to the repository's root (``1.0.123/main.tf``,
``staging/.envpipe/manifest.json``). Stages only use this interface; they never ask
which backend they have.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, Iterator, Mapping, Optional, Protocol, Sequence, Tuple

from envpipe_agent.errors import UsageError

# Small-object requests run this many at a time: S3 answers each in tens of ms,
# so throughput comes from concurrency (awscli uses 10).
TRANSFER_THREADS = 32
CHUNK_SIZE = 1024 * 1024
# S3 uploads at or above this size go multipart, in parts of this size; publish
# computes the ETag such an upload gets, to recognise it on a re-run.
MULTIPART_SIZE = 16 * 1024 * 1024


class KeyNotFound(Exception):
    """The key does not exist (backends raise it; stages turn it into a user error)."""


class AlreadyExists(Exception):
    """A conditional create found the key already there."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    # A tag that is equal for equal content within one backend: the S3 ETag (the
    # MD5 for objects written in one part), the MD5 of a local file.
    etag: str


class Repository(Protocol):
    url: str

    def list(self, prefix: str, start_after: Optional[str] = None) -> Iterator[ObjectInfo]:
        """Objects under ``prefix`` in key order, after ``start_after`` if given."""

    def list_folders(self, prefix: str) -> Iterator[str]:
        """The "folders" whose keys start with ``prefix`` and go on past it to a ``/``, as
        ``prefix...name/``, in key order: S3's CommonPrefixes with the ``/`` delimiter.
        ``records/test/2026-`` gives ``records/test/2026-11-29/`` without listing what is in it."""

    def read(self, key: str) -> bytes:
        """A small object's bytes; raises KeyNotFound."""

    def open(self, key: str) -> BinaryIO:
        """A stream of the object's bytes, to be closed by the caller; raises KeyNotFound."""

    def write(self, key: str, data: bytes, *, if_absent: bool = False) -> str:
        """Store ``data`` atomically and return its tag; with ``if_absent`` raise
        AlreadyExists instead of replacing an existing object."""

    def upload(self, key: str, path: Path, size: int) -> str:
        """Store the file at ``path`` (streamed, never read whole) and return its tag."""

    def copy(self, source_key: str, key: str, size: int) -> str:
        """Copy inside the repository (server-side where possible) and return the new tag."""

    def delete(self, keys: Sequence[str]) -> None:
        """Delete the keys; missing keys are not an error."""

    def location(self, key: str = "") -> str:
        """A URL a person can read (``s3://bucket/prefix/key``, ``/abs/path``)."""

    def https_url(self, key: str) -> Optional[str]:
        """An https:// URL AWS services can fetch the object from (CloudFormation's
        TemplateURL), or None when the backend has none (a folder)."""


def download(repository: Repository, key: str, destination: Optional[Path]) -> Tuple[int, str]:
    """Stream ``key`` into ``destination`` (or only read it, when None); return the
    (size, sha256 hex) of what was read, computed on the way."""
    sha = hashlib.sha256()
    size = 0
    with repository.open(key) as stream, \
            (open(destination, "wb") if destination is not None else contextlib.nullcontext()) as out:
        for chunk in iter(lambda: stream.read(CHUNK_SIZE), b""):
            sha.update(chunk)
            size += len(chunk)
            if out is not None:
                out.write(chunk)
    return size, sha.hexdigest()


def stream_sha256(repository: Repository, key: str) -> Tuple[int, str]:
    """(size, sha256 hex) of a stored object, read as a stream."""
    return download(repository, key, None)


# scheme -> "module:class"; imported on use so a folder-only run never imports boto3.
BACKENDS: Dict[str, str] = {
    "s3": "envpipe_agent.repository.s3:S3Repository",
    "file": "envpipe_agent.repository.local:LocalRepository",
}


def open_repository(url: str, environ: Mapping[str, str], client_factory: Optional[Callable[..., Any]] = None,
                    kms_key_id: Optional[str] = None) -> Repository:
    """The backend for ``url``: ``s3://bucket[/prefix]``, ``file:///abs`` or a folder path.

    ``client_factory`` makes the AWS clients a backend needs (default
    ``aws_credentials.client``), from ``environ``; ``kms_key_id`` encrypts what an S3
    backend writes (SSE-KMS)."""
    scheme = url.split("://", 1)[0] if "://" in url else "file"
    if scheme not in BACKENDS:
        raise UsageError(
            f"repository {url!r}: unsupported scheme {scheme!r}; use s3://bucket[/prefix], "
            "file:///absolute/path or a folder path"
        )
    module_name, class_name = BACKENDS[scheme].split(":")
    backend = getattr(importlib.import_module(module_name), class_name)
    return backend.from_url(url, environ, client_factory, kms_key_id=kms_key_id)
