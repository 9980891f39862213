"""Who is running us (SPEC §5): Jenkins, GoCD or a person at a terminal.

Built from an environment mapping passed in, never from ``os.environ`` directly, so
any CI server's context can be reproduced in a test.
"""
from __future__ import annotations

import getpass
import socket
import string
from dataclasses import asdict, dataclass
from typing import Dict, Mapping, Optional
from urllib.parse import quote

from envpipe_agent.config import validate_version
from envpipe_agent.errors import UsageError


@dataclass(frozen=True)
class CIContext:
    server: str  # "jenkins", "gocd" or "local"
    build: Optional[str] = None
    label: Optional[str] = None
    commit: Optional[str] = None
    build_url: Optional[str] = None
    user: Optional[str] = None
    job: Optional[str] = None
    host: Optional[str] = None

    def as_record(self) -> Dict[str, Optional[str]]:
        return asdict(self)

    def known(self) -> Dict[str, str]:
        """The fields this build set (unset ones left out): who published, promoted or
        claimed a version, in its manifest or claim."""
        return {name: value for name, value in asdict(self).items() if value}

    @property
    def session_name(self) -> str:
        """An STS role session name (2-64 chars of [\\w+=,.@-]) naming this build."""
        raw = f"envpipe-{self.server}-{self.job or 'local'}-{self.build or 'manual'}"
        cleaned = "".join(ch if ch.isalnum() or ch in "+=,.@-_" else "-" for ch in raw)
        return cleaned[:64]


def _gocd_commit(environ: Mapping[str, str]) -> Optional[str]:
    if environ.get("GO_REVISION"):
        return environ["GO_REVISION"]
    # With several materials GoCD sets GO_REVISION_<MATERIAL> only; take the
    # alphabetically first so the choice is stable.
    revisions = sorted(k for k in environ if k.startswith("GO_REVISION_") and environ[k])
    return environ[revisions[0]] if revisions else None


def _gocd_build_url(environ: Mapping[str, str]) -> Optional[str]:
    server = environ.get("GO_SERVER_URL", "").rstrip("/")
    parts = [environ.get(k) for k in ("GO_PIPELINE_NAME", "GO_PIPELINE_COUNTER", "GO_STAGE_NAME",
                                      "GO_STAGE_COUNTER", "GO_JOB_NAME")]
    if not server or not all(parts):
        return None
    if server.endswith("/go"):
        server = server[:-3]
    return f"{server}/go/tab/build/detail/" + "/".join(quote(p, safe="") for p in parts)


def detect(environ: Mapping[str, str]) -> CIContext:
    """The CI context described by ``environ`` (Jenkins, GoCD, else local)."""
    if environ.get("GO_PIPELINE_NAME") or environ.get("GO_SERVER_URL"):
        return CIContext(
            server="gocd",
            build=environ.get("GO_PIPELINE_COUNTER") or None,
            label=environ.get("GO_PIPELINE_LABEL") or None,
            commit=_gocd_commit(environ),
            build_url=_gocd_build_url(environ),
            user=environ.get("GO_TRIGGER_USER") or None,
            job=environ.get("GO_PIPELINE_NAME") or None,
            host=environ.get("GO_AGENT_NAME") or None,
        )
    if environ.get("JENKINS_URL") or environ.get("BUILD_NUMBER") and environ.get("JOB_NAME"):
        return CIContext(
            server="jenkins",
            build=environ.get("BUILD_NUMBER") or None,
            commit=environ.get("GIT_COMMIT") or None,
            build_url=environ.get("BUILD_URL") or None,
            user=environ.get("BUILD_USER_ID") or None,
            job=environ.get("JOB_NAME") or None,
            host=environ.get("NODE_NAME") or None,
        )
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = None
    return CIContext(server="local", user=environ.get("USER") or user, host=socket.gethostname())


def render_version(template: str, context: CIContext, how: str = "pass --version") -> str:
    """Fill the version template from the CI context; refuse when a value is missing.

    ``how`` is the calling command's own way to give a version instead (promote takes
    it positionally, publish and run as --version), ending the refusal's message."""
    values = {
        "build": context.build,
        "label": context.label,
        "commit": context.commit,
        "short_commit": context.commit[:12] if context.commit else None,
    }
    needed = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    missing = [name for name in needed if not values.get(name)]
    if missing:
        where = "outside CI" if context.server == "local" else f"in this {context.server} build"
        raise UsageError(
            f"version template {template!r} needs {{{missing[0]}}}, which has no value {where}: {how}"
        )
    return validate_version(template.format(**{k: v for k, v in values.items() if v is not None}))
