"""Promotion policy (SPEC §10): freezes, soak time and windows refuse changes, say why,
and yield to a recorded --force --reason.

In-process tests pass the clock in; the end-to-end ones run envpipe as a subprocess
with windows computed from the current time.
"""
from __future__ import annotations

import datetime as dt
import json
import os

import pytest

from conftest import list_repository, read_repository_file
from envpipe_agent.ci_context import detect
from envpipe_agent.config import load_config
from envpipe_agent.context import StageContext
from envpipe_agent.errors import PolicyHold, UsageError
from envpipe_agent.generate import render
from envpipe_agent.records import RecordWriter
from envpipe_agent.redact import Redactor
from envpipe_agent.repository import open_repository
from envpipe_agent.stages.apply import apply, destroy
from envpipe_agent.stages.freeze import freeze, unfreeze
from envpipe_agent.stages.promote import check_promotion, promote
from envpipe_agent.stages.publish import publish
from envpipe_agent.stages.status import status

FOLDER_ONLY = pytest.mark.parametrize("repository_url", ["folder"], indirect=True)
JENKINS = {"JENKINS_URL": "https://jenkins.example.com/", "BUILD_NUMBER": "7", "JOB_NAME": "our-project",
           "BUILD_URL": "https://jenkins.example.com/job/our-project/7/", "BUILD_USER_ID": "alice"}
SUNDAY_EVENING = dt.datetime(2026, 11, 29, 20, 6, tzinfo=dt.timezone.utc)
MONDAY_NOON = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture(autouse=True)
def approver(monkeypatch):
    """Production is approval: manual: every change to it here is approved by carol."""
    monkeypatch.setenv("ENVPIPE_APPROVER", "carol")


def with_policy(project, staging: str = "", production: str = "") -> None:
    """Add settings under staging and production in the project's envpipe.yml."""
    config = project.root / "envpipe.yml"
    text = config.read_text()
    text = text.replace("    vars: {instance_count: 2}\n", "    vars: {instance_count: 2}\n" + staging)
    text = text.replace("    approval: manual\n", "    approval: manual\n" + production)
    config.write_text(text)


def context(project, environ=None) -> StageContext:
    return StageContext.load(project.root / "envpipe.yml", environ={**os.environ, **(environ or {})})


def record_test(project, environment: str, version: str, result: str, moment: dt.datetime) -> None:
    records = RecordWriter(open_repository(project.repository, dict(os.environ)), detect({}), Redactor())
    records.write(environment, "test", version, result, moment=moment)


def records_of(project, environment: str, action: str) -> list:
    stored = list_repository(project.repository, f".envpipe/records/{environment}/")
    return [json.loads(body) for key, body in sorted(stored.items()) if f"-{action}-" in key]


@pytest.fixture
def staged(project):
    """1.0.1 published, in staging, and passed there on Sunday evening."""
    ctx = context(project)
    publish(ctx, version="1.0.1")
    record_test(project, "test", "1.0.1", "passed", SUNDAY_EVENING - dt.timedelta(hours=1))
    promote(ctx, "staging", "1.0.1", now=SUNDAY_EVENING)
    record_test(project, "staging", "1.0.1", "passed", SUNDAY_EVENING)
    return project


# --- freeze -------------------------------------------------------------------------


@FOLDER_ONLY
def test_a_frozen_environment_refuses_promote_naming_who_and_why_until_unfrozen(staged):
    ctx = context(staged, JENKINS)
    frozen = freeze(ctx, "production", "year-end change freeze", until="2027-01-04T09:00:00Z", now=SUNDAY_EVENING)
    assert (frozen["by"], frozen["until"]) == ("alice", "2027-01-04T09:00:00Z")
    stored = json.loads(read_repository_file(staged.repository, ".envpipe/freeze/production.json"))
    assert stored["reason"] == "year-end change freeze" and stored["ci"]["build_url"] == JENKINS["BUILD_URL"]
    with pytest.raises(PolicyHold, match="production is frozen by alice .*until 2027-01-04T09:00:00Z: "
                                         "year-end change freeze"):
        promote(ctx, "production", "1.0.1", now=MONDAY_NOON)
    assert read_repository_file(staged.repository, "production/.envpipe/manifest.json") is None
    assert unfreeze(ctx, "production", now=MONDAY_NOON)["reason"] == "year-end change freeze"
    assert promote(ctx, "production", "1.0.1", now=MONDAY_NOON).version == "1.0.1"
    assert [r["result"] for r in records_of(staged, "production", "freeze")] == ["done"]
    [unfrozen] = records_of(staged, "production", "unfreeze")
    assert unfrozen["freeze"]["by"] == "alice"


