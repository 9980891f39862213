"""envpipe: the Environment Pipeline pattern for Terraform and CloudFormation.

The Python API does what the CLI does::

    from envpipe_agent import StageContext, publish, promote
    ctx = StageContext.load("envpipe.yml")
    publish(ctx, version="1.0.123")
    promote(ctx, "staging", "1.0.123")
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it. Imported on first use (PEP 562), so that every
# `envpipe` command does not pay for importing boto3, requests and jinja2 first.
_API = {
    "StageContext": "envpipe_agent.context",
    "apply": "envpipe_agent.stages.apply",
    "bluegreen": "envpipe_agent.stages.bluegreen",
    "bluegreen_finish": "envpipe_agent.stages.bluegreen:finish",
    "bluegreen_rollback": "envpipe_agent.stages.bluegreen:rollback",
    "check_promotion": "envpipe_agent.stages.promote",
    "destroy": "envpipe_agent.stages.apply",
    "freeze": "envpipe_agent.stages.freeze",
    "plan": "envpipe_agent.stages.apply",
    "history": "envpipe_agent.stages.status",
    "status": "envpipe_agent.stages.status",
    "promote": "envpipe_agent.stages.promote",
    "publish": "envpipe_agent.stages.publish",
    "render_pipeline": "envpipe_agent.generate:render",
    "run_pipeline": "envpipe_agent.stages.run",
    "run_tests": "envpipe_agent.stages.testing",
    "unfreeze": "envpipe_agent.stages.freeze",
    "unlock": "envpipe_agent.stages.unlock",
    "verify": "envpipe_agent.stages.verify",
    "write_status_page": "envpipe_agent.commands.status_page",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'envpipe_agent' has no attribute {name!r}")
    module_name, _, attribute = _API[name].partition(":")
    value = getattr(importlib.import_module(module_name), attribute or name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted([*globals(), *_API])
