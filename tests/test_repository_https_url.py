"""https_url is part of every repository: S3 gives the object's URL, a folder None;
and the runner protocol is what the stages call, nothing more."""
from __future__ import annotations

from conftest import REGION

from envpipe_agent.repository import open_repository
from envpipe_agent.tools.base import ToolRunner


def test_folder_repository_has_no_https_url(tmp_path):
    assert open_repository(str(tmp_path / "repository"), {}).https_url(".envpipe/templates/t.yaml") is None


def test_s3_repository_gives_the_objects_https_url(s3_bucket):
    repository = open_repository(f"s3://{s3_bucket}/pipelines", {"AWS_DEFAULT_REGION": REGION})
    assert repository.https_url(".envpipe/templates/test/a b.yaml") == (
        f"https://{s3_bucket}.s3.{REGION}.amazonaws.com/pipelines/.envpipe/templates/test/a%20b.yaml")


def test_runners_offer_exactly_the_stage_actions():
    from envpipe_agent.tools.cloudformation import CloudFormationRunner
    from envpipe_agent.tools.terraform import TerraformRunner

    actions = {name for name in vars(ToolRunner) if not name.startswith("_") and callable(vars(ToolRunner)[name])}
    assert actions == {"plan", "apply", "destroy"}
    for runner in (TerraformRunner, CloudFormationRunner):
        assert not hasattr(runner, "outputs")
