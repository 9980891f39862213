"""However CloudFormation answers, a failed call is one clear line, exit 1 and a
record: an HTML error page, an error without code or message, no endpoint at all.
And whatever ends an apply once the environment is locked, a bug included, its
record is written before the lock is released."""
from __future__ import annotations

import json
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from conftest import list_repository, read_repository_file, run_envpipe
from envpipe_agent.locking import lock_key, read_lock
from envpipe_agent.stages import apply as apply_stage
from fake_cloudformation import EMPTY_503, Answer, FakeCloudFormation, aws_response
from test_cloudformation import CONFIG, TEMPLATE, Pipeline

REPOSITORY = "s3://our-project-repository/pipelines"
# A proxy's error page with a 200: botocore cannot parse it (ResponseParserError,
# which is neither a ClientError nor a BotoCoreError).
NOT_AWS = Answer(200, "<!doctype html><html><body><h1>Bad Gateway</h1></body></html>", "text/html")


@pytest.fixture
def working_copy(s3_bucket: str, tmp_path: Path) -> Path:
    root = tmp_path / "work"
    (root / "infra").mkdir(parents=True)
    (root / "envpipe.yml").write_text(CONFIG.format(repository=REPOSITORY))
    (root / "infra" / "stack.yaml").write_text(TEMPLATE)
    run_envpipe(["publish", "--version", "1.0.7"], cwd=root, check=0)
    run_envpipe(["promote", "1.0.7", "--to", "test"], cwd=root, check=0)
    return root


@pytest.fixture
def endpoint(moto_server: str) -> Iterator[FakeCloudFormation]:
    with FakeCloudFormation(moto_server) as fake:
        yield fake


def through(fake_or_url: Any) -> Dict[str, str]:
    """Environment for envpipe to reach CloudFormation at the fake endpoint, without
    botocore's retries (each would only repeat the same answer, slowly)."""
    url = fake_or_url.url if isinstance(fake_or_url, FakeCloudFormation) else fake_or_url
    return {"AWS_ENDPOINT_URL_CLOUDFORMATION": url, "AWS_MAX_ATTEMPTS": "1"}


def apply_records() -> List[Dict[str, Any]]:
    found = list_repository(REPOSITORY, ".envpipe/records/test/")
    return [json.loads(body) for key, body in sorted(found.items()) if "-apply-" in key]


def error_line(stderr: str) -> str:
    [line] = [line for line in stderr.splitlines() if line.startswith("envpipe:")]
    return line


def test_an_html_answer_is_a_failed_stage_with_one_line_and_a_record(working_copy, endpoint, cloudformation):
    endpoint.answers["CreateChangeSet"] = NOT_AWS

    result = run_envpipe(["apply", "test"], cwd=working_copy, env=through(endpoint), check=1)

    line = error_line(result.stderr)
    assert line.startswith(f"envpipe: error: cannot apply stack our-project-test: an answer from {endpoint.url} "
                           "that is no AWS response (Unable to parse response")
    assert "bug" not in result.stderr and "<html>" not in result.stderr
    [record] = apply_records()
    assert record["result"] == "failed" and "no AWS response" in record["error"]
    assert read_repository_file(REPOSITORY, lock_key("test")) is None


def test_an_error_without_code_or_message_names_the_status_and_endpoint(working_copy, endpoint, cloudformation):
    # The change set is made; the 503 comes as the stack is about to change.
    endpoint.answers["ExecuteChangeSet"] = EMPTY_503

    result = run_envpipe(["apply", "test"], cwd=working_copy, env=through(endpoint), check=1)

    assert error_line(result.stderr) == (
        "envpipe: error: stack our-project-test: executing the change set failed: "
        f"HTTP 503 (Service Unavailable) from {endpoint.url}, with no AWS error code")
    [record] = apply_records()
    assert record["result"] == "failed" and "HTTP 503" in record["error"]
    assert "CreateChangeSet" in endpoint.calls


def test_no_endpoint_at_all_is_a_failed_stage(working_copy, cloudformation):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{closed.getsockname()[1]}"  # bound, never listening

        result = run_envpipe(["apply", "test"], cwd=working_copy, env=through(nobody), check=1)

    assert f'cannot apply stack our-project-test: Could not connect to the endpoint URL: "{nobody}/"' \
        in error_line(result.stderr)
    [record] = apply_records()
    assert record["result"] == "failed"


@pytest.mark.parametrize("operation, missing", [
    ("DescribeStacks", "Stacks"),
    ("CreateChangeSet", "Id, StackId"),
])
def test_an_answer_that_parses_but_lacks_its_fields_is_a_failed_stage(working_copy, endpoint, operation, missing):
    endpoint.answers[operation] = aws_response(operation, "")

    result = run_envpipe(["apply", "test"], cwd=working_copy, env=through(endpoint), check=1)

    assert error_line(result.stderr).endswith(f"{endpoint.url} answered {operation} without {missing}: "
                                              "an incomplete answer (a proxy in between?); run again")
    [record] = apply_records()
    assert record["result"] == "failed"


def test_a_plan_that_meets_a_broken_answer_exits_1_even_with_detailed_exitcode(working_copy, endpoint,
                                                                               cloudformation):
    endpoint.answers["DescribeStacks"] = NOT_AWS

    result = run_envpipe(["plan", "test", "--detailed-exitcode"], cwd=working_copy, env=through(endpoint),
                         check=1)

    assert "cannot plan stack our-project-test: an answer from" in error_line(result.stderr)


class Exploding:
    """A runner with a bug in it."""

    name = "cloudformation"

    def apply(self, request):
        raise RuntimeError("a bug in the runner")


class Interrupted:
    name = "cloudformation"

    def apply(self, request):
        raise KeyboardInterrupt()


class LockWatchingRepository:
    """The repository, noting for each record of ``test`` written whether the
    environment's lock was held at that moment."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.locked_while_recording: List[bool] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def write(self, key: str, data: bytes, **kwargs: Any) -> str:
        if key.startswith(".envpipe/records/test/"):
            self.locked_while_recording.append(read_lock(self.inner, "test") is not None)
        return self.inner.write(key, data, **kwargs)


@pytest.mark.parametrize("runner, result, error", [
    (Exploding(), "failed", "internal error (a bug in envpipe): RuntimeError: a bug in the runner"),
    (Interrupted(), "interrupted", "interrupted (SIGINT)"),
])
def test_whatever_ends_an_apply_its_record_is_written_before_the_lock_is_released(
        s3_bucket, tmp_path, runner, result, error):
    pipeline = Pipeline(tmp_path, REPOSITORY)
    pipeline.release("1.0.1")
    repository = LockWatchingRepository(pipeline.ctx.repository)
    ctx = replace(pipeline.ctx, repository=repository)

    with pytest.raises((RuntimeError, KeyboardInterrupt)):
        apply_stage.apply(ctx, "test", runner=runner)

    [record] = apply_records()
    assert record["result"] == result and record["error"].startswith(error)
    assert repository.locked_while_recording == [True]
    assert read_lock(repository.inner, "test") is None
