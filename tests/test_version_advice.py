"""With no version given and none derivable, each command says its own way to give one."""
from __future__ import annotations

import pytest

from envpipe_agent.ci_context import detect, render_version
from envpipe_agent.errors import UsageError


def test_promote_outside_ci_names_its_positional_version(project) -> None:
    result = project.envpipe("promote", "--to", "staging", check=2)

    last = result.stderr.strip().splitlines()[-1]
    assert last.endswith("give the version: envpipe promote VERSION --to staging")
    assert "--version" not in last


def test_publish_outside_ci_names_its_version_option(project) -> None:
    result = project.envpipe("publish", check=2)

    assert result.stderr.strip().splitlines()[-1].endswith("outside CI: pass --version VERSION")


def test_render_version_ends_with_the_callers_advice() -> None:
    with pytest.raises(UsageError, match=r"needs \{build\}, which has no value outside CI: do this\Z"):
        render_version("1.0.{build}", detect({}), "do this")
