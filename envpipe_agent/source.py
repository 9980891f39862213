"""Reading a stack definition from a working copy: which files, and are they safe.

``.envpipeignore`` (gitignore syntax, via pathspec) leaves files out on purpose.
Terraform state, ``.terraform/`` folders, private keys, AWS access keys and ``.env``
files are refused (SPEC §7): they must never reach an artefact.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import pathspec

from envpipe_agent.errors import UnsafeSource, UsageError
from envpipe_agent.manifest import FileEntry
from envpipe_agent.parallel import parallel_map
from envpipe_agent.repository.base import CHUNK_SIZE, MULTIPART_SIZE

IGNORE_FILE = ".envpipeignore"
# Version-control and cache folders, and envpipe's own working folders in a CI workspace
# (the generated pipelines' virtualenv and JUnit reports): never part of a stack.
ALWAYS_SKIPPED = {".git", ".hg", ".svn", "__pycache__", ".pytest_cache", ".envpipe-venv", ".envpipe-reports"}

_STATE_NAME = re.compile(r"(^|.*\.)tfstate(\.backup|\.\d+\.backup)?$|^\.terraform\.tfstate\.lock\.info$")
_ENV_NAME = re.compile(r"^\.env(\..+)?$")
_ENV_EXAMPLES = (".example", ".sample", ".template", ".dist")
_KEY_NAME = re.compile(r"^(id_(rsa|dsa|ecdsa|ed25519)(_sk)?|.*\.(pem|key|p12|pfx|ppk|jks|keystore))$")
# PEM/OpenSSH/PGP private keys, and PuTTY's own format. Every pattern starts with
# a literal, which re finds fast; an alternation of two literals or a leading
# look-behind makes it try each byte in turn, 40 times slower (1 GiB: 40 s, not 1).
_PRIVATE_KEYS = (re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"),
                 re.compile(rb"PuTTY-User-Key-File-\d+:"))
# Not preceded by [A-Z0-9] either: checked on each match (see _find_secret).
_ACCESS_KEY = re.compile(rb"(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}(?![A-Z0-9])")
_KEY_CHARACTERS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
# AWS's documented placeholder keys (AKIAIOSFODNN7EXAMPLE) appear in examples and
# tests; they are not credentials.
_EXAMPLE_KEY_SUFFIX = b"EXAMPLE"
# A key-named file passes when it is PEM text holding only public material
# (certificates, CSRs, public keys, parameters): private blocks are caught above,
# and a file with no PEM block at all may be a binary (DER, PKCS#12) private key.
_PEM_BLOCK = re.compile(rb"-----BEGIN [A-Z0-9 ]+-----")
# A match may straddle two read chunks; keep this many bytes of the previous one.
_OVERLAP = 64


@dataclass(frozen=True)
class SourceFile:
    path: str  # relative, '/'-separated
    local: Path
    entry: FileEntry
    md5: str
    # The ETag S3 gives this file when uploaded multipart (files of MULTIPART_SIZE
    # and more), so a re-run recognises it; None for smaller files.
    multipart_etag: Optional[str] = None

    @property
    def etags(self) -> Tuple[str, ...]:
        """Every tag a stored copy of this file may carry."""
        return (self.md5, self.multipart_etag) if self.multipart_etag else (self.md5,)


def _utf8(name: str) -> bool:
    """Whether a name read from the file system is UTF-8 (Python keeps other bytes as surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown_name(name: str) -> str:
    """A name that is not UTF-8, shown as its bytes: printing it as it is fails too."""
    return repr(os.fsencode(name))[1:]


def _name_problem(relative: str) -> Optional[str]:
    parts = relative.split("/")
    name = parts[-1]
    if ".terraform" in parts[:-1]:
        return "a .terraform/ folder (provider binaries and cached state)"
    if _STATE_NAME.match(name):
        return "Terraform state"
    if _ENV_NAME.match(name) and not name.endswith(_ENV_EXAMPLES):
        return "a .env file"
    return None


def _find_secret(window: bytes) -> Optional[str]:
    if any(pattern.search(window) for pattern in _PRIVATE_KEYS):
        return "a private key"
    for match in _ACCESS_KEY.finditer(window):
        # A match preceded by [A-Z0-9] is part of a longer word; no real key can start
        # inside it, since every byte of a match is itself one of [A-Z0-9].
        inside_word = match.start() > 0 and window[match.start() - 1] in _KEY_CHARACTERS
        if not inside_word and not match.group().endswith(_EXAMPLE_KEY_SUFFIX):
            return "an AWS access key id"
    return None


def _hash_and_scan(path: Path) -> Tuple[FileEntry, str, Optional[str], Optional[str]]:
    """Hash the file in one streaming pass, looking for key material on the way.

    Returns (entry, md5, multipart ETag or None, problem or None).
    """
    sha, md5, part = hashlib.sha256(), hashlib.md5(usedforsecurity=False), hashlib.md5(usedforsecurity=False)
    part_digests: List[bytes] = []
    part_size, size, tail, problem = 0, 0, b"", None
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK_SIZE), b""):
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
            # CHUNK_SIZE divides MULTIPART_SIZE, so a chunk never spans two parts.
            part.update(chunk)
            part_size += len(chunk)
            if part_size == MULTIPART_SIZE:
                part_digests.append(part.digest())
                part, part_size = hashlib.md5(usedforsecurity=False), 0
            if problem is None:
                window = tail + chunk
                problem = _find_secret(window)
                tail = window[-_OVERLAP:]
    multipart = None
    if size >= MULTIPART_SIZE:
        if part_size:
            part_digests.append(part.digest())
        multipart = f"{hashlib.md5(b''.join(part_digests), usedforsecurity=False).hexdigest()}-{len(part_digests)}"
    return FileEntry(size=size, sha256=sha.hexdigest()), md5.hexdigest(), multipart, problem


