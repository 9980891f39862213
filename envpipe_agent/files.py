"""Local files written whole or not at all.

A generated pipeline, a JUnit report, the status page or a saved plan is read by
someone else (a CD server, Jenkins' junit step, a browser) maybe while it is
written: each is written under a random temporary name beside its place and renamed
into it in one step, and the temporary file is removed if anything fails.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator, Optional, Union

from envpipe_agent.errors import UsageError

# The mode of a new file (an existing one keeps its own): what open() gives under the
# usual umask of 022.
NEW_FILE_MODE = 0o644


@contextlib.contextmanager
def replacing(path: Path, mode: Optional[int] = None) -> Iterator[BinaryIO]:
    """A binary stream to fill; when the block ends, it replaces ``path`` in one step.

    ``mode`` is the file's mode; by default an existing file's is kept, and a new file
    gets NEW_FILE_MODE. ``path``'s folder must exist.
    """
    path = Path(path)
    if mode is None:
        mode = path.stat().st_mode & 0o777 if path.exists() else NEW_FILE_MODE
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent if str(path.parent) else ".")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as stream:
            yield stream
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_file(path: Path, content: Union[bytes, str], mode: Optional[int] = None) -> Path:
    """Replace ``path`` with ``content`` (text as UTF-8, as written) in one step."""
    with replacing(path, mode) as stream:
        stream.write(content.encode("utf-8") if isinstance(content, str) else content)
    return Path(path)


def prepare_named_file(path: Path, option: str, give: str = "the file to write") -> Path:
    """Before any work is done, check that the file the user named with ``option`` can be
    written: not a folder, and its folder made. Either problem is one line and exit 2,
    not a failure after the work ran."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{option} {path}: a folder; give {give}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot create its folder: {exc.strerror or exc}") from None
    return path


def write_named_file(path: Path, content: Union[bytes, str], option: str) -> Path:
    """``write_file`` for a file the user named with ``option`` (``-o``, ``--html``): a
    folder or a place that cannot be written is one line and exit 2, not a bug."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{option} {path}: a folder; give the file to write")
    try:
        return write_file(path, content)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write it: {exc.strerror or exc}") from None