@FOLDER_ONLY
def test_a_freeze_whose_until_has_passed_is_no_freeze(staged):
    ctx = context(staged)
    freeze(ctx, "production", "deploy window for the migration", until="2h", now=SUNDAY_EVENING)
    with pytest.raises(PolicyHold, match="frozen"):
        promote(ctx, "production", "1.0.1", now=SUNDAY_EVENING + dt.timedelta(hours=1))
    assert promote(ctx, "production", "1.0.1", now=SUNDAY_EVENING + dt.timedelta(hours=2)).copied == 1


@FOLDER_ONLY
@pytest.mark.parametrize("reason, until, complaint", [
    ("", None, "needs --reason"),
    ("  ", None, "needs --reason"),
    ("audit", "2026-11-29T19:00:00Z", "in the past"),
    ("audit", "next tuesday", "neither an ISO 8601 time"),
])
def test_bad_freezes_change_nothing(project, reason, until, complaint):
    with pytest.raises(UsageError, match=complaint):
        freeze(context(project), "production", reason, until=until, now=SUNDAY_EVENING)
    assert list_repository(project.repository, ".envpipe/") == {}


@FOLDER_ONLY
def test_unfreezing_what_is_not_frozen_says_so_and_records_nothing(project):
    assert unfreeze(context(project), "production") is None
    assert list_repository(project.repository, ".envpipe/") == {}


# --- soak ---------------------------------------------------------------------------


@FOLDER_ONLY
def test_soak_counts_from_the_pass_in_the_previous_environment(staged):
    with_policy(staged, production="    soak: 30m\n")
    ctx = context(staged)
    with pytest.raises(PolicyHold, match=r"passed its tests in staging at 2026-11-29T20:06:00Z; the 30m soak "
                                         r"needs 29m more \(until 2026-11-29T20:36:00Z\)"):
        promote(ctx, "production", "1.0.1", now=SUNDAY_EVENING + dt.timedelta(minutes=1))
    assert promote(ctx, "production", "1.0.1", now=SUNDAY_EVENING + dt.timedelta(minutes=30)).copied == 1


@FOLDER_ONLY
def test_a_failed_test_after_the_pass_restarts_the_soak_and_a_repeated_pass_does_not(staged):
    with_policy(staged, production="    soak: 30m\n")
    ctx = context(staged)
    # Passed at 20:06 (the fixture), passed again at 20:16: still soaking since 20:06.
    record_test(staged, "staging", "1.0.1", "passed", SUNDAY_EVENING + dt.timedelta(minutes=10))
    assert check_promotion(ctx, "production", "1.0.1", now=SUNDAY_EVENING + dt.timedelta(minutes=30)).allowed
    # Failed at 20:26, passed at 20:36: the soak starts again at 20:36.
    record_test(staged, "staging", "1.0.1", "failed", SUNDAY_EVENING + dt.timedelta(minutes=20))
    assert [h.rule for h in check_promotion(ctx, "production", "1.0.1",
                                            now=SUNDAY_EVENING + dt.timedelta(minutes=31)).holds] == ["gate", "soak"]
    record_test(staged, "staging", "1.0.1", "passed", SUNDAY_EVENING + dt.timedelta(minutes=30))
    held = check_promotion(ctx, "production", "1.0.1", now=SUNDAY_EVENING + dt.timedelta(minutes=50))
    assert [h.until for h in held.holds] == ["2026-11-29T21:06:00Z"]
    assert "needs 10m more" in held.holds[0].reason


# --- windows ------------------------------------------------------------------------


@FOLDER_ONLY
def test_a_closed_window_says_when_it_opens(staged):
    with_policy(staged, production="    window: 'Mon-Fri 09:00-16:00 Europe/London'\n")
    ctx = context(staged)
    with pytest.raises(PolicyHold, match=r"outside its promotion window \(Mon-Fri 09:00-16:00 Europe/London\): "
                                         r"it next opens Mon 2026-11-30 09:00 Europe/London \(09:00 UTC\)"):
        promote(ctx, "production", "1.0.1", now=SUNDAY_EVENING)
    assert promote(ctx, "production", "1.0.1", now=MONDAY_NOON).copied == 1


# --- overrides and the check ----------------------------------------------------------


