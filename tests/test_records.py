"""Append-only records with CI provenance; status and history read them (SPEC §4, §6)."""
from __future__ import annotations

import datetime as dt
import json
import os
import re

import pytest

from conftest import list_repository
from envpipe_agent.ci_context import CIContext, detect
from envpipe_agent import records
from envpipe_agent.records import RecordWriter, history, latest_test, read_summary
from envpipe_agent.parallel import parallel_map
from envpipe_agent.redact import Redactor
from envpipe_agent.repository import open_repository
from envpipe_agent.stages.promote import promote
from envpipe_agent.stages.publish import publish

GOCD = CIContext(server="gocd", build="17", label="17", build_url="https://gocd.example.com/go/tab/build/detail/p/17/s/1/j",
                 user="bob", job="p")
MOMENT = dt.datetime(2026, 11, 29, 5, 43, 12, 123456, tzinfo=dt.timezone.utc)

FOLDER_ONLY = pytest.mark.parametrize("repository_url", ["folder"], indirect=True)


def writer(repository, ci=GOCD) -> RecordWriter:
    return RecordWriter(repository, ci, Redactor())


@pytest.fixture
def repo(repository_url):
    return open_repository(repository_url, dict(os.environ))


def test_a_record_is_written_under_its_day_stamp_action_and_version_with_ci_context(repo, repository_url):
    record = writer(repo).write("staging", "apply", "1.0.3", "done", {"outputs": {"url": "x"}}, moment=MOMENT)
    assert record["key"] == ".envpipe/records/staging/2026-11-29/20261129T054312.123456Z-apply-1.0.3.json"
    stored = json.loads(repo.read(record["key"]))
    assert stored["ci"]["build_url"] == GOCD.build_url and stored["ci"]["user"] == "bob"
    assert (stored["action"], stored["version"], stored["result"], stored["at"]) == (
        "apply", "1.0.3", "done", "2026-11-29T05:43:12Z")
    assert stored["outputs"] == {"url": "x"}


def test_records_at_the_same_moment_never_replace_each_other(repo):
    first = writer(repo).write("test", "test", "1.0.1", "failed", moment=MOMENT)
    second = writer(repo).write("test", "test", "1.0.1", "passed", moment=MOMENT)
    assert first["key"] != second["key"]
    assert json.loads(repo.read(first["key"]))["result"] == "failed"
    assert json.loads(repo.read(second["key"]))["result"] == "passed"


def test_summary_and_test_result_follow_the_latest_record(repo):
    writer(repo).write("test", "test", "1.0.1", "failed")
    assert latest_test(repo, "test", "1.0.1")["result"] == "failed" and not records.version_passed(repo, "test", "1.0.1")
    writer(repo).write("test", "test", "1.0.1", "passed")
    writer(repo).write("test", "apply", "1.0.1", "done")
    assert records.version_passed(repo, "test", "1.0.1") and not records.version_passed(repo, "test", "1.0.2")
    summary = read_summary(repo, "test")
    assert set(summary) == {"test", "apply"} and summary["test"]["result"] == "passed"


def test_history_is_newest_first_and_reaches_back_past_the_first_window(repo):
    now = dt.datetime.now(dt.timezone.utc)
    for days, version in ((40, "1.0.1"), (3, "1.0.2"), (0, "1.0.3")):
        writer(repo).write("test", "promote", version, "done", moment=now - dt.timedelta(days=days))
    assert [r["version"] for r in history(repo, "test", limit=20, now=now)] == ["1.0.3", "1.0.2", "1.0.1"]
    assert [r["version"] for r in history(repo, "test", limit=2, now=now)] == ["1.0.3", "1.0.2"]


def plant_records(repo, environment, moments, layout="day"):
    """Records as envpipe writes them (``day``) or wrote them before day folders (``flat``)."""
    def put(numbered):
        n, moment = numbered
        key = records.record_key(environment, moment, "apply", f"1.0.{n}")
        if layout == "flat":
            key = key.replace(f"/{moment:%Y-%m-%d}/", "/")
        body = {"action": "apply", "environment": environment, "version": f"1.0.{n}", "result": "done",
                "at": records.iso(moment)}
        repo.write(key, json.dumps(body).encode())
    parallel_map(put, list(enumerate(moments)))


