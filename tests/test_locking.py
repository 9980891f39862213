"""Environment leases: one holder, a wait, an expiry, and unlock on the record (SPEC §6)."""
from __future__ import annotations

import datetime as dt
import json
import os
import time

import pytest

from conftest import list_repository, read_repository_file
from envpipe_agent.ci_context import CIContext, detect
from envpipe_agent.errors import LockHeld, LockLost
from envpipe_agent.locking import DEFAULT_TTL_SECONDS, environment_lock, lock_key, read_lock
from envpipe_agent.records import iso, utc_now
from envpipe_agent.repository import open_repository
from envpipe_agent.stages.publish import publish

AGENT = CIContext(server="jenkins", build="12", build_url="https://jenkins.example.com/job/p/12/",
                  user="alice", host="agent-7")

FOLDER_ONLY = pytest.mark.parametrize("repository_url", ["folder"], indirect=True)


@pytest.fixture
def repo(repository_url):
    return open_repository(repository_url, dict(os.environ))


def held_lock(expires_in: float, holder: str = "bob@agent-9", build_url: str = "https://ci.example.com/b/3/") -> bytes:
    now = utc_now()
    return json.dumps({"id": "other", "holder": holder, "action": "apply", "build": "3", "build_url": build_url,
                       "acquired": iso(now), "expires": iso(now + dt.timedelta(seconds=expires_in))}).encode()


def test_lock_is_held_for_the_block_and_released_after(repo):
    with environment_lock(repo, "staging", "promote", AGENT) as lock:
        stored = read_lock(repo, "staging")
        assert stored["id"] == lock["id"] and stored["holder"] == "alice@agent-7"
        assert stored["build_url"] == AGENT.build_url and stored["action"] == "promote"
    assert read_lock(repo, "staging") is None


def test_lock_is_released_when_the_block_fails(repo):
    with pytest.raises(RuntimeError):
        with environment_lock(repo, "staging", "apply", AGENT):
            raise RuntimeError("terraform died")
    assert read_lock(repo, "staging") is None


def test_a_held_lock_refuses_naming_holder_and_build(repo):
    repo.write(lock_key("staging"), held_lock(3600))
    with pytest.raises(LockHeld) as caught:
        with environment_lock(repo, "staging", "promote", AGENT):
            pytest.fail("must not get the lock")
    message = str(caught.value)
    assert "bob@agent-9" in message and "https://ci.example.com/b/3/" in message
    assert "envpipe unlock staging" in message
    assert read_lock(repo, "staging")["holder"] == "bob@agent-9"


def test_an_expired_lock_is_broken_and_taken(repo):
    repo.write(lock_key("staging"), held_lock(-60))
    with environment_lock(repo, "staging", "promote", AGENT):
        assert read_lock(repo, "staging")["holder"] == "alice@agent-7"


def test_an_unreadable_lock_counts_as_expired(repo):
    repo.write(lock_key("staging"), b"[1, 2")
    with environment_lock(repo, "staging", "promote", AGENT):
        pass
    repo.write(lock_key("staging"), b"[1, 2]")
    with environment_lock(repo, "staging", "promote", AGENT):
        pass


def test_waiting_up_to_the_timeout_then_refusing(repo):
    """A fake clock: the wait is observed, not timed."""
    repo.write(lock_key("staging"), held_lock(3600))
    now = [utc_now()]
    sleeps = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += dt.timedelta(seconds=seconds)

    with pytest.raises(LockHeld):
        with environment_lock(repo, "staging", "promote", AGENT, timeout=30, clock=lambda: now[0], sleep=sleep):
            pass
    assert sum(sleeps) >= 30 and len(sleeps) > 1


def test_a_lock_released_while_waiting_is_taken(repo):
    repo.write(lock_key("staging"), held_lock(3600))

    def sleep(seconds: float) -> None:
        repo.delete([lock_key("staging")])  # the other holder finishes

    with environment_lock(repo, "staging", "promote", AGENT, timeout=600, sleep=sleep):
        assert read_lock(repo, "staging")["holder"] == "alice@agent-7"


def test_environments_lock_independently(repo):
    with environment_lock(repo, "staging", "promote", AGENT):
        with environment_lock(repo, "test", "promote", AGENT):
            assert read_lock(repo, "test") is not None


def test_a_renewal_extends_the_lease_from_now(repo):
    now = [utc_now()]
    with environment_lock(repo, "staging", "apply", AGENT, clock=lambda: now[0]) as lease:
        first = read_lock(repo, "staging")["expires"]
        now[0] += dt.timedelta(seconds=DEFAULT_TTL_SECONDS * 0.8)
        assert lease.renew()
        stored = read_lock(repo, "staging")
        assert stored["id"] == lease["id"] and stored["expires"] > first
        assert stored["expires"] == iso(now[0] + dt.timedelta(seconds=DEFAULT_TTL_SECONDS))
        lease.check()
    assert read_lock(repo, "staging") is None


def test_the_heartbeat_renews_while_the_block_runs(repo):
    """A lease of a fifth of a second renewed by its thread; the fake clock moves an
    hour at each renewal, so each one shows in the stored expiry."""
    now = [utc_now()]

    def clock():
        now[0] += dt.timedelta(hours=1)
        return now[0]

    with environment_lock(repo, "staging", "apply", AGENT, ttl=0.2, clock=clock) as lease:
        first = read_lock(repo, "staging")["expires"]
        deadline = time.monotonic() + 30
        while read_lock(repo, "staging")["expires"] == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert read_lock(repo, "staging")["expires"] > first
        lease.check()
    assert read_lock(repo, "staging") is None


