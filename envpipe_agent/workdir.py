"""The private work folder a tool runs in (SPEC §3, §7).

An environment's definition is downloaded into a fresh folder only this user can
enter (0700), verified file by file against the environment's manifest while it is
downloaded, and the folder is removed afterwards: Terraform's plan files and
``.terraform/`` hold secrets in clear text, so nothing is left behind unless asked
for (``--keep-workdir``, to debug a failed run).

A run killed with SIGKILL cannot remove its folder. Each folder therefore has a
sibling ``.lock`` file its run holds an OS lock on (released by the kernel when the
process dies, however it dies); the next run removes folders whose lock is free and
older than a day.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Optional

from envpipe_agent.manifest import Manifest, VerifyResult, check_folder
from envpipe_agent.repository import Repository

try:
    import fcntl
except ImportError:  # not on Windows: folders of killed runs are then left to the OS
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
WORK_PREFIX = "envpipe-"
LOCK_SUFFIX = ".lock"
STALE_WORK_SECONDS = 24 * 3600


@dataclass(frozen=True)
class WorkDir:
    path: Path  # the verified definition
    manifest: Manifest
    verified: VerifyResult
    root: Path  # the private work folder: ``path``, or its parent when fetched into a subfolder


def private_folder(prefix: str, parent: Optional[str] = None) -> Path:
    """A new, empty folder only this user can read, write or enter."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    # mkdtemp already creates it 0700; say so explicitly in case of an odd umask or
    # a platform where it does not.
    os.chmod(path, stat.S_IRWXU)
    return path


def _held_elsewhere(lock_path: Path) -> bool:
    """Whether a live process holds ``lock_path``'s OS lock."""
    try:
        with open(lock_path, "rb") as stream:
            fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return True  # cannot tell: leave it alone
    return False


def sweep_stale_work_folders(parent: Path, now: Optional[float] = None,
                             max_age: float = STALE_WORK_SECONDS) -> int:
    """Remove this user's work folders of killed runs in ``parent``; return how many."""
    if fcntl is None:
        return 0
    now = time.time() if now is None else now
    removed = 0
    for lock_path in parent.glob(f"{WORK_PREFIX}*{LOCK_SUFFIX}"):
        try:
            info = lock_path.stat()
        except OSError:
            continue
        if info.st_uid != os.getuid() or now - info.st_mtime < max_age or _held_elsewhere(lock_path):
            continue
        folder = lock_path.with_name(lock_path.name[:-len(LOCK_SUFFIX)])
        try:
            made = folder.lstat()
        except FileNotFoundError:
            made = None
        if made is not None and not (stat.S_ISDIR(made.st_mode) and made.st_uid == os.getuid()
                                     and stat.S_IMODE(made.st_mode) == stat.S_IRWXU):
            continue  # not a work folder envpipe made: never someone else's to remove
        shutil.rmtree(folder, ignore_errors=True)
        lock_path.unlink(missing_ok=True)
        log.info("removed the work folder of a run that was killed: %s", folder)
        removed += 1
    return removed


@contextlib.contextmanager
def work_folder(prefix: str, environ: Optional[Mapping[str, str]] = None, keep: bool = False) -> Iterator[Path]:
    """A private work folder for the block, removed afterwards unless ``keep``; the
    folders killed runs left behind are removed first."""
    parent = (environ or {}).get("TMPDIR") or None
    with contextlib.suppress(OSError):
        sweep_stale_work_folders(Path(parent or tempfile.gettempdir()))
    path = private_folder(f"{WORK_PREFIX}{prefix}", parent)
    lock_path = path.with_name(path.name + LOCK_SUFFIX)
    with open(os.open(lock_path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield path
        finally:
            if keep:
                log.warning("work folder kept (it may hold secrets; delete it when done): %s", path)
            else:
                shutil.rmtree(path, ignore_errors=True)
            lock_path.unlink(missing_ok=True)


@contextlib.contextmanager
def fetched(repository: Repository, folder: str, keep: bool = False,
            environ: Optional[Mapping[str, str]] = None, project: Optional[str] = None,
            subfolder: Optional[str] = None) -> Iterator[WorkDir]:
    """Download and verify ``folder`` into a private work folder for the block (into
    its ``subfolder`` when given, leaving the rest of the folder to the caller).

    Raises IntegrityError / UnsafePath (exit 3) naming the files when the folder
    does not match its manifest, or when the manifest is another folder's (or, given
    ``project``, another project's): the same checks as ``envpipe verify``. The
    folder is removed then too.
    """
    with work_folder(f"{folder}-", environ, keep) as root:
        path = root / subfolder if subfolder else root
        manifest, verified = check_folder(repository, folder, path, project)
        log.info("%s: fetched and verified %d files of version %s in %.1fs", folder, verified.files,
                 manifest.version, verified.seconds)
        yield WorkDir(path=path, manifest=manifest, verified=verified, root=root)
