"""A folder as the artefact repository (``/abs/path`` or ``file:///abs/path``)."""
from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, List, Mapping, Optional, Sequence
from urllib.parse import unquote, urlparse

from envpipe_agent.errors import RepositoryError, UsageError
from envpipe_agent.paths import check_relative_path
from envpipe_agent.repository.base import CHUNK_SIZE, AlreadyExists, KeyNotFound, ObjectInfo

# Writes go to a temporary sibling first and are renamed into place, so a reader
# never sees half a file; listings skip these names.
TEMP_MARK = ".envpipe-tmp-"
# A temporary file untouched this long is a killed writer's (a live one writes to it,
# or renames it away, within seconds): the first write into its folder removes it.
STALE_TEMP_SECONDS = 600
_PRUNE_RETRIES = 20
# envpipe's own folders at the root (locks, records, summaries) are written to all the
# time by every agent; they are never pruned.
_NEVER_PRUNED = ".envpipe/"


def _md5_file(path: Path) -> str:
    md5 = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK_SIZE), b""):
            md5.update(chunk)
    return md5.hexdigest()


def _may_hold(folder: str, prefix: str, start_after: Optional[str]) -> bool:
    """Whether keys under ``folder`` (``a/b/``) can start with ``prefix`` and sort after ``start_after``."""
    if not (folder.startswith(prefix) or prefix.startswith(folder)):
        return False
    return start_after is None or folder > start_after or start_after.startswith(folder)


def _holds_a_file(folder: Path) -> bool:
    """A folder counts as S3 would count it: when some object is in it."""
    return any(not name.startswith(TEMP_MARK) for _, _, files in os.walk(folder) for name in files)


