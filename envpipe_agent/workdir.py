"""The private work folder a tool runs in (SPEC §3, §7).

An environment's definition is downloaded into a fresh folder only this user can
enter (0700), verified file by file against the environment's manifest while it is
downloaded, and the folder is removed afterwards: Terraform's plan files and
``.terraform/`` hold secrets in clear text, so nothing is left behind unless asked
for (``--keep-workdir``, to debug a failed run).
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Optional

from envpipe_agent.manifest import Manifest
from envpipe_agent.repository import Repository
from envpipe_agent.stages.verify import VerifyResult, check_folder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkDir:
    path: Path
    manifest: Manifest
    verified: VerifyResult


def private_folder(prefix: str, parent: Optional[str] = None) -> Path:
    """A new, empty folder only this user can read, write or enter."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    # mkdtemp already creates it 0700; say so explicitly in case of an odd umask or
    # a platform where it does not.
    os.chmod(path, stat.S_IRWXU)
    return path


@contextlib.contextmanager
def fetched(repository: Repository, folder: str, keep: bool = False,
            environ: Optional[Mapping[str, str]] = None, project: Optional[str] = None) -> Iterator[WorkDir]:
    """Download and verify ``folder`` into a private work folder for the block.

    Raises IntegrityError / UnsafePath (exit 3) naming the files when the folder
    does not match its manifest, or when the manifest is another folder's (or, given
    ``project``, another project's): the same checks as ``envpipe verify``. The
    folder is removed then too.
    """
    parent = (environ or {}).get("TMPDIR") or None
    path = private_folder(f"envpipe-{folder}-", parent)
    try:
        manifest, verified = check_folder(repository, folder, path, project)
        log.info("%s: fetched and verified %d files of version %s in %.1fs", folder, verified.files,
                 manifest.version, verified.seconds)
        yield WorkDir(path=path, manifest=manifest, verified=verified)
    finally:
        if keep:
            log.warning("work folder kept (it may hold secrets; delete it when done): %s", path)
        else:
            shutil.rmtree(path, ignore_errors=True)
