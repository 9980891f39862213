"""Instances of the stack outside the path (SPEC §9), and how a name finds its instance.

An instance is an ``Environment`` whose ``like`` names the path environment it
copies: that environment's vars (with ``on_demand.vars`` merged over them), role and
account, never its approval, gate or promotion policy. Its own name is what the tools
and tests see (``TF_VAR_envpipe_environment``, ``{environment}`` in the state key
and the stack name), so each instance has its own folder, state, stack and lock, and
every stage that takes an environment takes an instance too.

On-demand environments and sandboxes are registered in the repository
(``envpipe_agent.registrations``); blue-green's ``<env>-blue``, ``<env>-green`` and
``<env>-router`` are derived from the path itself, which is why those names can never
be on-demand ones.
"""
from __future__ import annotations

import re
from types import MappingProxyType
from typing import Any, Mapping, Optional

from envpipe_agent.config import BLUEGREEN_SUFFIXES, ENVIRONMENT_RE, Config, Environment, merged_written
from envpipe_agent.errors import UsageError
from envpipe_agent.registrations import read_registration
from envpipe_agent.repository import Repository

def instance(config: Config, name: str, like: str, extra_vars: Mapping[str, Any] = MappingProxyType({}),
             extra_vars_written: Optional[Mapping[str, Any]] = None) -> Environment:
    """The instance ``name`` of the stack, like the path environment ``like``."""
    base = config.environment(like)
    return Environment(name=name, description=f"instance like {base.name}",
                       vars=MappingProxyType({**base.vars, **extra_vars}),
                       vars_written=merged_written(base.vars, base.vars_written, extra_vars, extra_vars_written),
                       role_arn=base.role_arn, account_id=base.account_id, like=base.name)


def path_owner(config: Config, name: str) -> Optional[str]:
    """The path environment ``name`` belongs to: itself, or ``E`` for ``E-blue``,
    ``E-green`` and ``E-router``; None for a name free for an on-demand instance."""
    if name in config.environment_names:
        return name
    match = re.fullmatch(r"(.+)-(%s)" % "|".join(BLUEGREEN_SUFFIXES), name)
    if match and match.group(1) in config.environment_names:
        return match.group(1)
    return None


def check_instance_name(config: Config, name: str) -> str:
    """A valid name for a new on-demand instance; UsageError (exit 2) otherwise."""
    if not isinstance(name, str) or not ENVIRONMENT_RE.match(name):
        raise UsageError(f"invalid name {name!r}: use lower-case letters, digits and '-', starting with a "
                         "letter (at most 63 characters)")
    owner = path_owner(config, name)
    if owner == name:
        raise UsageError(f"{name!r} is an environment of the path in {config.path.name}: choose another name "
                         "for an on-demand environment")
    if owner is not None:
        raise UsageError(f"{name!r} is the name of one of {owner}'s blue-green instances: choose another name "
                         "for an on-demand environment")
    return name


def on_demand_instance(config: Config, name: str, like: str) -> Environment:
    """An on-demand environment or sandbox registered as being like ``like``; the
    configured ``on_demand.like`` when that environment has left the path since."""
    settings = config.on_demand_settings
    if like not in config.environment_names:
        like = settings.like
    return instance(config, name, like, settings.vars, settings.vars_written)


def bluegreen_instance(config: Config, environment: str, suffix: str) -> Environment:
    """``<environment>-blue``, ``-green`` (the environment's vars, role and account) or
    ``-router`` (its role and account: the router stack has its own variables)."""
    name = f"{environment}-{suffix}"
    if suffix == "router":
        base = config.environment(environment)
        return Environment(name=name, description=f"router of {environment}", role_arn=base.role_arn,
                           account_id=base.account_id, like=environment, state=None)
    return instance(config, name, environment)


def resolve(config: Config, repository: Repository, name: str) -> Environment:
    """The environment or instance called ``name``: one of the path, one of a blue-green
    environment's instances, else a registered on-demand one (read from the
    repository); UsageError (exit 2) for anything else."""
    if name in config.environment_names:
        return config.environment(name)
    owner = path_owner(config, name)
    if owner is not None and config.environment(owner).bluegreen is not None:
        return bluegreen_instance(config, owner, name[len(owner) + 1:])
    registration = read_registration(repository, name) if ENVIRONMENT_RE.match(name) else None
    if registration is None:
        raise UsageError(
            f"environment {name!r} is not in {config.path.name}: choose one of "
            f"{', '.join(config.environment_names)}, or an on-demand environment or sandbox ('envpipe env list')"
        )
    return on_demand_instance(config, name, registration.like)


def refuse_bluegreen_target(env: Environment, action: str) -> None:
    """``promote``/``apply`` aimed at a blue-green environment itself (SPEC §9): exit 2."""
    if env.on_path and env.bluegreen is not None:
        raise UsageError(f"{env.name} is released blue-green: '{action}' does not change it; run "
                         f"'envpipe bluegreen {env.name} [VERSION]' (new instance, tests, swap), or aim at "
                         f"{env.name}-blue or {env.name}-green themselves; nothing was done")
