"""envpipe generate: the pipeline each target renders, escaping, and the CLI around it."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import yaml

from envpipe_agent.config import load_config, parse_config
from envpipe_agent.errors import ConfigError, UsageError
from envpipe_agent.generate import TARGETS, render
from envpipe_agent.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = "<&>\"' ${HOME} $(id) `id` #{param} \\ end\nsecond line\r\n\tthird */ --> -- '''"

CONFIG = """\
project: our-project
description: Example stack
source: infra/
repository: s3://our-project-repository
version: "1.0.{build}"
environments:
  - name: test
  - name: staging
    description: Shared with QA
  - name: production
    approval: manual
    approvers: [alice, bob]
secrets: [DB_PASSWORD]
ci:
  install: "envpipe-agent[terraform]==0.1.0"
  variables: {AWS_DEFAULT_REGION: eu-west-1}
  jenkins:
    agent: terraform
    timeout_minutes: 45
    aws_credentials: {staging: aws-staging, production: aws-production}
    secret_credentials: {DB_PASSWORD: db-password}
  gocd:
    group: infrastructure
    git_url: https://git.example.com/acme/infra.git
    resources: [terraform]
    aws_credentials: [staging, production]
"""


def config_from(text: str, tmp_path: Path):
    path = tmp_path / "envpipe.yml"
    path.write_text(text)
    return load_config(path)


def hostile_config(tmp_path: Path, value: str = HOSTILE):
    """The example with ``value`` in every free-text field (HOSTILE, or a harmless one to compare)."""
    data = yaml.safe_load(CONFIG)
    data["description"] = value
    data["environments"][1]["description"] = value
    data["environments"][2]["description"] = value
    data["ci"]["variables"] = {"HOSTILE": value, "AWS_DEFAULT_REGION": "eu-west-1"}
    data["ci"]["gocd"]["git_url"] = "https://git.example.com/acme/infra.git?a=1&b=<2>#frag"
    return parse_config(data, tmp_path / "envpipe.yml")


# --- reading the three formats back ------------------------------------------------------

_GROOVY_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", "\\": "\\", "'": "'"}


def groovy_literals(line: str) -> List[str]:
    """The single-quoted string literals of one Groovy line, decoded; fails on an unclosed one."""
    literals, i = [], 0
    while i < len(line):
        if line[i] == "'":
            i, value = i + 1, []
            while True:
                assert i < len(line), f"unterminated string in {line!r}"
                ch = line[i]
                if ch == "\\":
                    code = line[i + 1]
                    if code == "u":
                        value.append(chr(int(line[i + 2:i + 6], 16)))
                        i += 6
                        continue
                    value.append(_GROOVY_ESCAPES[code])
                    i += 2
                    continue
                if ch == "'":
                    i += 1
                    break
                value.append(ch)
                i += 1
            literals.append("".join(value))
        elif line.startswith("//", i):
            break
        else:
            i += 1
    return literals


def code_outside_strings(line: str) -> str:
    """A Groovy line with its single-quoted literals removed (what Groovy would evaluate)."""
    return re.sub(r"'(?:\\.|[^'\\])*'", "''", line)


def jenkins_commands(text: str) -> List[List[str]]:
    commands = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(("sh '", "sh(script: '", "env.ENVPIPE_PUBLISHED_VERSION = sh(script: '")):
            commands.append(shlex.split(groovy_literals(stripped)[0]))
    return commands


def gocd_xml_stages(text: str) -> List[Dict]:
    root = ET.fromstring(text)
    pipelines = root if root.tag == "pipelines" else root.find("pipelines")
    stages = []
    for stage in pipelines.find("pipeline").findall("stage"):
        approval = stage.find("approval")
        stages.append({
            "name": stage.get("name"),
            "manual": approval is not None and approval.get("type") == "manual",
            "only_on_success": approval is not None and approval.get("allowOnlyOnSuccess") == "true",
            "users": [u.text for u in stage.findall("approval/authorization/user")],
            "variables": {v.get("name"): v.findtext("value")
                          for v in stage.findall("environmentvariables/variable")},
            "jobs": [{
                "name": job.get("name"),
                "commands": [[e.get("command")] + [a.text for a in e.findall("arg")] for e in job.findall("tasks/exec")],
                "test_artifacts": [a.get("src") for a in job.findall("artifacts/artifact[@type='test']")],
                "resources": [r.text for r in job.findall("resources/resource")],
            } for job in stage.findall("jobs/job")],
        })
    return stages


def gocd_yaml_stages(text: str) -> List[Dict]:
    data = yaml.safe_load(text)
    assert data["format_version"] == 10
    (pipeline,) = data["pipelines"].values()
    stages = []
    for item in pipeline["stages"]:
        ((name, stage),) = item.items()
        approval = stage.get("approval") or {}
        stages.append({
            "name": name,
            "manual": approval.get("type") == "manual",
            "only_on_success": approval.get("allow_only_on_success") is True,
            "users": approval.get("users", []),
            "variables": {**(stage.get("environment_variables") or {}), **(stage.get("secure_variables") or {})},
            "jobs": [{
                "name": job_name,
                "commands": [[t["exec"]["command"]] + t["exec"].get("arguments", []) for t in job["tasks"]],
                "test_artifacts": [a["test"]["source"] for a in job.get("artifacts", []) if "test" in a],
                "resources": job.get("resources", []),
            } for job_name, job in stage["jobs"].items()],
        })
    return stages


def assert_parses(argv: List[str]) -> None:
    """The CLI's real parser accepts these arguments (argparse exits 2 otherwise)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"generated command 'envpipe {shlex.join(argv)}' does not parse (exit {exc.code})")
    assert callable(args.handler)


