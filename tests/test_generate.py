"""envpipe generate: the pipeline each target renders, escaping, and the CLI around it."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import yaml

import envpipe_agent
from envpipe_agent.config import load_config, parse_config
from envpipe_agent.errors import ConfigError, UsageError
from envpipe_agent.generate import TARGETS, install_script, render
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


def _closing(text: str, i: int) -> int:
    """The index of the '}' closing the block that starts at ``i`` (braces in strings and comments skipped)."""
    depth = 1
    while depth:
        if text[i] in "'\"":
            quote, i = text[i], i + 1
            while text[i] != quote:
                i += 2 if text[i] == "\\" else 1
        elif text.startswith("//", i):
            i = text.index("\n", i)
        elif text[i] in "{}":
            depth += 1 if text[i] == "{" else -1
        i += 1
    return i - 1


def braced(text: str, opening: str) -> str:
    """What the first ``opening`` (ending in '{') in ``text`` holds, up to its closing brace."""
    start = text.index(opening) + len(opening)
    return text[start:_closing(text, start)]


def jenkins_stages(text: str) -> Dict[str, str]:
    """Each stage('NAME') { ... } block by name, nested ones too."""
    return {match.group(1): text[match.end():_closing(text, match.end())]
            for match in re.finditer(r"stage\('([^']+)'\) \{", text)}


def jenkins_top_level_stages(text: str) -> List[str]:
    return re.findall(r"^        stage\('([^']+)'\)", text, re.M)


def _gocd_xml_stage(stage: ET.Element) -> Dict:
    approval = stage.find("approval")
    return {
        "name": stage.get("name"),
        "manual": approval is not None and approval.get("type") == "manual",
        "only_on_success": approval is not None and approval.get("allowOnlyOnSuccess") == "true",
        "users": [u.text for u in stage.findall("approval/authorization/user")],
        "variables": {v.get("name"): v.findtext("value") for v in stage.findall("environmentvariables/variable")},
        "jobs": [{
            "name": job.get("name"),
            "timeout": int(job.get("timeout")),
            "commands": [[e.get("command")] + [a.text for a in e.findall("arg")] for e in job.findall("tasks/exec")],
            "test_artifacts": [a.get("src") for a in job.findall("artifacts/artifact[@type='test']")],
            "build_artifacts": [(a.get("src"), a.get("dest")) for a in job.findall("artifacts/artifact[@type='build']")],
            "fetches": [(f.get("stage"), f.get("job"), f.get("srcfile"), f.get("dest"))
                        for f in job.findall("tasks/fetchartifact")],
            "resources": [r.text for r in job.findall("resources/resource")],
        } for job in stage.findall("jobs/job")],
    }


def gocd_xml_pipelines(text: str) -> Dict[str, Dict]:
    """Each pipeline of the <pipelines> group, read back as plain values (as gocd_yaml_pipelines)."""
    root = ET.fromstring(text)
    group = root if root.tag == "pipelines" else root.find("pipelines")
    pipelines = {}
    for pipeline in group.findall("pipeline"):
        materials = {}
        for git in pipeline.findall("materials/git"):
            materials[git.get("materialName")] = {"git": git.get("url"), "branch": git.get("branch")}
        for upstream in pipeline.findall("materials/pipeline"):
            materials[upstream.get("materialName")] = {"pipeline": upstream.get("pipelineName"),
                                                       "stage": upstream.get("stageName")}
        pipelines[pipeline.get("name")] = {
            "group": group.get("group"),
            "label": pipeline.get("labeltemplate"),
            "lock": pipeline.get("lockBehavior"),
            "materials": materials,
            "variables": {v.get("name"): v.findtext("value") for v in pipeline.findall("environmentvariables/variable")},
            "secure": sorted(v.get("name") for v in pipeline.findall("environmentvariables/variable")
                             if v.get("secure") == "true"),
            "stages": [_gocd_xml_stage(stage) for stage in pipeline.findall("stage")],
        }
    return pipelines


def gocd_yaml_pipelines(text: str) -> Dict[str, Dict]:
    data = yaml.safe_load(text)
    assert data["format_version"] == 10
    pipelines = {}
    for name, pipeline in data["pipelines"].items():
        stages = []
        for item in pipeline["stages"]:
            ((stage_name, stage),) = item.items()
            approval = stage.get("approval") or {}
            stages.append({
                "name": stage_name,
                "manual": approval.get("type") == "manual",
                "only_on_success": approval.get("allow_only_on_success") is True,
                "users": approval.get("users", []),
                "variables": stage.get("environment_variables") or {},
                "jobs": [{
                    "name": job_name,
                    "timeout": job["timeout"],
                    "commands": [[t["exec"]["command"]] + t["exec"].get("arguments", []) for t in job["tasks"]
                                 if "exec" in t],
                    "test_artifacts": [a["test"]["source"] for a in job.get("artifacts", []) if "test" in a],
                    "build_artifacts": [(a["build"]["source"], a["build"]["destination"])
                                        for a in job.get("artifacts", []) if "build" in a],
                    "fetches": [(t["fetch"]["stage"], t["fetch"]["job"], t["fetch"]["source"], t["fetch"]["destination"])
                                for t in job["tasks"] if "fetch" in t and t["fetch"]["is_file"] is True],
                    "resources": job.get("resources", []),
                } for job_name, job in stage["jobs"].items()],
            })
        variables = pipeline.get("environment_variables") or {}
        pipelines[name] = {
            "group": pipeline["group"],
            "label": pipeline["label_template"],
            "lock": pipeline["lock_behavior"],
            "materials": pipeline["materials"],
            "variables": variables,
            # secret references are the secure variables of the XML
            "secure": sorted(k for k, v in variables.items() if str(v).startswith("{{SECRET:")),
            "stages": stages,
        }
    return pipelines


def gocd_pipelines(config) -> Dict[str, Dict[str, Dict]]:
    """Both GoCD targets' pipelines, read the same way."""
    return {"gocd-xml": gocd_xml_pipelines(render(config, "gocd-xml")),
            "gocd-yaml": gocd_yaml_pipelines(render(config, "gocd-yaml"))}


