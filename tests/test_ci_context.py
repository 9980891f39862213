"""Who is running us: Jenkins, GoCD or a person (SPEC §5)."""
from __future__ import annotations

import pytest

from envpipe_agent.ci_context import detect, render_version
from envpipe_agent.errors import UsageError

JENKINS = {
    "JENKINS_URL": "https://jenkins.example.com/",
    "BUILD_NUMBER": "42",
    "JOB_NAME": "our-project/main",
    "BUILD_URL": "https://jenkins.example.com/job/our-project/job/main/42/",
    "GIT_COMMIT": "0123456789abcdef0123456789abcdef01234567",
    "BUILD_USER_ID": "alice",
    "NODE_NAME": "agent-3",
}
GOCD = {
    "GO_SERVER_URL": "https://gocd.example.com:8154/go",
    "GO_PIPELINE_NAME": "our-project",
    "GO_PIPELINE_COUNTER": "17",
    "GO_PIPELINE_LABEL": "17-abc",
    "GO_STAGE_NAME": "publish",
    "GO_STAGE_COUNTER": "2",
    "GO_JOB_NAME": "publish job",
    "GO_REVISION": "fedcba9876543210fedcba9876543210fedcba98",
    "GO_TRIGGER_USER": "bob",
    "GO_AGENT_NAME": "go-agent-1",
}


def test_jenkins_context_carries_build_commit_url_and_user():
    ci = detect(JENKINS)
    assert (ci.server, ci.build, ci.commit, ci.user, ci.job, ci.host) == (
        "jenkins", "42", JENKINS["GIT_COMMIT"], "alice", "our-project/main", "agent-3")
    assert ci.build_url == JENKINS["BUILD_URL"]
    assert ci.as_record()["build_url"] == JENKINS["BUILD_URL"]


def test_gocd_context_builds_the_job_url_from_server_pipeline_counter_stage_and_job():
    ci = detect(GOCD)
    assert (ci.server, ci.build, ci.label, ci.commit, ci.user) == (
        "gocd", "17", "17-abc", GOCD["GO_REVISION"], "bob")
    assert ci.build_url == ("https://gocd.example.com:8154/go/tab/build/detail/"
                            "our-project/17/publish/2/publish%20job")


def test_gocd_with_several_materials_takes_a_stable_revision():
    environ = {k: v for k, v in GOCD.items() if k != "GO_REVISION"}
    environ.update(GO_REVISION_ZZZ="2222", GO_REVISION_APP="1111")
    assert detect(environ).commit == "1111"


def test_outside_ci_the_context_is_local_with_the_user():
    ci = detect({"USER": "carol"})
    assert (ci.server, ci.build, ci.user) == ("local", None, "carol")


@pytest.mark.parametrize(
    ("environ", "template", "version"),
    [
        (JENKINS, "1.0.{build}", "1.0.42"),
        (JENKINS, "2.{build}+{short_commit}", "2.42+0123456789ab"),
        (GOCD, "1.0.{build}", "1.0.17"),
        (GOCD, "{label}", "17-abc"),
        (GOCD, "1.{build}-{commit}", "1.17-" + GOCD["GO_REVISION"]),
    ],
)
def test_version_template_is_filled_from_the_ci_build(environ, template, version):
    assert render_version(template, detect(environ)) == version


def test_outside_ci_a_build_template_asks_for_version():
    with pytest.raises(UsageError, match=r"outside CI: pass --version"):
        render_version("1.0.{build}", detect({}))


def test_jenkins_has_no_label_so_a_label_template_asks_for_version():
    with pytest.raises(UsageError, match=r"needs \{label\}.*in this jenkins build: pass --version"):
        render_version("{label}", detect(JENKINS))


def test_a_rendered_value_that_is_not_a_version_is_refused():
    environ = dict(GOCD, GO_PIPELINE_LABEL="release/7")
    with pytest.raises(UsageError, match="invalid version"):
        render_version("{label}", detect(environ))


def test_session_name_fits_sts_limits():
    name = detect(dict(JENKINS, JOB_NAME="a very/long job name " * 5)).session_name
    assert len(name) <= 64 and all(ch.isalnum() or ch in "+=,.@-_" for ch in name)
