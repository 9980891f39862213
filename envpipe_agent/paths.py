"""Keys and relative paths that can never land outside their folder (SPEC §3)."""
from __future__ import annotations

from pathlib import Path, PurePosixPath

from envpipe_agent.errors import UnsafePath


def check_relative_path(path: str, where: str = "") -> str:
    """Return ``path`` if it is a plain relative POSIX path; refuse anything else.

    Refused: empty, absolute, backslashes (a Windows separator on some tools), NUL,
    ``.``/``..`` or empty components. ``where`` says whose key it was, for the message.
    """
    problem = None
    if not path:
        problem = "empty path"
    elif "\x00" in path:
        problem = "NUL character"
    elif "\\" in path:
        problem = "backslash"
    elif path.startswith("/") or PurePosixPath(path).is_absolute() or (len(path) > 1 and path[1] == ":"):
        problem = "absolute path"
    elif any(part in ("", ".", "..") for part in path.split("/")):
        problem = "'..', '.' or empty path component"
    if problem:
        suffix = f" in {where}" if where else ""
        raise UnsafePath(
            f"unsafe key {path!r}{suffix} ({problem}): it would land outside its folder; "
            "remove it from the repository"
        )
    return path


def local_path(root: Path, relative: str, where: str = "") -> Path:
    """``root / relative`` after checking that ``relative`` stays inside ``root``."""
    return root.joinpath(*check_relative_path(relative, where).split("/"))