def test_history_reads_both_layouts_newest_first(repo):
    plant_records(repo, "test", [MOMENT - dt.timedelta(days=400), MOMENT - dt.timedelta(days=2)], layout="flat")
    plant_records(repo, "test", [MOMENT - dt.timedelta(days=1), MOMENT], layout="day")
    writer(repo).write("test", "promote", "2.0.0", "done", moment=MOMENT + dt.timedelta(hours=1))
    found = [(r["action"], r["version"]) for r in history(repo, "test", limit=10, now=MOMENT)]
    assert found == [("promote", "2.0.0"), ("apply", "1.0.1"), ("apply", "1.0.0"), ("apply", "1.0.1"),
                     ("apply", "1.0.0")]
    assert [r["at"][:10] for r in history(repo, "test", limit=3, now=MOMENT)] == [
        "2026-11-29", "2026-11-29", "2026-11-28"]


class RequestCounter:
    """Counts the requests an S3 repository's client sends, by operation."""

    def __init__(self, repo):
        self.calls = []
        repo.client.meta.events.register("before-call.s3", lambda model, **_: self.calls.append(model.name))

    def count(self, operation):
        return self.calls.count(operation)


@pytest.mark.parametrize("repository_url", ["s3"], indirect=True)
@pytest.mark.parametrize("quiet_days", [0, 30])
def test_the_newest_records_cost_the_same_few_requests_however_many_there_are(repo, quiet_days):
    # 1,500 records over 60 days, more than one 1,000-key page: listing them all
    # would take two pages per look, and more with every build.
    moments = [MOMENT - dt.timedelta(days=day, minutes=minute) for day in range(60) for minute in range(25)]
    plant_records(repo, "test", moments)
    counter = RequestCounter(repo)
    shown = list(history(repo, "test", limit=20, now=MOMENT + dt.timedelta(days=quiet_days)))
    assert [r["at"] for r in shown] == [records.iso(m) for m in moments[:20]]
    # this year's day folders, then the newest day
    assert counter.count("ListObjectsV2") == 2 and counter.count("GetObject") == 20


@pytest.mark.parametrize("repository_url", ["s3"], indirect=True)
def test_sparse_days_and_last_years_records_are_found_in_a_few_listings(repo):
    moments = [dt.datetime(2026, 12, 31, 12, tzinfo=dt.timezone.utc) - dt.timedelta(days=3 * n) for n in range(40)]
    plant_records(repo, "test", moments)
    counter = RequestCounter(repo)
    shown = list(history(repo, "test", limit=20, now=dt.datetime(2027, 2, 1, tzinfo=dt.timezone.utc)))
    assert [r["at"] for r in shown] == [records.iso(m) for m in moments[:20]]
    # this year's days (none), the oldest record and whether flat ones follow it (2),
    # last year's days, then 1+2+4+8+16 days: 9, not one per day
    assert counter.count("ListObjectsV2") <= 9 and counter.count("GetObject") == 20


# --- end to end: status and history ------------------------------------------------------


def test_status_lists_which_version_each_environment_holds(project):
    ctx = project.context()
    publish(ctx, version="1.0.1")
    promote(ctx, "test", "1.0.1")
    table = project.envpipe("status", check=0).stdout
    assert table.splitlines()[0].split()[:2] == ["ENVIRONMENT", "VERSION"]
    environments = table.split("\n\n", 1)[0]  # the path's table; what waits at each gate follows
    rows = [re.split(r"\s{2,}", line)[:2] for line in environments.splitlines()[1:]]
    assert rows == [["test", "1.0.1"], ["staging", "-"], ["production (manual)", "-"]]
    as_json = json.loads(project.envpipe("status", "--json", check=0).stdout)
    assert json.loads(project.envpipe("--json", "status", check=0).stdout) == as_json
    assert [(e["environment"], e["version"]) for e in as_json["environments"]] == [
        ("test", "1.0.1"), ("staging", None), ("production", None)]
    assert as_json["environments"][2]["approval"] == "manual"
    assert as_json["environments"][0]["last"]["promote"]["version"] == "1.0.1"