def _ignore_spec(root: Path) -> pathspec.PathSpec:
    ignore = root / IGNORE_FILE
    lines = ignore.read_text(encoding="utf-8").splitlines() if ignore.is_file() else []
    return pathspec.GitIgnoreSpec.from_lines(lines)


def _inside(real: str, real_root: str) -> bool:
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def _walk(root: Path, spec: pathspec.PathSpec) -> Tuple[List[str], List[str]]:
    """(files to publish, links leading outside ``root``), both relative and sorted."""
    found, outside = [], []
    real_root = os.path.realpath(root)
    # Symlinked folders inside the source folder are followed, as Terraform and `aws
    # s3 sync` follow them; a link back into its own ancestry is skipped, so a loop
    # cannot recurse for ever. A link leading out of the source folder is reported:
    # it would publish whatever it points at on this agent (~/.aws, /etc), unseen.
    for folder, dirs, files in os.walk(root, followlinks=True):
        rel_folder = Path(folder).relative_to(root).as_posix()
        prefix = "" if rel_folder == "." else rel_folder + "/"
        ancestry = {os.path.realpath(root)}
        if prefix:
            parts = rel_folder.split("/")
            ancestry.update(os.path.realpath(root.joinpath(*parts[:i])) for i in range(1, len(parts) + 1))
        # Prune ignored folders so their contents are never read.
        dirs[:] = sorted(d for d in dirs if d not in ALWAYS_SKIPPED
                         and not spec.match_file(prefix + d + "/")
                         and os.path.realpath(os.path.join(folder, d)) not in ancestry)
        for d in [d for d in dirs if not _inside(os.path.realpath(os.path.join(folder, d)), real_root)]:
            outside.append(f"{prefix}{d}/ -> {os.path.realpath(os.path.join(folder, d))}")
            dirs.remove(d)
        for name in files:
            relative = prefix + name
            path = os.path.join(folder, name)
            if spec.match_file(relative) or not os.path.isfile(path):
                continue  # ignored, or a dangling link: nothing to publish
            # Only a link can leave the root: every folder walked into is inside it.
            if os.path.islink(path) and not _inside(os.path.realpath(path), real_root):
                outside.append(f"{relative} -> {os.path.realpath(path)}")
            else:
                found.append(relative)
    return sorted(found), sorted(outside)


def read_definition(root: Path, threads: int = 8) -> List[SourceFile]:
    """Every file of the definition under ``root``, hashed; refuse unsafe ones."""
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise UsageError(f"source folder {root} {what}: fix 'source' in envpipe.yml or pass --source")
    spec = _ignore_spec(root)
    relatives, outside = _walk(root, spec)
    if outside:
        shown = "; ".join(outside[:5]) + (f"; and {len(outside) - 5} more" if len(outside) > 5 else "")
        raise UnsafeSource(f"refusing to publish links leading outside the source folder {root}: {shown}. "
                           f"Copy what they point at into the source folder, or list them in {IGNORE_FILE}")
    undecodable = [relative for relative in relatives if not _utf8(relative)]
    if undecodable:
        # A repository key is UTF-8 text; such a name has no key to be stored under.
        shown = ", ".join(_shown_name(r) for r in undecodable[:5]) + (
            f" and {len(undecodable) - 5} more" if len(undecodable) > 5 else "")
        raise UnsafeSource(f"refusing to publish files whose names are not UTF-8: {shown} in {root}; rename "
                           f"them, or list them in {IGNORE_FILE}")
    problems = []
    for relative in relatives:
        if relative.startswith(".envpipe/"):
            problems.append(f"{relative} (.envpipe/ is reserved for envpipe's own files)")
        elif "\\" in relative or "\x00" in relative:
            problems.append(f"{relative!r} (backslash or NUL in the name)")
        else:
            reason = _name_problem(relative)
            if reason:
                problems.append(f"{relative} ({reason})")
    if problems:
        _refuse(problems)

    def scan(relative: str) -> Tuple[str, FileEntry, str, Optional[str], Optional[str]]:
        path = root / relative
        try:
            entry, md5, multipart, problem = _hash_and_scan(path)
            if problem is None and entry.size and _KEY_NAME.match(relative.rsplit("/", 1)[-1]):
                with open(path, "rb") as stream:
                    head = stream.read(64 * 1024)
                if not _PEM_BLOCK.search(head):
                    problem = "a private key file (not PEM text with only public material)"
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}; fix its permissions or "
                             f"list it in {IGNORE_FILE}") from None
        return relative, entry, md5, multipart, problem

    scanned = parallel_map(scan, relatives, threads)  # the first unreadable file stops the rest
    problems = [f"{relative} ({problem})" for relative, _, _, _, problem in scanned if problem]
    if problems:
        _refuse(problems)
    if not scanned:
        raise UsageError(f"source folder {root} holds no files to publish (after {IGNORE_FILE})")
    return [SourceFile(path=r, local=root / r, entry=e, md5=m, multipart_etag=mp) for r, e, m, mp, _ in scanned]


def _refuse(problems: List[str]) -> None:
    shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
    raise UnsafeSource(
        f"refusing to publish secrets or state: {shown}. Remove them, or list them in "
        f"{IGNORE_FILE} if they must stay in the working copy"
    )
