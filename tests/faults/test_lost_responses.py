"""A conditional create whose answer is lost: S3 did it, the client retries and is
told the key exists. Locks, claims, manifests and records must recognise their own
write, not report it as someone else's (an environment locked out by its own lock,
a record written twice)."""
from __future__ import annotations

import os

import pytest

from conftest import list_repository
from envpipe_agent.ci_context import CIContext
from envpipe_agent.locking import environment_lock, lock_key, read_lock
from envpipe_agent.records import RecordWriter, history
from envpipe_agent.redact import Redactor
from envpipe_agent.repository import AlreadyExists, open_repository
from fault_proxy import proxy  # noqa: F401 - the fixture

AGENT = CIContext(server="jenkins", build="7", user="alice", host="agent-1")
REPO = "s3://our-project-repository/pipelines"


def repository():
    return open_repository(REPO, dict(os.environ))


def test_a_lock_whose_answer_was_lost_is_ours(proxy):
    proxy.add("PUT", r"/\.envpipe/locks/test\.json$", "lose")
    repo = repository()
    with environment_lock(repo, "test", "apply", AGENT) as lease:
        assert read_lock(repo, "test")["id"] == lease["id"]
    assert proxy.faults_applied() == [("PUT", "/our-project-repository/pipelines/.envpipe/locks/test.json", "lose")]
    assert read_lock(repo, "test") is None


def test_someone_elses_lock_is_still_refused_after_a_lost_answer(proxy):
    repo = repository()
    repo.write(lock_key("test"), b'{"id": "other", "expires": "2999-01-01T00:00:00Z"}')
    proxy.add("PUT", r"/\.envpipe/locks/test\.json$", "reset")
    with pytest.raises(AlreadyExists):
        repo.write(lock_key("test"), b'{"id": "mine"}', if_absent=True)


def test_a_record_whose_answer_was_lost_is_written_once(proxy):
    proxy.add("PUT", r"/\.envpipe/records/test/", "lose")
    repo = repository()
    written = RecordWriter(repo, AGENT, Redactor()).write("test", "apply", "1.0.1", "done", {"changed": True})
    records = list(history(repo, "test"))
    assert [r["key"] for r in records] == [written["key"]]
    assert len(list_repository(REPO, ".envpipe/records/test/")) == 1


@pytest.mark.parametrize("repository_url", ["s3"], indirect=True)
@pytest.mark.parametrize("key", [r"/1\.0\.1/\.envpipe/claim\.json$", r"/1\.0\.1/\.envpipe/manifest\.json$"])
def test_a_publish_whose_claim_or_manifest_answer_was_lost_completes(project, proxy, key):
    from envpipe_agent.stages.publish import publish

    proxy.add("PUT", key, "lose")
    ctx = project.context()
    result = publish(ctx, version="1.0.1")
    assert not result.already_published and len(proxy.faults_applied()) == 1
    again = publish(ctx, version="1.0.1")
    assert again.already_published and again.digest == result.digest