@FOLDER_ONLY
def test_force_overrides_every_hold_and_the_records_name_them(staged):
    with_policy(staged, production="    soak: 30m\n    window: 'Mon-Fri 09:00-16:00 UTC'\n")
    ctx = context(staged, JENKINS)
    freeze(ctx, "production", "audit", now=SUNDAY_EVENING)
    result = promote(ctx, "production", "1.0.1", force=True, reason="INC-7 hotfix",
                     now=SUNDAY_EVENING + dt.timedelta(minutes=5))
    assert result.forced and result.copied == 1
    [override] = records_of(staged, "production", "override")
    assert override["overrides"] == "promote" and override["reason"] == "INC-7 hotfix"
    assert override["overridden"] == ["freeze", "soak", "window"]
    assert "frozen by alice" in override["holds"][0]["reason"] and "25m more" in override["holds"][1]["reason"]
    [promoted] = records_of(staged, "production", "promote")
    assert promoted["forced"] is True and promoted["overridden"] == ["freeze", "soak", "window"]
    manifest = json.loads(read_repository_file(staged.repository, "production/.envpipe/manifest.json"))
    assert manifest["promoted"]["overridden"] == ["freeze", "soak", "window"]


@FOLDER_ONLY
def test_the_check_lists_every_reason_and_changes_nothing(staged):
    with_policy(staged, production="    window: 'Mon-Fri 09:00-16:00 UTC'\n")
    ctx = context(staged)
    freeze(ctx, "production", "audit", now=SUNDAY_EVENING)
    before = list_repository(staged.repository, "")
    check = check_promotion(ctx, "production", "1.0.1", now=SUNDAY_EVENING)
    assert [h.rule for h in check.holds] == ["freeze", "window"] and not check.allowed
    assert check.as_dict()["holds"][1]["until"] == "2026-11-30T09:00:00Z"
    assert [h.rule for h in check_promotion(ctx, "production", "1.0.1",
                                            now=MONDAY_NOON).holds] == ["freeze"]
    assert list_repository(staged.repository, "") == before  # no lock, no record


@FOLDER_ONLY
def test_apply_and_destroy_of_a_frozen_environment_are_refused_before_anything_runs(staged):
    ctx = context(staged)
    freeze(ctx, "staging", "investigating INC-9", now=SUNDAY_EVENING)
    with pytest.raises(PolicyHold, match="apply into staging refused: staging is frozen .*envpipe apply staging --force"):
        apply(ctx, "staging", now=SUNDAY_EVENING)
    with pytest.raises(PolicyHold, match="destroy of staging refused: .*envpipe destroy staging --force"):
        destroy(ctx, "staging", now=SUNDAY_EVENING)
    assert records_of(staged, "staging", "apply") == records_of(staged, "staging", "destroy") == []
    assert list_repository(staged.repository, ".envpipe/locks/") == {}


# --- end to end, with windows computed from the current time --------------------------


def windows_from_now() -> tuple:
    """A window open now (from an hour ago for three hours) and one closed now (opening
    in three hours): whatever the day and time the suite runs."""
    now = dt.datetime.now(dt.timezone.utc)
    open_from, closed_from = now - dt.timedelta(hours=1), now + dt.timedelta(hours=3)
    return (f"* {open_from:%H}:00-{open_from + dt.timedelta(hours=3):%H}:00 UTC",
            f"* {closed_from:%H}:00-{closed_from + dt.timedelta(hours=1):%H}:00 UTC")


@FOLDER_ONLY
def test_end_to_end_freeze_check_force_and_status(staged):
    open_window, _ = windows_from_now()
    with_policy(staged, production=f"    window: '{open_window}'\n")
    staged.envpipe("promote", "1.0.1", "--to", "production", "--check", check=0)
    staged.envpipe("freeze", "production", "--reason", "year-end freeze", "--until", "2d", env=JENKINS, check=0)
    refused = staged.envpipe("promote", "1.0.1", "--to", "production", check=3)
    assert "production is frozen by alice" in refused.stderr and "year-end freeze" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    checked = staged.envpipe("promote", "1.0.1", "--to", "production", "--check", "--json", check=3)
    assert [h["rule"] for h in json.loads(checked.stdout)["holds"]] == ["freeze"]
    assert read_repository_file(staged.repository, "production/.envpipe/manifest.json") is None
    staged.envpipe("promote", "1.0.1", "--to", "production", "--force", check=2)
    staged.envpipe("promote", "1.0.1", "--to", "production", "--check", "--force", "--reason", "x", check=2)
    staged.envpipe("promote", "1.0.1", "--to", "production", "--force", "--reason", "CHG-99 approved", check=0)
    [override] = records_of(staged, "production", "override")
    assert (override["overridden"], override["reason"]) == (["freeze"], "CHG-99 approved")
    said = staged.envpipe("unfreeze", "production", check=0).stdout
    assert "unfrozen" in said and "year-end freeze" in said
    assert "was not frozen" in staged.envpipe("unfreeze", "production", check=0).stdout