# --- structure of the pipeline --------------------------------------------------------------


def test_rendering_twice_gives_the_same_bytes_for_every_target(tmp_path):
    config = config_from(CONFIG, tmp_path)
    for target in TARGETS:
        assert render(config, target) == render(config_from(CONFIG, tmp_path), target)
    assert render(config, "gocd-xml", full=True) == render(config, "gocd-xml", full=True)


def test_output_does_not_depend_on_where_the_config_lives(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    one = config_from(CONFIG, tmp_path)
    other = config_from(CONFIG, tmp_path / "a" / "b")
    assert [render(one, t) for t in TARGETS] == [render(other, t) for t in TARGETS]


def test_every_generated_command_parses_with_the_real_cli_parser(tmp_path):
    config = config_from(CONFIG, tmp_path)
    seen = set()
    everything = (
        jenkins_commands(render(config, "jenkins"))
        + [c for s in gocd_xml_stages(render(config, "gocd-xml")) for j in s["jobs"] for c in j["commands"]]
        + [c for s in gocd_yaml_stages(render(config, "gocd-yaml")) for j in s["jobs"] for c in j["commands"]]
    )
    others = set()
    for argv in everything:
        if argv[0].endswith("envpipe"):
            assert_parses(argv[1:])
            seen.add(argv[1])
        else:
            others.add(tuple(argv[:2]))
    assert seen == {"publish", "promote", "plan", "apply", "test"}
    # besides envpipe: the virtualenv install and removing a stage's old report, nothing else
    assert others == {("python3", "-m"), (".envpipe-venv/bin/python", "-m"), ("rm", "-f")}


def gocd_stages(config) -> Dict[str, List[Dict]]:
    """Both GoCD targets' stages, read the same way (gocd_xml_stages, gocd_yaml_stages)."""
    xml = gocd_xml_stages(render(config, "gocd-xml"))
    yml = gocd_yaml_stages(render(config, "gocd-yaml"))
    return {"gocd-xml": xml, "gocd-yaml": yml}


def test_each_deploy_stage_removes_its_own_old_report_before_promoting(tmp_path):
    config = config_from(CONFIG, tmp_path)
    for target, stages in gocd_stages(config).items():
        for stage in stages:
            commands = stage["jobs"][0]["commands"]
            if not stage["name"].startswith("deploy-"):
                assert ["rm", "-f"] not in [c[:2] for c in commands], (target, stage["name"])
                continue
            report = f".envpipe-reports/{stage['name'][len('deploy-'):]}.xml"
            assert stage["jobs"][0]["test_artifacts"] == [report]
            # first of all, so neither a failed install nor a failed apply leaves the old one
            assert commands[0] == ["rm", "-f", report], target
            assert commands[-1][1:] == ["test", stage["name"][len("deploy-"):], "--junit", report]
    text = render(config, "jenkins")
    blocks = dict(re.findall(r"stage\('([^']+)'\) \{(.*?)\n        \}", text, re.S))
    for env in ("test", "staging", "production"):
        block = blocks[f"deploy-{env}"]
        assert block.index(f"sh 'rm -f .envpipe-reports/{env}.xml'") < block.index(f"promote --to {env}'")
        assert f"junit(testResults: '.envpipe-reports/{env}.xml'" in block


FIRST_WITH_CREDENTIALS = CONFIG.replace("{staging: aws-staging,", "{test: aws-test, staging: aws-staging,") \
    .replace("aws_credentials: [staging, production]", "aws_credentials: [test, staging, production]")


def test_publish_binds_the_first_environments_aws_credentials(tmp_path):
    config = config_from(FIRST_WITH_CREDENTIALS, tmp_path)
    text = render(config, "jenkins")
    blocks = dict(re.findall(r"stage\('([^']+)'\) \{(.*?)\n        \}", text, re.S))
    publish = blocks["publish"]
    assert ("withCredentials([usernamePassword(credentialsId: 'aws-test', usernameVariable: 'AWS_ACCESS_KEY_ID', "
            "passwordVariable: 'AWS_SECRET_ACCESS_KEY')])") in publish
    assert publish.index("withCredentials") < publish.index("envpipe publish")
    assert "db-password" not in publish  # only what writing to the repository needs
    expected = {"AWS_ACCESS_KEY_ID": "{{SECRET:[envpipe][test-AWS_ACCESS_KEY_ID]}}",
                "AWS_SECRET_ACCESS_KEY": "{{SECRET:[envpipe][test-AWS_SECRET_ACCESS_KEY]}}"}
    for target, stages in gocd_stages(config).items():
        assert stages[0]["name"] == "publish"
        assert stages[0]["variables"] == expected, target
        assert stages[1]["variables"] == expected, target  # the same as deploy-test's
    # without credentials for the first environment, publish binds none (an instance role)
    plain = config_from(CONFIG, tmp_path)
    assert "withCredentials" not in dict(re.findall(r"stage\('([^']+)'\) \{(.*?)\n        \}",
                                                    render(plain, "jenkins"), re.S))["publish"]
    assert all(stages[0]["variables"] == {} for stages in gocd_stages(plain).values())


def test_jenkinsfile_has_publish_then_an_approved_stage_per_environment_in_path_order(tmp_path):
    text = render(config_from(CONFIG, tmp_path), "jenkins")
    stages = re.findall(r"^        stage\('([^']+)'\)", text, re.M)
    assert stages == ["publish", "deploy-test", "deploy-staging", "plan-production", "deploy-production"]
    assert "disableConcurrentBuilds()" in text
    assert "timeout(time: 45, unit: 'MINUTES')" in text
    assert "agent { label 'terraform' }" in text
    # the plan runs before the input; the milestone follows the approval
    plan = text.index("sh '.envpipe-venv/bin/envpipe plan production --version'")
    ask = text.index("input(message: 'Deploy version ' + env.ENVPIPE_PUBLISHED_VERSION + ' to production?'")
    milestone = text.index("milestone(ordinal: 1, label: 'approved production')")
    promote = text.index("sh '.envpipe-venv/bin/envpipe promote --to production'")
    assert plan < ask < milestone < promote
    assert "submitter: 'alice,bob'" in text
    assert text.count("junit(testResults: '.envpipe-reports/") == 3
    assert "sh '.envpipe-venv/bin/envpipe test staging --junit .envpipe-reports/staging.xml'" in text


def test_jenkinsfile_binds_each_environments_credentials_in_its_own_stage(tmp_path):
    text = render(config_from(CONFIG, tmp_path), "jenkins")
    blocks = dict(re.findall(r"stage\('([^']+)'\) \{(.*?)\n        \}", text, re.S))
    aws = "usernamePassword(credentialsId: '{}', usernameVariable: 'AWS_ACCESS_KEY_ID', " \
          "passwordVariable: 'AWS_SECRET_ACCESS_KEY')"
    db = "string(credentialsId: 'db-password', variable: 'DB_PASSWORD')"
    assert "withCredentials" not in blocks["publish"]
    assert f"withCredentials([{db}])" in blocks["deploy-test"]
    assert f"withCredentials([{aws.format('aws-staging')}, {db}])" in blocks["deploy-staging"]
    assert f"withCredentials([{aws.format('aws-production')}, {db}])" in blocks["plan-production"]
    assert f"withCredentials([{aws.format('aws-production')}, {db}])" in blocks["deploy-production"]
    assert "aws-production" not in blocks["deploy-staging"]


def test_jenkins_publish_stage_records_the_published_version_for_the_input_message(tmp_path):
    text = render(config_from(CONFIG, tmp_path), "jenkins")
    assert ("env.ENVPIPE_PUBLISHED_VERSION = sh(script: '.envpipe-venv/bin/envpipe publish', "
            "returnStdout: true).trim()") in text
    assert "sh '.envpipe-venv/bin/python -m pip install --quiet '\\''envpipe-agent[terraform]==0.1.0'\\'''" not in text
    assert jenkins_commands(text)[:2] == [
        ["python3", "-m", "venv", ".envpipe-venv"],
        [".envpipe-venv/bin/python", "-m", "pip", "install", "--quiet", "envpipe-agent[terraform]==0.1.0"],
    ]


def test_gocd_xml_has_label_from_version_git_material_and_manual_approval(tmp_path):
    text = render(config_from(CONFIG, tmp_path), "gocd-xml")
    root = ET.fromstring(text)
    assert root.tag == "pipelines" and root.get("group") == "infrastructure"
    pipeline = root.find("pipeline")
    assert pipeline.get("name") == "our-project"
    assert pipeline.get("labeltemplate") == "1.0.${COUNT}"
    assert pipeline.get("lockBehavior") == "unlockWhenFinished"
    git = pipeline.find("materials/git")
    assert (git.get("url"), git.get("branch")) == ("https://git.example.com/acme/infra.git", "main")
    variables = {v.get("name"): v for v in pipeline.findall("environmentvariables/variable")}
    assert variables["AWS_DEFAULT_REGION"].findtext("value") == "eu-west-1"
    # a secure variable's value refers to the secret config, as in the YAML: pasting this
    # over the server's config keeps the secret instead of wiping it
    assert variables["DB_PASSWORD"].get("secure") == "true"
    assert variables["DB_PASSWORD"].findtext("value") == "{{SECRET:[envpipe][DB_PASSWORD]}}"
    stages = gocd_xml_stages(text)
    assert [s["name"] for s in stages] == ["publish", "deploy-test", "deploy-staging", "plan-production",
                                           "deploy-production"]
    assert [s["manual"] for s in stages] == [False, False, False, False, True]
    assert stages[4]["only_on_success"] is True
    assert stages[4]["users"] == ["alice", "bob"]
    assert stages[4]["jobs"][0]["test_artifacts"] == [".envpipe-reports/production.xml"]
    assert stages[2]["variables"] == {"AWS_ACCESS_KEY_ID": "{{SECRET:[envpipe][staging-AWS_ACCESS_KEY_ID]}}",
                                      "AWS_SECRET_ACCESS_KEY": "{{SECRET:[envpipe][staging-AWS_SECRET_ACCESS_KEY]}}"}
    assert stages[1]["variables"] == {}
    assert stages[3]["jobs"][0]["commands"][-1] == [".envpipe-venv/bin/envpipe", "plan", "production", "--version"]
    assert all(job["resources"] == ["terraform"] for s in stages for job in s["jobs"])


def test_gocd_full_document_wraps_the_same_fragment_in_cruise(tmp_path):
    config = config_from(CONFIG, tmp_path)
    full = render(config, "gocd-xml", full=True)
    assert full.startswith('<?xml version="1.0" encoding="utf-8"?>\n')
    root = ET.fromstring(full)
    assert root.tag == "cruise" and root.get("schemaVersion") == "139"
    inner = root.find("pipelines")
    inner.tail = None
    assert ET.tostring(inner) == ET.tostring(ET.fromstring(render(config, "gocd-xml")))


def test_gocd_yaml_matches_the_xml_stage_by_stage(tmp_path):
    config = config_from(CONFIG, tmp_path)
    assert gocd_yaml_stages(render(config, "gocd-yaml")) == gocd_xml_stages(render(config, "gocd-xml"))
    data = yaml.safe_load(render(config, "gocd-yaml"))
    pipeline = data["pipelines"]["our-project"]
    xml_pipeline = ET.fromstring(render(config, "gocd-xml")).find("pipeline")
    assert pipeline["label_template"] == xml_pipeline.get("labeltemplate")
    assert pipeline["group"] == "infrastructure"
    assert pipeline["lock_behavior"] == "unlockWhenFinished"
    assert pipeline["materials"] == {"source": {"git": "https://git.example.com/acme/infra.git", "branch": "main"}}
    # a config repository cannot be edited on the server: secrets come from a secret config
    assert pipeline["environment_variables"] == {"AWS_DEFAULT_REGION": "eu-west-1",
                                                 "DB_PASSWORD": "{{SECRET:[envpipe][DB_PASSWORD]}}"}
    production = pipeline["stages"][4]["deploy-production"]
    assert production["environment_variables"]["AWS_ACCESS_KEY_ID"] == \
        "{{SECRET:[envpipe][production-AWS_ACCESS_KEY_ID]}}"


@pytest.mark.parametrize("version, label", [
    ("1.0.{build}", "1.0.${COUNT}"),
    ("{build}", "${COUNT}"),
    ("2.{build}+{short_commit}", "2.${COUNT}+${source[:12]}"),
    ("0.{commit}", "0.${source}"),
])
def test_gocd_label_template_yields_the_version_envpipe_derives(tmp_path, version, label):
    from envpipe_agent.ci_context import CIContext, render_version

    config = config_from(CONFIG.replace('"1.0.{build}"', f'"{version}"'), tmp_path)
    assert ET.fromstring(render(config, "gocd-xml")).find("pipeline").get("labeltemplate") == label
    # what GoCD would put in GO_PIPELINE_LABEL for counter 7, commit abc..., vs what envpipe derives
    commit = "abcdef0123456789abcdef"
    gocd_label = label.replace("${COUNT}", "7").replace("${source[:12]}", commit[:12]).replace("${source}", commit)
    assert render_version(version, CIContext(server="gocd", build="7", commit=commit)) == gocd_label


def test_version_with_label_placeholder_is_refused_for_gocd_and_jenkins(tmp_path):
    config = config_from(CONFIG.replace('"1.0.{build}"', '"1.{label}"'), tmp_path)
    for target in ("gocd-xml", "gocd-yaml", "jenkins"):
        with pytest.raises(UsageError, match=r"\{label\}"):
            render(config, target)


def test_gocd_needs_a_git_url(tmp_path):
    config = config_from(CONFIG.replace("    git_url: https://git.example.com/acme/infra.git\n", ""), tmp_path)
    with pytest.raises(UsageError, match="ci.gocd.git_url"):
        render(config, "gocd-xml")
    assert "pipeline {" in render(config, "jenkins")


def test_without_install_or_credentials_the_pipeline_calls_envpipe_from_path(tmp_path):
    config = config_from(textwrap.dedent("""\
        project: small
        environments: [{name: dev}]
        ci: {gocd: {git_url: "https://example.com/small.git"}}
        """), tmp_path)
    text = render(config, "jenkins")
    assert "agent any" in text and "withCredentials" not in text and "environment {" not in text
    assert jenkins_commands(text) == [["envpipe", "publish"], ["rm", "-f", ".envpipe-reports/dev.xml"],
                                      ["envpipe", "promote", "--to", "dev"], ["envpipe", "apply", "dev"],
                                      ["envpipe", "test", "dev", "--junit", ".envpipe-reports/dev.xml"]]
    stages = gocd_xml_stages(render(config, "gocd-xml"))
    assert ET.fromstring(render(config, "gocd-xml")).get("group") == "small"
    assert stages == gocd_yaml_stages(render(config, "gocd-yaml"))
    assert stages[1]["jobs"][0]["commands"][:2] == [["rm", "-f", ".envpipe-reports/dev.xml"],
                                                    ["envpipe", "promote", "--to", "dev"]]


def test_install_given_as_a_pip_command_line_installs_its_arguments(tmp_path):
    config = config_from(CONFIG.replace('"envpipe-agent[terraform]==0.1.0"',
                                        "\"pip install 'envpipe-agent[terraform]' --index-url https://pypi.example\""),
                         tmp_path)
    install = gocd_xml_stages(render(config, "gocd-xml"))[0]["jobs"][0]["commands"][1]
    assert install == [".envpipe-venv/bin/python", "-m", "pip", "install", "--quiet", "envpipe-agent[terraform]",
                       "--index-url", "https://pypi.example"]


# --- escaping -----------------------------------------------------------------------------


def test_hostile_values_stay_inside_their_groovy_strings(tmp_path):
    text = render(hostile_config(tmp_path), "jenkins")
    plain = render(hostile_config(tmp_path, "harmless"), "jenkins")
    # the same lines as with harmless values: nothing broke out onto a line of its own
    assert len(text.splitlines()) == len(plain.splitlines())
    (variable,) = [line for line in text.splitlines() if line.strip().startswith("HOSTILE = ")]
    assert groovy_literals(variable) == [HOSTILE]
    assert code_outside_strings(variable).strip() == "HOSTILE = ''"
    echoes = [line for line in text.splitlines() if line.strip().startswith("echo ")]
    assert [groovy_literals(line) for line in echoes] == [[f"staging: {HOSTILE}"]] + [[f"production: {HOSTILE}"]] * 2
    for line in text.splitlines():
        code = code_outside_strings(line.split("//")[0] if line.strip().startswith("//") else line)
        assert "${" not in code and "`" not in code and "\"" not in code
    header = text.splitlines()[1]
    assert header.startswith("// Project our-project: <&>")


def test_hostile_values_are_escaped_in_gocd_xml(tmp_path):
    config = hostile_config(tmp_path)
    text = render(config, "gocd-xml")
    root = ET.fromstring(text)  # well-formed despite the values
    pipeline = root.find("pipeline")
    variables = {v.get("name"): v.findtext("value") for v in pipeline.findall("environmentvariables/variable")}
    # '#' doubled: GoCD reads '##' as a literal '#', never as a #{param}
    assert variables["HOSTILE"] == HOSTILE.replace("#", "##")
    assert pipeline.find("materials/git").get("url") == "https://git.example.com/acme/infra.git?a=1&b=<2>##frag"
    assert gocd_xml_stages(text) == gocd_xml_stages(render(hostile_config(tmp_path, "harmless"), "gocd-xml"))
    comments = re.findall(r"<!--(.*?)-->", text, re.S)
    assert all("\n" not in c and "--" not in c for c in comments)
    assert "\n<!-- Project our-project: <&>" in text


def test_hostile_values_are_quoted_in_gocd_yaml(tmp_path):
    config = hostile_config(tmp_path)
    text = render(config, "gocd-yaml")
    data = yaml.safe_load(text)
    pipeline = data["pipelines"]["our-project"]
    assert pipeline["environment_variables"]["HOSTILE"] == HOSTILE.replace("#", "##")
    assert pipeline["materials"]["source"]["git"] == "https://git.example.com/acme/infra.git?a=1&b=<2>##frag"
    assert gocd_yaml_stages(text) == gocd_xml_stages(render(config, "gocd-xml"))
    assert text.isascii()
    assert "\n# Project our-project: <&>" in text


def test_xml_refuses_a_control_character_it_cannot_carry(tmp_path):
    data = yaml.safe_load(CONFIG)
    data["ci"]["variables"] = {"BELL": "ring\x07"}
    config = parse_config(data, tmp_path / "envpipe.yml")
    with pytest.raises(UsageError, match="control character"):
        render(config, "gocd-xml")
    assert "BELL = 'ring\\u0007'" in render(config, "jenkins")
    assert yaml.safe_load(render(config, "gocd-yaml"))["pipelines"]["our-project"]["environment_variables"] == {
        "BELL": "ring\x07", "DB_PASSWORD": "{{SECRET:[envpipe][DB_PASSWORD]}}"}


@pytest.mark.parametrize("where, value, message", [
    ("variables", {"1BAD": "x"}, "ci.variables.1BAD"),
    ("variables", {"BAD NAME": "x"}, "ci.variables.BAD NAME"),
    ("jenkins", {"aws_credentials": {"staging": "it's"}}, "ci.jenkins.aws_credentials.staging"),
    ("jenkins", {"secret_credentials": {"DB_PASSWORD": "a b"}}, "ci.jenkins.secret_credentials.DB_PASSWORD"),
    ("jenkins", {"agent": "linux && docker"}, "ci.jenkins.agent"),
    ("gocd", {"group": "a group"}, "ci.gocd.group"),
    ("gocd", {"resources": ["a<b"]}, r"ci.gocd.resources\[0\]"),
    ("gocd", {"aws_credentials": ["nowhere"]}, r"ci.gocd.aws_credentials\[0\]"),
    ("gocd", {"secret_config": "a]b"}, "ci.gocd.secret_config"),
])
def test_names_that_cannot_be_represented_safely_are_refused_by_config_validation(tmp_path, where, value, message):
    data = yaml.safe_load(CONFIG)
    if where == "variables":
        data["ci"]["variables"] = value
    else:
        data["ci"][where].update(value)
    with pytest.raises(ConfigError, match=message):
        parse_config(data, tmp_path / "envpipe.yml")


def test_approver_names_are_refused_unless_safe(tmp_path):
    data = yaml.safe_load(CONFIG)
    data["environments"][2]["approvers"] = ["alice', 'mallory"]
    with pytest.raises(ConfigError, match=r"environments\[2\].approvers\[0\]"):
        parse_config(data, tmp_path / "envpipe.yml")


def test_groovy_keyword_as_variable_name_is_refused_for_jenkins(tmp_path):
    data = yaml.safe_load(CONFIG)
    data["ci"]["variables"] = {"if": "x"}
    config = parse_config(data, tmp_path / "envpipe.yml")
    with pytest.raises(UsageError, match="Groovy keyword"):
        render(config, "jenkins")
    assert yaml.safe_load(render(config, "gocd-yaml"))["pipelines"]["our-project"]["environment_variables"]["if"] == "x"


# --- templates ----------------------------------------------------------------------------


def test_templates_folder_overrides_built_in_templates_file_by_file(tmp_path):
    config = config_from(CONFIG, tmp_path)
    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / "Jenkinsfile.j2").write_text("// {{ config.description }} {{ config.project }}\n")
    assert render(config, "jenkins", templates=custom) == "// 'Example stack' 'our-project'\n"
    # the others still come from the package
    assert render(config, "gocd-xml", templates=custom) == render(config, "gocd-xml")


