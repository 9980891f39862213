"""verify: a version or an environment folder against its manifest, byte for byte
(``manifest.check_folder``, which is also how apply and test fetch a definition)."""
from __future__ import annotations

import logging

from envpipe_agent.config import ENVIRONMENT_RE, VERSION_RE
from envpipe_agent.context import StageContext
from envpipe_agent.errors import UsageError
from envpipe_agent.manifest import VerifyResult, check_folder

log = logging.getLogger(__name__)


def verify(ctx: StageContext, target: str) -> VerifyResult:
    """Verify a published version (``1.0.123``) or an environment folder (``staging``)."""
    if ENVIRONMENT_RE.match(target):
        ctx.environment(target)  # a clear error for an unknown environment
    elif not VERSION_RE.match(target) or ".." in target:
        raise UsageError(f"{target!r} is neither a version nor an environment name")
    _, result = check_folder(ctx.repository, target, project=ctx.config.project)
    # The command prints the result; this is for -v and Python callers' logs.
    log.debug("%s: %d files match manifest of version %s", ctx.repository.location(target), result.files,
              result.version)
    return result