class LocalRepository:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)
        self._swept: set = set()  # folders whose stale temporary files this process removed

    @classmethod
    def from_url(cls, url: str, environ: Mapping[str, str], client_factory: Any = None,
                 kms_key_id: Optional[str] = None) -> "LocalRepository":
        # kms_key_id (repository_encryption) is server-side encryption: S3's, not a folder's.
        path = url
        if url.startswith("file://"):
            parsed = urlparse(url)
            # file://relative/x names host "relative" and no path: it would resolve to
            # the current folder, the working copy itself.
            if parsed.netloc not in ("", "localhost") or not parsed.path:
                raise UsageError(f"repository {url!r}: a file URL names an absolute path, with three slashes: "
                                 f"file:///{url[len('file://'):]} or a folder path")
            path = unquote(parsed.path)
        return cls(Path(path).expanduser().resolve())

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_relative_path(key, self.url).split("/"))

    def _temp_for(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._sweep(path.parent)
        return path.with_name(f"{TEMP_MARK}{uuid.uuid4().hex}-{path.name}")

    def _sweep(self, folder: Path, now: Optional[float] = None) -> None:
        """Remove temporary files killed writers left in ``folder`` (once per process)."""
        if folder in self._swept:
            return
        self._swept.add(folder)
        now = time.time() if now is None else now
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if not entry.name.startswith(TEMP_MARK) or not entry.is_file(follow_symlinks=False):
                        continue
                    try:
                        if now - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_SECONDS:
                            os.unlink(entry.path)
                    except FileNotFoundError:  # its writer finished, or another sweep got it
                        continue
        except OSError:
            return  # a sweep is housekeeping: never a reason for the write to fail

    def _atomically(self, key: str, fill: Callable[[Path], None], if_absent: bool = False) -> Path:
        """Fill a temporary sibling of ``key``'s file, then move it into place.

        Another agent's delete may prune the folder between our mkdir and our write
        (it saw the folder empty); that is retried rather than reported.
        """
        path = self._path(key)
        for attempt in range(_PRUNE_RETRIES):
            temp = None
            try:
                try:
                    temp = self._temp_for(path)
                except FileExistsError:  # mkdir raced with a prune: the folder came and went
                    if attempt == _PRUNE_RETRIES - 1:
                        raise
                    continue
                fill(temp)
                if if_absent:
                    # link() fails if the name exists: an atomic create-if-absent.
                    try:
                        os.link(temp, path)
                    except FileExistsError:
                        raise AlreadyExists(key) from None
                else:
                    os.replace(temp, path)
                return path
            except FileNotFoundError:
                if attempt == _PRUNE_RETRIES - 1:
                    raise
            except OSError as exc:
                raise RepositoryError(f"cannot write {path}: {exc.strerror or exc}") from None
            finally:
                if temp is not None:
                    temp.unlink(missing_ok=True)
        raise AssertionError("unreachable")

    def list(self, prefix: str, start_after: Optional[str] = None) -> Iterator[ObjectInfo]:
        # A prefix may end inside a name (``records/test/2026-``): walk from the folder it
        # is in, and only into folders that can hold keys wanted.
        folder_part = prefix.rpartition("/")[0]
        base = self.root / folder_part if folder_part else self.root
        keys: List[str] = []
        if base.is_dir():
            for folder, dirs, files in os.walk(base):
                rel_folder = Path(folder).relative_to(self.root).as_posix()
                here = "" if rel_folder == "." else f"{rel_folder}/"
                dirs[:] = [name for name in dirs if _may_hold(f"{here}{name}/", prefix, start_after)]
                for name in files:
                    if name.startswith(TEMP_MARK):
                        continue
                    key = f"{here}{name}"
                    if key.startswith(prefix) and (start_after is None or key > start_after):
                        keys.append(key)
        for key in sorted(keys):
            path = self.root / key
            try:
                yield ObjectInfo(key=key, size=path.stat().st_size, etag=_md5_file(path))
            except FileNotFoundError:  # deleted while listing
                continue

    def list_folders(self, prefix: str) -> Iterator[str]:
        folder_part, _, start = prefix.rpartition("/")
        base = self.root / folder_part if folder_part else self.root
        here = f"{folder_part}/" if folder_part else ""
        try:
            with os.scandir(base) as entries:
                names = sorted(entry.name for entry in entries
                               if entry.is_dir() and entry.name.startswith(start) and _holds_a_file(Path(entry.path)))
        except (FileNotFoundError, NotADirectoryError):
            return
        for name in names:
            yield f"{here}{name}/"

    def read(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise KeyNotFound(key) from None

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise KeyNotFound(key) from None

    def write(self, key: str, data: bytes, *, if_absent: bool = False) -> str:
        try:
            self._atomically(key, lambda temp: temp.write_bytes(data), if_absent=if_absent)
        except FileNotFoundError as exc:
            raise RepositoryError(f"cannot write {self._path(key)}: {exc.strerror or exc}") from None
        return hashlib.md5(data, usedforsecurity=False).hexdigest()

    def _place(self, source: Path, key: str) -> str:
        if not source.is_file():
            raise KeyNotFound(str(source))
        try:
            path = self._atomically(key, lambda temp: shutil.copyfile(source, temp))
        except FileNotFoundError:
            raise KeyNotFound(str(source)) from None
        return _md5_file(path)

    def upload(self, key: str, path: Path, size: int) -> str:
        return self._place(path, key)

    def copy(self, source_key: str, key: str, size: int) -> str:
        return self._place(self._path(source_key), key)

    def delete(self, keys: Sequence[str]) -> None:
        paths = [(key, self._path(key)) for key in keys]  # refuse an unsafe key before deleting any
        for key, path in paths:
            try:
                path.unlink(missing_ok=True)
            except IsADirectoryError:
                continue  # a folder is not an object; nothing to delete
            except OSError as exc:
                raise RepositoryError(f"cannot delete {path}: {exc.strerror or exc}") from None
            # Drop folders left empty, up to the root, so an emptied environment
            # folder disappears as it would on S3. Another agent may be writing into
            # one of them at the same moment: then it is not empty, and we stop.
            parent = path.parent
            while not key.startswith(_NEVER_PRUNED) and parent != self.root and self.root in parent.parents:
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent

    def location(self, key: str = "") -> str:
        return str(self.root / key) if key else str(self.root)

    def https_url(self, key: str) -> Optional[str]:
        return None  # a folder on the agent: no AWS service can read it