def test_overriding_template_still_escapes_every_value(tmp_path):
    config = hostile_config(tmp_path)
    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / "gocd.xml.j2").write_text('<pipelines group="{{ config.description }}"/>\n')
    (custom / "gocd.yaml.j2").write_text("description: {{ config.description }}\n")
    assert ET.fromstring(render(config, "gocd-xml", templates=custom)).get("group") == HOSTILE.replace("#", "##")
    assert yaml.safe_load(render(config, "gocd-yaml", templates=custom)) == {"description": HOSTILE.replace("#", "##")}


def test_undefined_template_variable_is_an_error_not_an_empty_string(tmp_path):
    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / "Jenkinsfile.j2").write_text("{{ config.no_such_thing }}\n")
    with pytest.raises(UsageError, match="no_such_thing"):
        render(config_from(CONFIG, tmp_path), "jenkins", templates=custom)


def test_installed_package_renders_without_the_checkout(tmp_path):
    """Build the package as pip would lay it out (templates/ → envpipe_agent/templates) and
    render from there, with the checkout off the import path."""
    build = tmp_path / "lib"
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(build)], cwd=ROOT,
                   check=True, capture_output=True)
    assert (build / "envpipe_agent" / "templates" / "Jenkinsfile.j2").is_file()
    import sysconfig

    env = {"PYTHONPATH": f"{build}:{sysconfig.get_paths()['purelib']}", "PATH": "/usr/bin:/bin"}
    script = ("import envpipe_agent.generate as g, sys; from pathlib import Path;"
              "from envpipe_agent.config import load_config;"
              "assert not g.__file__.startswith(sys.argv[1]), g.__file__;"
              "sys.stdout.write(g.render(load_config(Path('envpipe.yml')), 'gocd-yaml'))")
    (tmp_path / "envpipe.yml").write_text(CONFIG)
    # -S: no site-packages .pth files, so the editable install cannot point back at the checkout
    result = subprocess.run([sys.executable, "-S", "-c", script, str(ROOT)], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == render(config_from(CONFIG, tmp_path), "gocd-yaml")


# --- the command line, as a subprocess ------------------------------------------------------


def envpipe(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "envpipe_agent", *args], cwd=cwd, capture_output=True, text=True)