def test_a_lease_taken_away_stops_the_holder_and_is_not_released(repo):
    with pytest.raises(LockLost) as caught:
        with environment_lock(repo, "staging", "apply", AGENT) as lease:
            repo.delete([lock_key("staging")])  # 'envpipe unlock' from another agent
            repo.write(lock_key("staging"), held_lock(3600, holder="bob@agent-9"))
            assert not lease.renew()
            lease.check()
    assert "bob@agent-9" in str(caught.value) and "nothing more was changed" in str(caught.value)
    assert read_lock(repo, "staging")["holder"] == "bob@agent-9"


def test_a_lease_that_could_not_be_renewed_in_time_stops_the_holder(repo):
    with pytest.raises(LockLost) as caught:
        with environment_lock(repo, "staging", "apply", AGENT, ttl=600) as lease:
            lease.renewed -= 600  # as if every renewal for the lease's length had failed
            lease.check()
    assert "could not be renewed for 600s" in str(caught.value)


# --- end to end ----------------------------------------------------------------------


def publish_in_process(project) -> None:
    publish(project.context(), version="1.0.1")


def plant_lock(project, body: bytes) -> None:
    open_repository(project.repository, dict(os.environ)).write(lock_key("test"), body)


def test_promote_into_a_locked_environment_exits_3_naming_the_holder(project):
    publish_in_process(project)
    plant_lock(project, held_lock(3600, holder="bob@agent-9"))
    result = project.envpipe("promote", "1.0.1", "--to", "test", "--lock-timeout", "0.5", check=3)
    assert "locked by bob@agent-9" in result.stderr and "https://ci.example.com/b/3/" in result.stderr
    # the wait is logged as progress; the failure itself is one line
    assert [line for line in result.stderr.splitlines() if line.startswith("envpipe:")] == [
        result.stderr.strip().splitlines()[-1]]
    assert read_repository_file(project.repository, "test/main.tf") is None


def test_promote_breaks_an_expired_lock(project):
    publish_in_process(project)
    plant_lock(project, held_lock(-1))
    project.envpipe("promote", "1.0.1", "--to", "test", check=0)
    assert read_repository_file(project.repository, "test/main.tf") is not None
    assert read_repository_file(project.repository, ".envpipe/locks/test.json") is None


def test_unlock_removes_the_lock_and_records_it(project):
    plant_lock(project, held_lock(3600, holder="bob@agent-9"))
    result = project.envpipe("unlock", "test", env={"BUILD_USER_ID": "carol", "JENKINS_URL": "https://j/",
                                                    "BUILD_NUMBER": "5", "JOB_NAME": "p"}, check=0)
    assert "lock of bob@agent-9 (apply) removed" in result.stdout
    assert read_repository_file(project.repository, ".envpipe/locks/test.json") is None
    records = [json.loads(body) for key, body in list_repository(project.repository, ".envpipe/records/test/").items()]
    [record] = [r for r in records if r["action"] == "unlock"]
    assert record["lock"]["holder"] == "bob@agent-9" and record["ci"]["user"] == "carol"
    assert "was not locked" in project.envpipe("unlock", "test", check=0).stdout


@FOLDER_ONLY
def test_unlock_of_an_unknown_environment_is_a_usage_error(project):
    assert "choose one of" in project.envpipe("unlock", "qa", check=2).stderr


def test_ci_context_detect_is_what_the_lock_names(project):
    # The holder string comes from the CI context: user@host.
    ci = detect({"JENKINS_URL": "https://j/", "BUILD_NUMBER": "1", "BUILD_USER_ID": "dave", "NODE_NAME": "n1"})
    repo = open_repository(project.repository, dict(os.environ))
    with environment_lock(repo, "test", "apply", ci):
        assert read_lock(repo, "test")["holder"] == "dave@n1"


@FOLDER_ONLY
@pytest.mark.parametrize("body", [b"[1]\n", b'"held"\n', b"null\n"])
def test_a_lock_that_is_json_but_no_object_reads_as_expired_and_is_broken(project, body):
    publish_in_process(project)
    plant_lock(project, body)
    lock = read_lock(open_repository(project.repository, dict(os.environ)), "test")
    assert lock is not None and lock["expires"] == "1970-01-01T00:00:00Z"
    project.envpipe("promote", "1.0.1", "--to", "test", check=0)
    assert read_repository_file(project.repository, "test/main.tf") is not None
    assert read_repository_file(project.repository, ".envpipe/locks/test.json") is None


@FOLDER_ONLY
def test_a_run_whose_lock_was_broken_and_taken_stops_and_leaves_the_new_holders_lock(project):
    """'envpipe unlock' of a build that only looked dead, then another run takes the
    lock: the first run must neither go on under it nor release it on its way out."""
    import subprocess
    import sys

    publish_in_process(project)
    project.envpipe("promote", "1.0.1", "--to", "test", check=0)
    paused = subprocess.Popen([sys.executable, "-m", "envpipe_agent", "apply", "test"], cwd=project.root,
                              env={**os.environ, "ENVPIPE_PAUSE_AT": "apply:fetched", "ENVPIPE_PAUSE_SECONDS": "8"},
                              stderr=subprocess.PIPE, text=True)
    assert paused.stderr is not None
    while "paused at apply:fetched" not in paused.stderr.readline():
        assert paused.poll() is None, "the apply ended before its pause"
    # 'envpipe unlock', and the next run takes the lock: in one write, well within the pause
    plant_lock(project, held_lock(3600, holder="bob@agent-9"))

    stderr = paused.communicate(timeout=120)[1]

    assert paused.returncode == 3, stderr
    assert "was taken from this run (now held by bob@agent-9" in stderr and "nothing more was changed" in stderr
    assert json.loads(read_repository_file(project.repository, ".envpipe/locks/test.json"))["holder"] == \
        "bob@agent-9"
    assert read_repository_file(project.repository, ".envpipe/state/test/terraform.tfstate") is None