@FOLDER_ONLY
def test_history_lists_records_newest_first(project):
    ctx = project.context()
    publish(ctx, version="1.0.1")
    project.write("main.tf", "# two\n")
    publish(ctx, version="1.0.2")
    promote(ctx, "test", "1.0.1")
    promote(ctx, "test", "1.0.2")
    records = json.loads(project.envpipe("history", "test", "--json", check=0).stdout)
    assert [(r["action"], r["version"]) for r in records] == [("promote", "1.0.2"), ("promote", "1.0.1")]
    assert "promote" in project.envpipe("history", check=0).stdout
    stored = list_repository(project.repository, ".envpipe/records/test/")
    assert len(stored) == 2 and all(json.loads(b)["ci"]["server"] == "local" for b in stored.values())


@FOLDER_ONLY
def test_status_of_an_empty_repository_shows_every_environment_empty(project):
    entries = json.loads(project.envpipe("status", "--json", check=0).stdout)["environments"]
    assert all(e["version"] is None for e in entries) and len(entries) == 3


def test_ci_context_of_a_gocd_agent_reaches_the_record(repo):
    ci = detect({"GO_SERVER_URL": "https://g/go", "GO_PIPELINE_NAME": "p", "GO_PIPELINE_COUNTER": "4",
                 "GO_STAGE_NAME": "s", "GO_STAGE_COUNTER": "1", "GO_JOB_NAME": "j", "GO_TRIGGER_USER": "erin"})
    record = RecordWriter(repo, ci, Redactor()).write("test", "destroy", None, "done")
    stored = json.loads(repo.read(record["key"]))
    assert stored["ci"]["build_url"] == "https://g/go/tab/build/detail/p/4/s/1/j" and stored["ci"]["user"] == "erin"
    assert record["key"].endswith("-destroy-none.json")


@FOLDER_ONLY
@pytest.mark.parametrize("body", [b"[1]\n", b'"passed"\n', b"null\n", b"42\n"])
def test_a_summary_result_or_record_that_is_json_but_no_object_reads_as_absent(project, body):
    ctx = project.context()
    publish(ctx, version="1.0.1")
    promote(ctx, "test", "1.0.1")
    for key in (".envpipe/results/test/1.0.1.json", ".envpipe/summary/test/test.json",
                ".envpipe/records/test/20261129T000000.000000Z-test-1.0.1.json"):
        ctx.repository.write(key, body)
    assert latest_test(ctx.repository, "test", "1.0.1") is None
    assert set(read_summary(ctx.repository, "test")) == {"promote"}
    refused = project.envpipe("promote", "1.0.1", "--to", "staging", check=3)  # the gate, not a crash
    assert "has not passed its tests in test" in refused.stderr
    assert [r["action"] for r in json.loads(project.envpipe("history", "test", "--json", check=0).stdout)] == [
        "promote"]
    project.envpipe("status", check=0)


def test_status_table_never_shows_an_older_versions_apply_or_test_as_the_current_ones():
    from envpipe_agent.commands.versions import status_table

    applied = {"key": "x/20261129T070000.000000Z-apply-1.0.1.json", "version": "1.0.1", "at": "07:00", "result": "done"}
    tested = {"key": "x/20261129T070100.000000Z-test-1.0.1.json", "version": "1.0.1", "at": "07:01", "result": "passed"}
    destroyed = {"key": "x/20261129T070200.000000Z-destroy-1.0.1.json", "version": "1.0.1", "at": "07:02",
                 "result": "done"}
    promoted_newer = {"environment": "staging", "approval": "auto", "version": "1.0.2", "promoted": {"at": "07:03"},
                      "last": {"apply": applied, "test": tested}}
    emptied = {"environment": "test", "approval": "auto", "version": None, "promoted": None,
               "last": {"apply": applied, "destroy": destroyed, "test": tested}}

    staging, test = status_table([promoted_newer, emptied]).splitlines()[1:]

    assert "- (was 1.0.1: 07:00 done)" in staging and "- (was 1.0.1: 07:01 passed)" in staging
    assert "- (was 1.0.1: 07:02 done)" in test  # the destroy, newer than the apply, is the one shown