def gocd_commands(pipelines: Dict[str, Dict]) -> List[List[str]]:
    return [c for p in pipelines.values() for s in p["stages"] for j in s["jobs"] for c in j["commands"]]


def assert_parses(argv: List[str]) -> None:
    """The CLI's real parser accepts these arguments (argparse exits 2 otherwise)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"generated command 'envpipe {shlex.join(argv)}' does not parse (exit {exc.code})")
    assert callable(args.handler)


PINNED = f"envpipe-agent[terraform]=={envpipe_agent.__version__}"
VERSION = "$ENVPIPE_PUBLISHED_VERSION"  # how every Jenkins stage after publish passes the version


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
    everything = jenkins_commands(render(config, "jenkins"))
    for pipelines in gocd_pipelines(config).values():
        everything += gocd_commands(pipelines)
    others = set()
    for argv in everything:
        if argv[0].endswith("envpipe"):
            assert_parses(argv[1:])
            seen.add(argv[1])
        else:
            others.add(tuple(argv[:2]))
    assert seen == {"publish", "promote", "plan", "apply", "test"}
    # besides envpipe: the virtualenv install and removing a stage's old report, nothing else
    assert others == {("sh", "-c"), ("rm", "-f")}


def test_each_deploy_stage_removes_its_own_old_report_before_promoting(tmp_path):
    config = config_from(CONFIG, tmp_path)
    for target, pipelines in gocd_pipelines(config).items():
        for env in ("test", "staging", "production"):
            report = f".envpipe-reports/{env}.xml"
            for stage in pipelines[f"our-project-{env}"]["stages"]:
                commands = stage["jobs"][0]["commands"]
                if stage["name"] != "deploy":
                    assert ["rm", "-f"] not in [c[:2] for c in commands], (target, stage["name"])
                    continue
                assert stage["jobs"][0]["test_artifacts"] == [report]
                # first of all, so neither a failed install nor a failed apply leaves the old one
                assert commands[0] == ["rm", "-f", report], target
                assert commands[-1][1:] == ["test", env, "--version", "--junit", report]
    blocks = jenkins_stages(render(config, "jenkins"))
    for env in ("test", "staging", "production"):
        block = blocks[f"deploy-{env}"]
        assert block.index(f"sh 'rm -f .envpipe-reports/{env}.xml'") < block.index(f"\" --to {env}'")
        assert f"junit(testResults: '.envpipe-reports/{env}.xml'" in block


FIRST_WITH_CREDENTIALS = CONFIG.replace("{staging: aws-staging,", "{test: aws-test, staging: aws-staging,") \
    .replace("aws_credentials: [staging, production]", "aws_credentials: [test, staging, production]")


def test_publish_binds_the_first_environments_aws_credentials(tmp_path):
    config = config_from(FIRST_WITH_CREDENTIALS, tmp_path)
    publish = jenkins_stages(render(config, "jenkins"))["publish"]
    assert ("withCredentials([usernamePassword(credentialsId: 'aws-test', usernameVariable: 'AWS_ACCESS_KEY_ID', "
            "passwordVariable: 'AWS_SECRET_ACCESS_KEY')])") in publish
    assert publish.index("withCredentials") < publish.index("envpipe publish")
    assert "db-password" not in publish  # only what writing to the repository needs
    expected = {"AWS_ACCESS_KEY_ID": "{{SECRET:[envpipe][test-AWS_ACCESS_KEY_ID]}}",
                "AWS_SECRET_ACCESS_KEY": "{{SECRET:[envpipe][test-AWS_SECRET_ACCESS_KEY]}}"}
    for target, pipelines in gocd_pipelines(config).items():
        publishing = pipelines["our-project"]
        assert [s["name"] for s in publishing["stages"]] == ["publish"]
        assert {k: v for k, v in publishing["variables"].items() if k in expected} == expected, target
        assert "DB_PASSWORD" not in publishing["variables"]
        test = pipelines["our-project-test"]["variables"]
        assert {k: v for k, v in test.items() if k in expected} == expected, target  # the same as test's
    # without credentials for the first environment, publish binds none (an instance role)
    plain = config_from(CONFIG, tmp_path)
    assert "withCredentials" not in jenkins_stages(render(plain, "jenkins"))["publish"]
    assert all("AWS_ACCESS_KEY_ID" not in p["our-project"]["variables"] for p in gocd_pipelines(plain).values())


def test_jenkinsfile_holds_no_agent_while_waiting_and_approves_in_a_stage_of_its_own(tmp_path):
    text = render(config_from(CONFIG, tmp_path), "jenkins")
    assert "\n    agent none\n" in text and "disableConcurrentBuilds" not in text
    assert jenkins_top_level_stages(text) == ["publish", "deploy-test", "deploy-staging", "production"]
    blocks = jenkins_stages(text)
    assert re.findall(r"stage\('([^']+)'\)", blocks["production"]) == [
        "plan-production", "approve-production", "deploy-production"]
    approval = blocks["approve-production"]
    # a stage-level input directive, no agent: no executor is held while the approvers decide
    assert "agent {" not in approval and "agent any" not in approval and "\n                    input {" in approval
    assert "timeout(time: 7, unit: 'DAYS')" in approval
    assert 'message "Deploy version ${env.ENVPIPE_PUBLISHED_VERSION} to production?"' in approval
    assert "submitter 'alice,bob'" in approval and "submitterParameter 'APPROVER'" in approval
    assert "env.ENVPIPE_APPROVER = env.APPROVER" in approval
    # every work stage takes its own agent and has its own timeout and environment lock
    for name in ("publish", "deploy-test", "deploy-staging", "plan-production", "deploy-production"):
        block = blocks[name]
        assert "agent { label 'terraform' }" in block and "timeout(time: 45, unit: 'MINUTES')" in block, name
        env = name.split("-", 1)[-1]
        assert (f"lock(resource: 'our-project-{env}')" in block) == (name != "publish"), name
    for option in ("buildDiscarder(logRotator(numToKeepStr: '50'))", "timestamps()",
                   "preserveStashes(buildCount: 10)"):
        assert option in text.split("stages {")[0]
    assert "post {\n        failure {" in text
    assert text.count("junit(testResults: '.envpipe-reports/") == 3


def test_jenkins_milestones_around_each_approval_let_a_newer_approved_build_retire_an_older_waiting_one(tmp_path):
    text = render(config_from(CONFIG.replace("  - name: staging\n", "  - name: staging\n    approval: manual\n"),
                              tmp_path), "jenkins")
    milestones = re.findall(r"milestone\(ordinal: (\d+), label: '([^']+)'\)", text)
    assert milestones == [("1", "staging planned"), ("2", "staging approved"),
                          ("3", "production planned"), ("4", "production approved")]
    blocks = jenkins_stages(text)
    plan, approval = blocks["plan-production"], blocks["approve-production"]
    # before: at the end of the plan, ahead of the approval; after: first thing once approved
    assert plan.rstrip().endswith("milestone(ordinal: 3, label: 'production planned')\n                    }")
    assert approval.index("input {") < approval.index("milestone(ordinal: 4")


def test_jenkins_passes_the_published_version_to_every_later_command_and_keeps_it_across_a_restart(tmp_path):
    text = render(config_from(CONFIG, tmp_path), "jenkins")
    blocks = jenkins_stages(text)
    publish = blocks["publish"]
    assert ("env.ENVPIPE_PUBLISHED_VERSION = sh(script: '.envpipe-venv/bin/envpipe publish', "
            "returnStdout: true).trim()") in publish
    assert "writeFile(file: '.envpipe-reports/version', text: env.ENVPIPE_PUBLISHED_VERSION)" in publish
    assert "stash(name: 'envpipe-version', includes: '.envpipe-reports/version')" in publish
    for name in ("deploy-test", "deploy-staging", "plan-production", "deploy-production"):
        block = blocks[name]
        # read back from the stash before any envpipe command: a restart on a fresh agent has it
        assert block.index("unstash 'envpipe-version'") < block.index(
            "env.ENVPIPE_PUBLISHED_VERSION = readFile('.envpipe-reports/version').trim()") < block.index("envpipe ")
    commands = [c[1:] for c in jenkins_commands(text) if c[0].endswith("envpipe")]
    assert commands == [
        ["publish"],
        ["promote", VERSION, "--to", "test"], ["apply", "test", "--version", VERSION],
        ["test", "test", "--version", VERSION, "--junit", ".envpipe-reports/test.xml"],
        ["promote", VERSION, "--to", "staging"], ["apply", "staging", "--version", VERSION],
        ["test", "staging", "--version", VERSION, "--junit", ".envpipe-reports/staging.xml"],
        ["promote", VERSION, "--to", "production", "--check"],
        ["plan", "production", "--version", VERSION, "--out", ".envpipe-reports/production.plan"],
        ["promote", VERSION, "--to", "production"],
        ["apply", "production", "--version", VERSION, "--plan", ".envpipe-reports/production.plan"],
        ["test", "production", "--version", VERSION, "--junit", ".envpipe-reports/production.xml"],
    ]
    # the shell expands it, quoted: never a Groovy interpolation
    assert "sh '.envpipe-venv/bin/envpipe apply staging --version \"$ENVPIPE_PUBLISHED_VERSION\"'" in text


def test_jenkins_creates_the_venv_in_every_stage_that_runs_envpipe(tmp_path):
    config = config_from(CONFIG, tmp_path)
    text = render(config, "jenkins")
    install = [["sh", "-c", install_script(config)]]
    for name, block in jenkins_stages(text).items():
        if name in ("production", "approve-production"):  # a group of stages; the approval runs nothing
            assert "envpipe-venv" not in block or name == "production"
            continue
        commands = jenkins_commands(block)
        first = next(i for i, c in enumerate(commands) if c[0].endswith("/envpipe"))
        assert commands[first - 1:first] == install, name


def test_jenkins_deploys_beyond_the_first_environment_only_from_the_configured_branch(tmp_path):
    config = config_from(CONFIG.replace("    agent: terraform\n", "    agent: terraform\n    branch: release\n"),
                         tmp_path)
    blocks = jenkins_stages(render(config, "jenkins"))
    guarded = {"deploy-staging": "beforeAgent", "plan-production": "beforeAgent", "approve-production": "beforeInput",
               "deploy-production": "beforeAgent"}
    for name, block in blocks.items():
        if name not in guarded:
            assert "when {" not in block.split("steps {")[0] or name == "production", name
            continue
        when = braced(block, "when {")
        assert f"{guarded[name]} true" in when and "branch 'release'" in when, name
        # a plain (not multibranch) Pipeline job has no BRANCH_NAME and still deploys
        assert "expression { env.BRANCH_NAME == null }" in when
    assert "when {" not in blocks["deploy-test"]  # every branch publishes and tests in the first environment


def test_jenkinsfile_binds_each_environments_credentials_in_its_own_stage(tmp_path):
    per_environment = CONFIG.replace("secret_credentials: {DB_PASSWORD: db-password}",
                                     "secret_credentials: {DB_PASSWORD: {test: db-test, production: db-production}}")
    blocks = jenkins_stages(render(config_from(per_environment, tmp_path), "jenkins"))
    aws = "usernamePassword(credentialsId: '{}', usernameVariable: 'AWS_ACCESS_KEY_ID', " \
          "passwordVariable: 'AWS_SECRET_ACCESS_KEY')"
    db = "string(credentialsId: '{}', variable: 'DB_PASSWORD')"
    assert "withCredentials" not in blocks["publish"]
    assert f"withCredentials([{db.format('db-test')}])" in blocks["deploy-test"]
    assert f"withCredentials([{aws.format('aws-staging')}])" in blocks["deploy-staging"]  # no DB_PASSWORD for staging
    assert f"withCredentials([{aws.format('aws-production')}, {db.format('db-production')}])" in blocks["plan-production"]
    assert f"withCredentials([{aws.format('aws-production')}, {db.format('db-production')}])" in \
        blocks["deploy-production"]
    assert "production" not in blocks["deploy-staging"] + blocks["deploy-test"]
    # one credential for every environment, as before
    blocks = jenkins_stages(render(config_from(CONFIG, tmp_path), "jenkins"))
    assert f"withCredentials([{db.format('db-password')}])" in blocks["deploy-test"]


def test_gocd_secrets_are_bound_per_environment_pipeline(tmp_path):
    per_environment = CONFIG.replace("    aws_credentials: [staging, production]\n",
                                     "    aws_credentials: [staging, production]\n"
                                     "    secret_keys: {DB_PASSWORD: {test: test-db, production: production-db}}\n")
    for target, pipelines in gocd_pipelines(config_from(per_environment, tmp_path)).items():
        secrets = {name: {k: v for k, v in p["variables"].items() if k in p["secure"]}
                   for name, p in pipelines.items()}
        assert secrets == {
            "our-project": {},
            "our-project-test": {"DB_PASSWORD": "{{SECRET:[envpipe][test-db]}}"},
            "our-project-staging": {"AWS_ACCESS_KEY_ID": "{{SECRET:[envpipe][staging-AWS_ACCESS_KEY_ID]}}",
                                    "AWS_SECRET_ACCESS_KEY": "{{SECRET:[envpipe][staging-AWS_SECRET_ACCESS_KEY]}}"},
            "our-project-production": {
                "AWS_ACCESS_KEY_ID": "{{SECRET:[envpipe][production-AWS_ACCESS_KEY_ID]}}",
                "AWS_SECRET_ACCESS_KEY": "{{SECRET:[envpipe][production-AWS_SECRET_ACCESS_KEY]}}",
                "DB_PASSWORD": "{{SECRET:[envpipe][production-db]}}"},
        }, target


def test_gocd_has_one_pipeline_per_environment_chained_by_upstream_material_and_label(tmp_path):
    for target, pipelines in gocd_pipelines(config_from(CONFIG, tmp_path)).items():
        assert list(pipelines) == ["our-project", "our-project-test", "our-project-staging", "our-project-production"]
        publish = pipelines["our-project"]
        assert (publish["group"], publish["label"], publish["lock"]) == ("infrastructure", "1.0.${COUNT}",
                                                                         "unlockWhenFinished")
        git = {"git": "https://git.example.com/acme/infra.git", "branch": "main"}
        assert publish["materials"] == {"source": git}
        assert publish["variables"] == {"AWS_DEFAULT_REGION": "eu-west-1"}
        upstream = "our-project"
        for env in ("test", "staging", "production"):
            pipeline = pipelines[f"our-project-{env}"]
            # triggered by the pipeline before it, labelled with its label: the version flows by label
            assert pipeline["materials"] == {"source": git, "upstream": {"pipeline": upstream, "stage": (
                "publish" if upstream == "our-project" else "deploy")}}, target
            assert pipeline["label"] == "${upstream}"
            assert pipeline["variables"]["ENVPIPE_VERSION_TEMPLATE"] == "{label}"
            assert pipeline["variables"]["AWS_DEFAULT_REGION"] == "eu-west-1"
            upstream = f"our-project-{env}"
        production = pipelines["our-project-production"]
        # production is held while it runs, at its approval, and after a failure until someone looks
        assert production["lock"] == "lockOnFailure"
        assert [p["lock"] for p in pipelines.values()][1:3] == ["unlockWhenFinished"] * 2
        # the plan runs by itself when staging passes; the approval sits on the deploy after it
        plan, deploy = production["stages"]
        assert (plan["name"], plan["manual"]) == ("plan", False)
        assert plan["jobs"][0]["commands"][-1] == [".envpipe-venv/bin/envpipe", "plan", "production", "--version",
                                                   "--out", ".envpipe-reports/production.plan"]
        # the plan is kept with the pipeline run, and the deploy fetches it and applies exactly it
        assert plan["jobs"][0]["build_artifacts"] == [(".envpipe-reports/production.plan", "plan")]
        assert deploy["jobs"][0]["fetches"] == [("plan", "plan", "plan/production.plan", ".envpipe-reports")]
        assert (deploy["name"], deploy["manual"], deploy["only_on_success"], deploy["users"]) == (
            "deploy", True, True, ["alice", "bob"])
        # whoever triggers the manual stage approved it: envpipe reads the approver from there
        assert deploy["variables"] == {"ENVPIPE_APPROVER_FROM": "GO_TRIGGER_USER"}
        assert all(s["variables"] == {} for p in list(pipelines.values())[:3] for s in p["stages"]) and \
            plan["variables"] == {}
        assert deploy["jobs"][0]["commands"][-3:] == [
            [".envpipe-venv/bin/envpipe", "promote", "--to", "production"],
            [".envpipe-venv/bin/envpipe", "apply", "production", "--version", "--plan",
             ".envpipe-reports/production.plan"],
            [".envpipe-venv/bin/envpipe", "test", "production", "--version", "--junit",
             ".envpipe-reports/production.xml"]]
        assert [s["manual"] for p in list(pipelines.values())[:3] for s in p["stages"]] == [False] * 3
        jobs = [job for p in pipelines.values() for s in p["stages"] for job in s["jobs"]]
        assert all(job["resources"] == ["terraform"] and job["timeout"] == 60 for job in jobs)


def test_a_gocd_pipeline_takes_its_version_from_the_label_not_its_own_counter(tmp_path):
    """What the production pipeline's job runs with: GoCD sets its own counter, and the
    label it took from upstream; envpipe derives the version from the label."""
    from envpipe_agent.context import StageContext

    config = config_from(CONFIG, tmp_path)
    variables = gocd_pipelines(config)["gocd-xml"]["our-project-production"]["variables"]
    environ = {**variables, "GO_PIPELINE_NAME": "our-project-production", "GO_PIPELINE_COUNTER": "3",
               "GO_PIPELINE_LABEL": "1.0.17", "GO_SERVER_URL": "https://gocd.example/go"}
    ctx = StageContext.load(config.path, repository=str(tmp_path / "repository"), environ=environ)
    assert ctx.resolve_version(None) == "1.0.17"


def test_gocd_full_document_wraps_the_same_fragment_in_cruise_with_the_secret_config_it_refers_to(tmp_path):
    config = config_from(FIRST_WITH_CREDENTIALS, tmp_path)
    full = render(config, "gocd-xml", full=True)
    assert full.startswith('<?xml version="1.0" encoding="utf-8"?>\n')
    root = ET.fromstring(full)
    assert root.tag == "cruise" and root.get("schemaVersion") == "139"
    inner = root.find("pipelines")
    inner.tail = None
    assert ET.tostring(inner) == ET.tostring(ET.fromstring(render(config, "gocd-xml")))
    # a server rejects a reference to a secret config it does not have
    defined = {c.get("id") for c in root.findall("secretConfigs/secretConfig")}
    referenced = set(re.findall(r"\{\{SECRET:\[([^\]]+)\]\[[^\]]+\]\}\}", full))
    assert referenced == defined == {"envpipe"}
    (secret_config,) = root.findall("secretConfigs/secretConfig")
    assert secret_config.get("pluginId") == "cd.go.secrets.file-based-plugin"
    assert secret_config.findtext("configuration/property/key") == "SecretsFilePath"
    assert [(r.tag, r.get("action"), r.get("type"), r.text) for r in secret_config.find("rules")] == [
        ("allow", "refer", "pipeline_group", "infrastructure")]
    # nothing to refer to, nothing rendered
    bare = config_from("project: small\nenvironments: [{name: dev}]\n"
                       "ci: {gocd: {git_url: 'https://example.com/small.git'}}\n", tmp_path)
    assert "secretConfigs" not in render(bare, "gocd-xml", full=True)


def test_gocd_yaml_matches_the_xml_pipeline_by_pipeline(tmp_path):
    for text in (CONFIG, FIRST_WITH_CREDENTIALS):
        pipelines = gocd_pipelines(config_from(text, tmp_path))
        assert pipelines["gocd-yaml"] == pipelines["gocd-xml"]


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


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_gocd_git_url_defaults_to_the_working_copys_origin_without_credentials(tmp_path):
    without = CONFIG.replace("    git_url: https://git.example.com/acme/infra.git\n", "")
    config = config_from(without, tmp_path)
    with pytest.raises(UsageError, match="ci.gocd.git_url is not set and .* has no git 'origin' remote"):
        render(config, "gocd-xml")
    assert "pipeline {" in render(config, "jenkins")
    git("init", "-q", cwd=tmp_path)
    git("remote", "add", "origin", "https://ci-bot:s3cr3t-token@git.example.com/acme/infra.git", cwd=tmp_path)
    for pipelines in gocd_pipelines(config).values():
        urls = {m["git"] for p in pipelines.values() for m in p["materials"].values() if "git" in m}
        assert urls == {"https://git.example.com/acme/infra.git"}
    assert "s3cr3t" not in render(config, "gocd-yaml") + render(config, "gocd-xml")
    # an explicit ci.gocd.git_url wins
    assert "https://other.example/x.git" in render(config_from(CONFIG.replace(
        "https://git.example.com/acme/infra.git", "https://other.example/x.git"), tmp_path), "gocd-xml")


def test_without_install_the_pipeline_installs_this_envpipe_pinned(tmp_path):
    config = config_from(textwrap.dedent("""\
        project: small
        environments: [{name: dev}]
        ci: {gocd: {git_url: "https://example.com/small.git"}}
        """), tmp_path)
    text = render(config, "jenkins")
    assert "agent any" in text and "withCredentials" not in text and "environment {" not in text
    install = [["sh", "-c", install_script(config)]]
    assert f".envpipe-venv/bin/python -m pip install --quiet '{PINNED}' &&" in install[0][2]
    assert jenkins_commands(text) == install + [
        [".envpipe-venv/bin/envpipe", "publish"], ["rm", "-f", ".envpipe-reports/dev.xml"], *install,
        [".envpipe-venv/bin/envpipe", "promote", VERSION, "--to", "dev"],
        [".envpipe-venv/bin/envpipe", "apply", "dev", "--version", VERSION],
        [".envpipe-venv/bin/envpipe", "test", "dev", "--version", VERSION, "--junit", ".envpipe-reports/dev.xml"]]
    pipelines = gocd_pipelines(config)
    assert pipelines["gocd-xml"] == pipelines["gocd-yaml"]
    assert pipelines["gocd-xml"]["small"]["group"] == "small"
    assert pipelines["gocd-xml"]["small-dev"]["stages"][0]["jobs"][0]["commands"][:2] == [
        ["rm", "-f", ".envpipe-reports/dev.xml"], *install]
    # with a pytest suite to run, pytest too
    suite = config_from("project: small\nenvironments: [{name: dev}]\ntests: {path: tests/}\n", tmp_path)
    assert ["sh", "-c", install_script(suite)] in jenkins_commands(render(suite, "jenkins"))
    assert f"pip install --quiet '{PINNED}' pytest &&" in install_script(suite)


FAKE_PYTHON3 = """#!/bin/sh
# python3 -m venv DIR: a venv whose python logs each pip install and puts envpipe in place
mkdir -p "$3/bin"
cat > "$3/bin/python" <<'END'
#!/bin/sh
echo "$*" >> "$(dirname "$0")/../../pip.log"
touch "$(dirname "$0")/envpipe" && chmod +x "$(dirname "$0")/envpipe"
END
chmod +x "$3/bin/python"
"""


def test_a_job_reuses_the_venv_that_already_holds_the_pinned_envpipe(tmp_path):
    bin_dir, workspace = tmp_path / "bin", tmp_path / "workspace"
    bin_dir.mkdir()
    workspace.mkdir()
    (bin_dir / "python3").write_text(FAKE_PYTHON3)
    (bin_dir / "python3").chmod(0o755)

    def run_install(config) -> List[str]:
        [argv] = [c for c in gocd_commands(gocd_pipelines(config)["gocd-xml"]) if c[0] == "sh"][:1]
        assert argv in jenkins_commands(render(config, "jenkins"))
        subprocess.run(argv, cwd=workspace, check=True, capture_output=True,
                       env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
        log = workspace / "pip.log"
        return log.read_text().splitlines() if log.exists() else []

    pinned = config_from(CONFIG, tmp_path)
    assert run_install(pinned) == ["-m pip install --quiet envpipe-agent[terraform]==0.1.0"]
    assert run_install(pinned) == ["-m pip install --quiet envpipe-agent[terraform]==0.1.0"]  # reused
    assert (workspace / ".envpipe-venv/.envpipe-install").read_text() == "envpipe-agent[terraform]==0.1.0\n"
    # another pin is another install; a venv whose install did not finish is installed again
    other = config_from(CONFIG.replace("==0.1.0", "==0.1.1"), tmp_path)
    assert run_install(other)[-1] == "-m pip install --quiet envpipe-agent[terraform]==0.1.1"
    (workspace / ".envpipe-venv/bin/envpipe").unlink()
    assert len(run_install(other)) == 3


def test_install_given_as_a_pip_command_line_installs_its_arguments(tmp_path):
    config = config_from(CONFIG.replace('"envpipe-agent[terraform]==0.1.0"',
                                        "\"pip install 'envpipe-agent[terraform]==0.1.0' --index-url https://pypi.example\""),
                         tmp_path)
    install = gocd_pipelines(config)["gocd-xml"]["our-project"]["stages"][0]["jobs"][0]["commands"][0]
    assert install == ["sh", "-c", install_script(config)]
    assert ("pip install --quiet 'envpipe-agent[terraform]==0.1.0' --index-url https://pypi.example &&"
            in install[2])


def test_a_requirements_file_installs_with_hashes_required(tmp_path):
    config = config_from(CONFIG.replace('  install: "envpipe-agent[terraform]==0.1.0"\n',
                                        "  requirements: ci/requirements.txt\n"), tmp_path)
    expected = ["sh", "-c", install_script(config)]
    assert "pip install --quiet --require-hashes -r ci/requirements.txt &&" in expected[2]
    assert expected in jenkins_commands(render(config, "jenkins"))
    assert expected in gocd_commands(gocd_pipelines(config)["gocd-yaml"])
    with pytest.raises(ConfigError, match="ci.requirements: give ci.install or ci.requirements, not both"):
        config_from(CONFIG.replace("  variables:", "  requirements: r.txt\n  variables:"), tmp_path)
    with pytest.raises(ConfigError, match="ci.requirements"):
        config_from(CONFIG.replace('  install: "envpipe-agent[terraform]==0.1.0"\n',
                                   "  requirements: ../outside.txt\n"), tmp_path)


# --- escaping -----------------------------------------------------------------------------


def test_hostile_values_stay_inside_their_groovy_strings(tmp_path):
    text = render(hostile_config(tmp_path), "jenkins")
    plain = render(hostile_config(tmp_path, "harmless"), "jenkins")
    # the same lines as with harmless values: nothing broke out onto a line of its own
    assert len(text.splitlines()) == len(plain.splitlines())
    (variable,) = [line for line in text.splitlines() if line.strip().startswith("HOSTILE = ")]
    assert groovy_literals(variable) == [HOSTILE]
    assert code_outside_strings(variable).strip() == "HOSTILE = ''"
    echoes = [line for line in text.splitlines() if line.strip().startswith("echo ") and "build failed" not in line]
    assert [groovy_literals(line) for line in echoes] == [[f"staging: {HOSTILE}"]] + [[f"production: {HOSTILE}"]] * 2
    # the one GString: the input's message, which holds only the version and a validated name
    messages = [line for line in text.splitlines() if line.strip().startswith("message ")]
    assert [line.strip() for line in messages] == ['message "Deploy version ${env.ENVPIPE_PUBLISHED_VERSION} '
                                                   'to production?"']
    for line in text.splitlines():
        if line in messages:
            continue
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
    harmless = gocd_xml_pipelines(render(hostile_config(tmp_path, "harmless"), "gocd-xml"))
    assert [p["stages"] for p in gocd_xml_pipelines(text).values()] == [p["stages"] for p in harmless.values()]
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
    assert gocd_yaml_pipelines(text) == gocd_xml_pipelines(render(config, "gocd-xml"))
    assert text.isascii()
    assert "\n# Project our-project: <&>" in text


def test_xml_refuses_a_control_character_it_cannot_carry(tmp_path):
    data = yaml.safe_load(CONFIG)
    data["ci"]["variables"] = {"BELL": "ring\x07"}
    config = parse_config(data, tmp_path / "envpipe.yml")
    with pytest.raises(UsageError, match="control character"):
        render(config, "gocd-xml")
    assert "BELL = 'ring\\u0007'" in render(config, "jenkins")
    pipelines = yaml.safe_load(render(config, "gocd-yaml"))["pipelines"]
    assert pipelines["our-project"]["environment_variables"] == {"BELL": "ring\x07"}
    assert pipelines["our-project-test"]["environment_variables"] == {
        "BELL": "ring\x07", "ENVPIPE_VERSION_TEMPLATE": "{label}", "DB_PASSWORD": "{{SECRET:[envpipe][DB_PASSWORD]}}"}


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
    ("jenkins", {"secret_credentials": {"DB_PASSWORD": {"nowhere": "db"}}},
     "ci.jenkins.secret_credentials.DB_PASSWORD.nowhere: no environment named 'nowhere'"),
    ("jenkins", {"secret_credentials": {"DB_PASSWORD": {"test": "a'b"}}}, "ci.jenkins.secret_credentials.DB_PASSWORD.test"),
    ("gocd", {"secret_keys": {"DB_PASSWORD": {"test": "a]b"}}}, "ci.gocd.secret_keys.DB_PASSWORD.test"),
    ("jenkins", {"branch": "main; rm"}, "ci.jenkins.branch"),
    ("jenkins", {"approval_timeout_days": 0}, "ci.jenkins.approval_timeout_days"),
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


def test_cli_warns_about_an_unpinned_envpipe_in_ci_install(tmp_path):
    (tmp_path / "envpipe.yml").write_text(CONFIG.replace('"envpipe-agent[terraform]==0.1.0"',
                                                         '"envpipe-agent[terraform]>=0.1 pytest"'))
    result = envpipe("generate", "jenkins", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("// Generated")
    assert "ci.install installs 'envpipe-agent[terraform]>=0.1' unpinned" in result.stderr
    assert f"pin it ('{PINNED}')" in result.stderr
    (tmp_path / "envpipe.yml").write_text(CONFIG)
    assert envpipe("generate", "jenkins", cwd=tmp_path).stderr == ""


def test_jenkins_applies_the_plan_the_approvers_were_shown(tmp_path):
    blocks = jenkins_stages(render(config_from(CONFIG, tmp_path), "jenkins"))
    plan, deploy = blocks["plan-production"], blocks["deploy-production"]
    saved = ".envpipe-reports/production.plan"
    assert plan.index(f"--out {saved}'") < plan.index(f"stash(name: 'plan-production', includes: '{saved}')") \
        < plan.index("milestone(")
    assert "archiveArtifacts" not in plan  # a Terraform plan holds secrets
    assert deploy.index("unstash 'plan-production'") < deploy.index(f"--plan {saved}'")
    # a non-manual environment plans and applies in one go, as before
    assert "--plan" not in blocks["deploy-staging"] and "stash(" not in blocks["deploy-staging"]