def test_cli_writes_each_target_to_a_file_or_stdout(tmp_path):
    (tmp_path / "envpipe.yml").write_text(CONFIG)
    config = config_from(CONFIG, tmp_path)
    result = envpipe("generate", "gocd-yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == render(config, "gocd-yaml")
    result = envpipe("generate", "gocd-xml", "--full", "-o", "out/cruise.xml", cwd=tmp_path)
    assert result.returncode == 2 and "folder out does not exist" in result.stderr
    result = envpipe("--config", "envpipe.yml", "generate", "jenkins", "-o", "Jenkinsfile", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert (tmp_path / "Jenkinsfile").read_text() == render(config, "jenkins")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".Jenkinsfile")] == []


def test_cli_check_reports_a_stale_file_and_writes_nothing(tmp_path):
    (tmp_path / "envpipe.yml").write_text(CONFIG)
    assert envpipe("generate", "gocd-xml", "-o", "pipelines.xml", cwd=tmp_path).returncode == 0
    result = envpipe("generate", "gocd-xml", "-o", "pipelines.xml", "--check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (tmp_path / "envpipe.yml").write_text(CONFIG.replace("group: infrastructure", "group: other"))
    before = (tmp_path / "pipelines.xml").read_bytes()
    result = envpipe("generate", "gocd-xml", "-o", "pipelines.xml", "--check", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == ("envpipe: error: pipelines.xml is not what envpipe.yml renders: run "
                                     "'envpipe generate gocd-xml -o pipelines.xml'")
    assert (tmp_path / "pipelines.xml").read_bytes() == before


@pytest.mark.parametrize("args, message", [
    (["generate", "bamboo"], "invalid choice: 'bamboo'"),
    (["generate", "jenkins", "--full"], "--full applies to gocd-xml only"),
    (["generate", "jenkins", "--templates", "nowhere"], "--templates nowhere: not a folder"),
    (["generate", "jenkins", "--check"], "--check needs -o FILE"),
])
def test_cli_usage_errors_exit_2_with_one_line(tmp_path, args, message):
    (tmp_path / "envpipe.yml").write_text(CONFIG)
    result = envpipe(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_cli_refuses_an_invalid_config_with_exit_2_and_the_key(tmp_path):
    (tmp_path / "envpipe.yml").write_text(CONFIG.replace("agent: terraform", "agent: \"it's\""))
    result = envpipe("generate", "jenkins", cwd=tmp_path)
    assert result.returncode == 2
    assert "ci.jenkins.agent" in result.stderr
    assert result.stdout == ""
