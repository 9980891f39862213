"""The generated on-demand jobs (SPEC §9): reap on a timer, and the testers'
environments job, for Jenkins and GoCD (XML and YAML)."""
from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET

import pytest
import yaml

from conftest import run_envpipe
from envpipe_agent.generate import environments_script, render
from test_generate import CONFIG, config_from

# on-demand environments are like staging: they take staging's credentials
LIKE_STAGING = CONFIG + "on_demand: {like: staging, ttl: 4h, max_ttl: 2d}\n"


def test_the_jenkins_reap_job_runs_hourly_with_the_credentials_of_like(tmp_path):
    text = render(config_from(LIKE_STAGING, tmp_path), "jenkins", job="reap")

    assert "triggers {\n        cron('H * * * *')\n    }" in text
    assert "disableConcurrentBuilds()" in text
    assert ("withCredentials([usernamePassword(credentialsId: 'aws-staging', usernameVariable: 'AWS_ACCESS_KEY_ID', "
            "passwordVariable: 'AWS_SECRET_ACCESS_KEY'), string(credentialsId: 'db-password', variable: "
            "'DB_PASSWORD')]) {\n                    sh '.envpipe-venv/bin/envpipe env reap'") in text
    assert "parameters {" not in text


def test_the_jenkins_environments_job_takes_action_name_version_and_ttl(tmp_path):
    text = render(config_from(LIKE_STAGING, tmp_path), "jenkins", job="environments")

    assert "choice(name: 'ACTION', choices: ['list', 'create', 'extend', 'destroy']" in text
    for name in ("NAME", "VERSION", "TTL"):
        assert f"string(name: '{name}', defaultValue: ''" in text
    assert "create\\'s default: 4h; at most 2d" in text
    assert "set -- --from staging" in text and "credentialsId: 'aws-staging'" in text
    assert "triggers" not in text


def test_the_gocd_reap_pipeline_has_a_timer_and_the_environments_pipeline_waits_for_a_person(tmp_path):
    config = config_from(LIKE_STAGING, tmp_path)
    reap = ET.fromstring(render(config, "gocd-xml", job="reap")).find("pipeline")
    environments = ET.fromstring(render(config, "gocd-xml", job="environments")).find("pipeline")

    assert reap.get("name") == "our-project-reap"
    assert (reap.find("timer").text, reap.find("timer").get("onlyOnChanges")) == ("0 0 * * * ?", "false")
    assert reap.find("stage").find("approval") is None
    assert [arg.text for arg in reap.findall(".//exec")[-1]] == ["-c", ".envpipe-venv/bin/envpipe env reap"]
    assert environments.get("name") == "our-project-environments" and environments.find("timer") is None
    assert environments.find("stage/approval").get("type") == "manual"
    variables = {v.get("name"): v.findtext("value") for v in environments.iter("variable")}
    assert {name: variables[name] for name in ("ACTION", "NAME", "VERSION", "TTL")} == {
        "ACTION": "list", "NAME": "", "VERSION": "", "TTL": ""}
    assert variables["AWS_ACCESS_KEY_ID"] == "{{SECRET:[envpipe][staging-AWS_ACCESS_KEY_ID]}}"


def test_the_gocd_yaml_pipelines_are_the_same(tmp_path):
    config = config_from(LIKE_STAGING, tmp_path)
    reap = yaml.safe_load(render(config, "gocd-yaml", job="reap"))["pipelines"]["our-project-reap"]
    environments = yaml.safe_load(render(config, "gocd-yaml", job="environments"))["pipelines"][
        "our-project-environments"]

    assert reap["timer"] == {"spec": "0 0 * * * ?", "only_on_changes": False}
    assert reap["stages"][0]["reap"]["jobs"]["reap"]["tasks"][-1]["exec"]["arguments"] == [
        "-c", ".envpipe-venv/bin/envpipe env reap"]
    assert environments["stages"][0]["environments"]["approval"] == {"type": "manual"}
    assert {k: environments["environment_variables"][k] for k in ("ACTION", "NAME", "VERSION", "TTL")} == {
        "ACTION": "list", "NAME": "", "VERSION": "", "TTL": ""}


@pytest.mark.parametrize("action, name, version, ttl, expected", [
    ("create", "review-1", "", "", "env create review-1 --from staging"),
    ("create", "review-1", "1.0.7", "2d", "env create review-1 --version 1.0.7 --ttl 2d"),
    ("extend", "review-1", "", "1h", "env extend review-1 --ttl 1h"),
    ("destroy", "review-1", "", "", "env destroy review-1"),
    ("list", "", "", "", None),
    # What a person types reaches envpipe as one argument, never as shell code.
    ("create", "x; touch pwned $(touch pwned)", "`touch pwned`", "", "env create x; touch pwned $(touch pwned) "
                                                                    "--version `touch pwned`"),
])
def test_the_environments_script_passes_parameters_as_arguments_only(tmp_path, action, name, version, ttl, expected):
    fake = tmp_path / "envpipe"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$*" >> calls\nprintf "%s\\n" "$#" >> calls\n')
    fake.chmod(0o755)
    environ = {**os.environ, "ACTION": action, "NAME": name, "VERSION": version, "TTL": ttl}

    subprocess.run(["/bin/sh", "-c", environments_script(str(fake), "staging")], cwd=tmp_path, env=environ,
                   check=True, timeout=30)

    calls = (tmp_path / "calls").read_text().splitlines()
    words = {"create": 5 + bool(ttl) * 2, "extend": 5, "destroy": 3}
    assert calls[-2:] == ["env list", "2"]
    if expected:
        assert calls[:2] == [expected, str(words[action])]
    assert not (tmp_path / "pwned").exists()


def test_an_unknown_action_exits_2_saying_which_are_known(tmp_path):
    result = subprocess.run(["/bin/sh", "-c", environments_script("true", "test")], capture_output=True, text=True,
                            env={**os.environ, "ACTION": "nuke", "NAME": "", "VERSION": "", "TTL": ""}, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == "ACTION must be one of list, create, extend, destroy, not 'nuke'"


def test_generate_takes_job_and_refuses_an_unknown_one(tmp_path):
    (tmp_path / "envpipe.yml").write_text(LIKE_STAGING)
    first = run_envpipe(["generate", "gocd-yaml", "--job", "reap"], cwd=tmp_path, check=0).stdout
    assert first == run_envpipe(["generate", "gocd-yaml", "--job", "reap"], cwd=tmp_path, check=0).stdout
    refused = run_envpipe(["generate", "jenkins", "--job", "nightly"], cwd=tmp_path, check=2)
    assert "invalid choice: 'nightly'" in refused.stderr
    output = tmp_path / "Jenkinsfile.reap"
    run_envpipe(["generate", "jenkins", "--job", "reap", "-o", str(output)], cwd=tmp_path, check=0)
    stale = run_envpipe(["generate", "jenkins", "--job", "environments", "-o", str(output), "--check"],
                        cwd=tmp_path, check=1)
    assert "'envpipe generate jenkins --job environments -o" in stale.stderr
