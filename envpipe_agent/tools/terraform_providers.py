"""Terraform providers: one download per agent, not one per stage.

Every stage runs ``terraform init`` in a fresh work folder, so without help each one
downloads its providers again (hundreds of MB for the AWS provider). Two things keep
that to one download per agent and provider version:

* ``TF_PLUGIN_CACHE_DIR`` points at a persistent per-user cache,
  ``$XDG_CACHE_HOME/envpipe/terraform-plugins`` (``~/.cache/...``), unless the user
  chose a cache already (the variable, or ``plugin_cache_dir`` in the CLI config). A
  provider mirror in the CLI config (``provider_installation``) is left as it is.
* the definition's ``.terraform.lock.hcl``, published with it: Terraform (1.4 and
  later) takes a provider from the cache only when the lock file vouches for it, and
  ``init -lockfile=readonly`` then installs exactly the locked versions. Publish warns
  when a definition that needs providers has no lock file.

The cache is not safe for concurrent installs, so ``init`` holds an exclusive lock on
it; plan and apply only read the installed providers.
"""
from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Set

log = logging.getLogger(__name__)

LOCK_FILE = ".terraform.lock.hcl"
CACHE_VARIABLE = "TF_PLUGIN_CACHE_DIR"
# Built into Terraform itself (terraform_data, terraform_remote_state): nothing to download.
BUILTIN = "terraform"
_CLI_CACHE_SETTING = re.compile(r"^\s*plugin_cache_dir\s*=", re.MULTILINE)
_BLOCK = re.compile(r'^\s*(?:resource|data)\s+"([A-Za-z0-9-]+)_[^"]*"|^\s*provider\s+"([A-Za-z0-9-]+)"',
                    re.MULTILINE)
_REQUIRED = re.compile(r"^\s*required_providers\s*\{", re.MULTILINE)


def _cli_config_sets_cache(environ: Mapping[str, str]) -> bool:
    """Whether the user's Terraform CLI config names a plugin cache of its own."""
    configured = environ.get("TF_CLI_CONFIG_FILE")
    home = environ.get("HOME")
    path = Path(configured) if configured else (Path(home) / ".terraformrc" if home else None)
    try:
        return path is not None and bool(_CLI_CACHE_SETTING.search(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError):
        return False


def plugin_cache(environ: Mapping[str, str]) -> Dict[str, str]:
    """The variables that give Terraform envpipe's plugin cache ({} where the user has
    a cache of their own, or none can be made)."""
    if environ.get(CACHE_VARIABLE) or _cli_config_sets_cache(environ):
        return {}
    base = environ.get("XDG_CACHE_HOME") or (str(Path(environ["HOME"]) / ".cache") if environ.get("HOME") else "")
    if not base:
        return {}
    path = Path(base) / "envpipe" / "terraform-plugins"
    try:
        path.mkdir(parents=True, exist_ok=True)  # Terraform needs it to exist
    except OSError as exc:
        log.warning("no Terraform plugin cache (%s): providers are downloaded for every stage", exc)
        return {}
    return {CACHE_VARIABLE: str(path)}


@contextlib.contextmanager
def cache_locked(environ: Mapping[str, str]) -> Iterator[None]:
    """Hold the plugin cache's lock (an exclusive ``flock``) while ``init`` installs into it."""
    cache = environ.get(CACHE_VARIABLE)
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking, as Terraform itself
        fcntl = None  # type: ignore[assignment]
    if not cache or fcntl is None or not Path(cache).is_dir():
        yield
        return
    with open(Path(cache) / ".envpipe-init.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def init_arguments(workdir: Path) -> List[str]:
    """``-lockfile=readonly`` when the definition brings its lock file: exactly the locked
    providers are installed, and a lock file that does not match fails the stage."""
    return ["-lockfile=readonly"] if (workdir / LOCK_FILE).is_file() else []


def required_providers(texts: Iterable[str]) -> Set[str]:
    """Provider names a root module's ``*.tf`` texts need, Terraform's built-in one aside
    (``required_providers`` counts as needing one, named or not)."""
    names: Set[str] = set()
    for text in texts:
        names.update(resource or provider for resource, provider in _BLOCK.findall(text))
        if _REQUIRED.search(text):
            names.add("(required_providers)")
    names.discard(BUILTIN)
    return names


def missing_lock_file(files: Mapping[str, Path]) -> Optional[str]:
    """A warning when a definition (``{published path: local file}``) needs providers
    but brings no lock file; None otherwise."""
    if LOCK_FILE in files:
        return None
    texts = []
    for path, local in files.items():
        if "/" not in path and path.endswith(".tf"):  # the root module
            with contextlib.suppress(OSError, UnicodeDecodeError):
                texts.append(local.read_text(encoding="utf-8"))
    needed = required_providers(texts)
    if not needed:
        return None
    shown = ", ".join(sorted(n for n in needed if not n.startswith("("))) or "providers"
    return (f"the definition needs providers ({shown}) but has no {LOCK_FILE}: every stage resolves and "
            f"downloads them again, and may pick newer versions than you tested. Run 'terraform init' in the "
            f"definition's folder, commit {LOCK_FILE} (add other platforms with 'terraform providers lock "
            "-platform=...'), and publish again")