@FOLDER_ONLY
def test_end_to_end_closed_window_and_unfinished_soak(staged):
    _, closed_window = windows_from_now()
    now = dt.datetime.now(dt.timezone.utc)
    record_test(staged, "staging", "1.0.1", "failed", now - dt.timedelta(minutes=2))
    record_test(staged, "staging", "1.0.1", "passed", now - dt.timedelta(minutes=1))  # the soak starts here
    with_policy(staged, production=f"    soak: 30m\n    window: '{closed_window}'\n")
    refused = staged.envpipe("promote", "1.0.1", "--to", "production", check=3).stderr
    assert "the 30m soak needs 2" in refused and "outside its promotion window" in refused
    opening = (now + dt.timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    assert f"it next opens {opening:%a %Y-%m-%d %H:%M} UTC;" in refused
    checked = staged.envpipe("promote", "1.0.1", "--to", "production", "--check", check=3).stderr
    assert "would be refused now" in checked and "soak" in checked


@FOLDER_ONLY
@pytest.mark.parametrize("setting, complaint", [
    ("    soak: 30 minutes\n", "environments[2].soak: '30 minutes' is not a duration"),
    ("    window: 'Mon-Fri 09:00-16:00 Europe/Lundun'\n", "unknown time zone 'Europe/Lundun'"),
    ("    window: 'Mon-Sat-Sun 09:00-16:00 UTC'\n", "is not a day"),
])
def test_end_to_end_bad_policy_settings_exit_2(staged, setting, complaint):
    with_policy(staged, production=setting)
    refused = staged.envpipe("promote", "1.0.1", "--to", "production", check=2)
    assert complaint in refused.stderr and "Traceback" not in refused.stderr


@FOLDER_ONLY
def test_end_to_end_bad_freezes_exit_2_and_change_nothing(project):
    assert "--reason" in project.envpipe("freeze", "production", check=2).stderr
    assert "in the past" in project.envpipe("freeze", "production", "--reason", "x", "--until",
                                            "2020-01-01T00:00:00Z", check=2).stderr
    assert "not in envpipe.yml" in project.envpipe("freeze", "prod", "--reason", "x", check=2).stderr
    assert list_repository(project.repository, ".envpipe/") == {}


# --- status: freezes and what waits at each gate --------------------------------------


@FOLDER_ONLY
def test_status_shows_the_freeze_and_what_the_version_waits_for_at_each_gate(staged):
    with_policy(staged, production="    soak: 30m\n    window: 'Mon-Fri 09:00-16:00 Europe/London'\n")
    ctx = context(staged, JENKINS)
    freeze(ctx, "production", "year-end freeze", until="2027-01-04T09:00:00Z", now=SUNDAY_EVENING)
    test, staging, production = status(ctx, now=SUNDAY_EVENING + dt.timedelta(minutes=10))
    assert test["waiting"] is None and staging["waiting"] is None  # staging holds what test holds
    assert production["frozen"]["by"] == "alice" and production["frozen"]["reason"] == "year-end freeze"
    assert production["policy"] == {"soak": "30m", "window": ["Mon-Fri 09:00-16:00 Europe/London"]}
    waiting = production["waiting"]
    assert waiting["version"] == "1.0.1"
    assert [(h["rule"], h["summary"]) for h in waiting["waits_for"]] == [
        ("freeze", "by alice: year-end freeze"), ("soak", "20m more"),
        ("window", "opens Mon 2026-11-30 09:00 Europe/London (09:00 UTC)"), ("approval", "a person's approval")]
    # Monday noon: soak done, window open, still frozen and waiting for a person.
    production = status(ctx, now=MONDAY_NOON)[2]
    assert [h["rule"] for h in production["waiting"]["waits_for"]] == ["freeze", "approval"]
    unfreeze(ctx, "production", now=MONDAY_NOON)
    promote(ctx, "production", "1.0.1", now=MONDAY_NOON)
    production = status(ctx, now=MONDAY_NOON)[2]
    assert production["waiting"] is None and production["frozen"] is None


@FOLDER_ONLY
def test_end_to_end_status_table_json_and_page_show_freezes_and_waiting_versions(staged):
    _, closed_window = windows_from_now()
    with_policy(staged, production=f"    window: '{closed_window}'\n")
    staged.envpipe("freeze", "production", "--reason", "audit week", env=JENKINS, check=0)
    page = staged.root / "status.html"
    shown = staged.envpipe("status", "--html", str(page), check=0).stdout
    assert "FROZEN by alice until unfrozen: audit week" in shown
    [waiting_line] = [line for line in shown.splitlines() if line.startswith("production  1.0.1")]
    assert "freeze: by alice: audit week" in waiting_line and "window: opens" in waiting_line
    assert "approval" in waiting_line
    production = json.loads(staged.envpipe("status", "--json", check=0).stdout)["environments"][2]
    assert production["frozen"]["reason"] == "audit week"
    assert [h["rule"] for h in production["waiting"]["waits_for"]] == ["freeze", "window", "approval"]
    html = page.read_text()
    assert '<p class="banner frozen" role="status">Frozen by alice until unfrozen: audit week</p>' in html
    assert 'data-waiting="1.0.1"' in html and '<li data-rule="window"' in html


# --- generated pipelines ----------------------------------------------------------------


@pytest.mark.parametrize("target, check, plan, approval", [
    ("jenkins", "envpipe promote \"$ENVPIPE_PUBLISHED_VERSION\" --to production --check'",
     "envpipe plan production", "input {"),
    ("gocd-xml", "<arg>--check</arg>", "<arg>plan</arg>", '<approval type="manual"'),
    ("gocd-yaml", '- "--check"', '- "plan"\n', "type: manual"),
])
def test_generated_pipelines_check_the_promotion_before_the_plan_and_the_approval(tmp_path, target, check, plan,
                                                                                   approval):
    config = tmp_path / "envpipe.yml"
    config.write_text("project: our-project\nrepository: s3://bucket\nenvironments:\n  - name: staging\n"
                      "  - name: production\n    approval: manual\n    soak: 1h\n"
                      "    window: 'Mon-Fri 09:00-16:00 Europe/London'\n"
                      "ci:\n  gocd:\n    git_url: https://git.example.com/infra.git\n")
    text = render(load_config(config), target)
    assert text.count(check) == 1  # production only: elsewhere promote itself refuses, with the reason
    assert text.index(check) < text.index(plan) < text.index(approval)


@FOLDER_ONLY
def test_a_forced_apply_and_destroy_of_a_frozen_environment_run_and_record_the_override(staged):
    ctx = context(staged, JENKINS)
    freeze(ctx, "staging", "investigating INC-9", now=SUNDAY_EVENING)
    applied = apply(ctx, "staging", force=True, reason="INC-9 fix", now=SUNDAY_EVENING)
    assert applied.forced and applied.result == "done"
    destroyed = destroy(ctx, "staging", force=True, reason="INC-9 rebuild", now=SUNDAY_EVENING)
    assert destroyed.forced and destroyed.emptied == 1
    overrides = records_of(staged, "staging", "override")
    assert [(r["overrides"], r["reason"], r["overridden"]) for r in overrides] == [
        ("apply", "INC-9 fix", ["freeze"]), ("destroy", "INC-9 rebuild", ["freeze"])]
    assert "frozen by alice" in overrides[0]["holds"][0]["reason"]
    [applied_record] = records_of(staged, "staging", "apply")
    assert applied_record["forced"] is True and applied_record["overridden"] == ["freeze"]


@FOLDER_ONLY
@pytest.mark.parametrize("body", [b"not json", b"[]", b"\xff\xfe"])
def test_a_freeze_object_that_cannot_be_read_still_freezes_and_unfreeze_removes_it(staged, body):
    frozen = os.path.join(staged.repository, ".envpipe", "freeze", "production.json")
    os.makedirs(os.path.dirname(frozen))
    with open(frozen, "wb") as stream:
        stream.write(body)

    checked = staged.envpipe("promote", "1.0.1", "--to", "production", "--check", check=3).stderr
    assert "freeze object .envpipe/freeze/production.json cannot be read" in checked
    assert "'envpipe unfreeze production' removes it" in checked
    assert "cannot be read" in staged.envpipe("unfreeze", "production", check=0).stdout
    assert not os.path.exists(frozen)
    staged.envpipe("promote", "1.0.1", "--to", "production", "--check", check=0)
