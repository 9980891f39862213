"""S3 that throttles, fails, drops connections and cuts bodies short: envpipe retries
what is safe to retry, and when it keeps failing says which key and which S3
operation, with exit 1 (never exit 4)."""
from __future__ import annotations

import hashlib
import os

import pytest

from conftest import read_repository_file
from envpipe_agent.errors import RepositoryError
from envpipe_agent.repository import open_repository
from envpipe_agent.repository.base import download
from fault_proxy import proxy  # noqa: F401 - the fixture

REPO = "s3://our-project-repository/pipelines"
S3_ONLY = pytest.mark.parametrize("repository_url", ["s3"], indirect=True)
BIG = bytes(range(256)) * 4096  # 1 MiB, read in chunks


def repository(**environ):
    return open_repository(REPO, {**os.environ, **environ})


@pytest.mark.parametrize("fault", ["slowdown", "internal", "reset"])
def test_throttled_failed_and_dropped_requests_are_retried(proxy, fault):
    repo = repository()
    proxy.add("PUT", r"/data\.bin$", fault, times=2)
    proxy.add("GET", r"/data\.bin$", fault, times=2)
    repo.write("data.bin", BIG)
    assert repo.read("data.bin") == BIG
    assert len(proxy.faults_applied()) == 4


def test_a_body_cut_off_mid_stream_is_resumed(proxy):
    repo = repository()
    repo.write("data.bin", BIG)
    proxy.add("GET", r"/data\.bin$", "truncate", times=2)
    assert download(repo, "data.bin", None) == (len(BIG), hashlib.sha256(BIG).hexdigest())
    proxy.add("GET", r"/data\.bin$", "truncate", times=2)
    assert repo.read("data.bin") == BIG
    assert len(proxy.faults_applied()) == 4


def test_a_body_that_keeps_failing_names_the_key_and_operation(proxy):
    repo = repository()
    repo.write("data.bin", BIG)
    proxy.add("GET", r"/data\.bin$", "truncate", times=100)
    with pytest.raises(RepositoryError) as caught:
        download(repo, "data.bin", None)
    message = str(caught.value)
    assert "s3://our-project-repository/pipelines/data.bin" in message and "(GetObject)" in message
    assert "failed 5 times mid-stream" in message


def test_the_attempt_count_is_aws_max_attempts(proxy):
    repo = repository(AWS_MAX_ATTEMPTS="1")
    proxy.add("PUT", r"/data\.bin$", "slowdown", times=1)
    with pytest.raises(RepositoryError) as caught:
        repo.write("data.bin", b"x")
    assert "(PutObject): SlowDown" in str(caught.value) and "pipelines/data.bin" in str(caught.value)
    proxy.add("PUT", r"/data\.bin$", "slowdown", times=2)
    repository(AWS_MAX_ATTEMPTS="3").write("data.bin", b"x")


@S3_ONLY
def test_verify_and_apply_survive_cut_off_reads_and_report_lasting_ones(project, proxy):
    project.envpipe("publish", "--version", "1.0.1", check=0)
    project.envpipe("promote", "1.0.1", "--to", "test", check=0)
    proxy.add("GET", r"/test/main\.tf$", "truncate", times=2)
    proxy.add("GET", r"/test/\.envpipe/manifest\.json$", "truncate", times=1)
    project.envpipe("verify", "test", check=0)
    project.envpipe("apply", "test", check=0, timeout=300)
    assert [rule.times for rule in proxy.rules] == [0, 0]  # every fault was met, and survived
    proxy.add("GET", r"/test/main\.tf$", "truncate", times=100)
    result = project.envpipe("verify", "test", env={"AWS_MAX_ATTEMPTS": "2"}, check=1)
    [line] = [line for line in result.stderr.splitlines() if line.startswith("envpipe:")]
    assert "test/main.tf (GetObject)" in line and "mid-stream" in line
    assert read_repository_file(project.repository, ".envpipe/locks/test.json") is None


@S3_ONLY
def test_a_bad_attempt_count_is_a_usage_error(project):
    result = project.envpipe("status", env={"AWS_MAX_ATTEMPTS": "none"}, check=2)
    assert "AWS_MAX_ATTEMPTS" in result.stderr
