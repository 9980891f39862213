"""envpipe: the Environment Pipeline pattern for Terraform and CloudFormation.

The Python API does what the CLI does::

    from envpipe_agent import StageContext, publish, promote
    ctx = StageContext.load("envpipe.yml")
    publish(ctx, version="1.0.123")
    promote(ctx, "staging", "1.0.123")
"""
from envpipe_agent.context import StageContext
from envpipe_agent.generate import render as render_pipeline
from envpipe_agent.stages.apply import apply, destroy, plan
from envpipe_agent.stages.promote import promote
from envpipe_agent.stages.publish import publish
from envpipe_agent.stages.run import run_pipeline
from envpipe_agent.stages.status import history, status
from envpipe_agent.stages.testing import run_tests
from envpipe_agent.stages.unlock import unlock
from envpipe_agent.stages.verify import verify
from envpipe_agent.status_page import write_status_page

__version__ = "0.1.0"
__all__ = ["StageContext", "apply", "destroy", "history", "plan", "promote", "publish", "render_pipeline",
           "run_pipeline", "run_tests", "status", "unlock", "verify", "write_status_page"]
