"""The Jenkins Shared Library (`generate jenkins-library`), the short Jenkinsfile using it
(`generate jenkins --use-library`) and the GoCD pipeline templates (`--template`): each
does what the generated Jenkinsfile or GoCD pipelines do, read back from what is rendered."""
from __future__ import annotations

import copy
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List

import pytest
import yaml
from test_generate import (CONFIG, HOSTILE, braced, code_outside_strings, config_from, gocd_xml_pipelines,
                           gocd_yaml_pipelines, groovy_literals, hostile_config, jenkins_commands, jenkins_stages)

from envpipe_agent.errors import UsageError
from envpipe_agent.generate import GOCD_TEMPLATE_PARAMETER, LIBRARY_STEPS, install_script, render, render_library

ROOT = Path(__file__).resolve().parents[1]


def cases(step_text: str) -> Dict[str, str]:
    """Each `case 'ENV':` block of a step's switch, up to the next case or default."""
    found = {}
    matches = list(re.finditer(r"^        case '([a-z0-9-]+)':\n", step_text, re.M))
    for match, following in zip(matches, matches[1:] + [None]):
        end = following.start() if following else step_text.index("        default:")
        found[match.group(1)] = step_text[match.end():end]
    return found


def sh_lines(text: str) -> List[List[str]]:
    return jenkins_commands(text)


def test_the_library_is_a_groovy_step_and_a_help_page_per_step(tmp_path):
    files = render_library(config_from(CONFIG, tmp_path))
    assert sorted(files) == sorted([f"vars/{step}.groovy" for step in LIBRARY_STEPS]
                                   + [f"vars/{step}.txt" for step in LIBRARY_STEPS])
    for step in LIBRARY_STEPS:
        assert re.search(r"^\w+ call\((Map|List) args", files[f"vars/{step}.groovy"], re.M) or step == "envpipeInstall"
        help_page = files[f"vars/{step}.txt"]
        assert help_page.startswith(LIBRARY_STEPS[step]), step
        assert "{{" not in help_page and "'''" not in help_page


@pytest.mark.parametrize("step, required, optional", [
    ("envpipeDeploy", ["environment", "version"], ["agent"]),
    ("envpipeApprove", ["environment", "version"], ["agent"]),
    ("envpipePublish", [], ["agent"]),
    ("envpipe", ["args"], ["environment", "returnStdout"]),
])
def test_each_step_checks_its_named_parameters_and_names_the_missing_one(tmp_path, step, required, optional):
    text = render_library(config_from(CONFIG, tmp_path))[f"vars/{step}.groovy"]
    lines = text.splitlines()
    if required:
        (check,) = [line for line in lines if line.strip().startswith("for (String name in [")]
        assert groovy_literals(check) == required
        (message,) = [line for line in lines if "is missing" in line]
        assert groovy_literals(message) == [f"{step}: the parameter '", f"' is missing: call {LIBRARY_STEPS[step]}"]
        assert "+ name +" in code_outside_strings(message)  # the parameter's name is in the message
    (known,) = [line for line in lines if line.strip().startswith("if (!(name in [")]
    assert groovy_literals(known) == required + optional
    # the checks come first: nothing is locked, allocated or run before them
    body = text[text.index("Map args"):]
    first_work = min(body.index(word) for word in ("lock(", "node(", "sh(", "envpipeInstall()") if word in body)
    assert body.index("unknown parameter") < first_work


def test_install_step_is_the_jenkinsfiles_pinned_idempotent_install(tmp_path):
    config = config_from(CONFIG, tmp_path)
    install = sh_lines(render_library(config)["vars/envpipeInstall.groovy"])
    publish_stage = jenkins_stages(render(config, "jenkins"))["publish"]
    assert install == [c for c in sh_lines(publish_stage) if "publish" not in c]
    assert install == [["sh", "-c", install_script(config)]]


def test_deploy_runs_the_jenkinsfiles_deploy_stage_under_its_lock_with_only_its_credentials(tmp_path):
    config = config_from(CONFIG, tmp_path)
    deploy = render_library(config)["vars/envpipeDeploy.groovy"]
    stages = jenkins_stages(render(config, "jenkins"))
    blocks = cases(deploy)
    assert list(blocks) == ["test", "staging", "production"]
    for name, block in blocks.items():
        stage = stages[f"deploy-{name}"]
        # the same commands as the generated stage, install apart (envpipeInstall, above)
        assert sh_lines(block) == [c for c in sh_lines(stage) if c != ["sh", "-c", install_script(config)]]
        lock = braced(block, f"lock(resource: 'our-project-{name}') {{")
        agent = braced(lock, "node(args.agent ?: 'terraform') {")
        assert "timeout(time: 45, unit: 'MINUTES')" in lock
        assert agent.lstrip().startswith("checkout scm")
        assert agent.index("envpipeInstall()") < agent.index("withEnv(")
        body = braced(agent, "try {")
        assert sh_lines(body) == [c for c in sh_lines(stage) if c[1:2] != ["-f"] and c[0] == ".envpipe-venv/bin/envpipe"]
        assert f"junit(testResults: '.envpipe-reports/{name}.xml', allowEmptyResults: true)" in braced(agent, "finally {")
        # credentials: only this environment's, only around its commands
        expected = stage[stage.index("withCredentials("):].split("\n")[0]
        assert expected in body and deploy.count("withCredentials(") == 3
    assert "aws-" not in blocks["test"]  # test has no AWS credentials configured: the agent's own
    assert "unstash 'plan-production'" in blocks["production"]
    assert "--plan .envpipe-reports/production.plan" in blocks["production"]
    assert 'error(\'envpipeDeploy: production has approval: manual: call envpipeApprove(' in blocks["production"]
    default = deploy[deploy.index("        default:"):]
    assert groovy_literals(default.splitlines()[1])[0] == "envpipeDeploy: environment '"
    assert "is not one of test, staging, production" in default


def test_approve_plans_under_the_lock_then_asks_the_approvers_with_no_agent_held(tmp_path):
    config = config_from(CONFIG, tmp_path)
    approve = render_library(config)["vars/envpipeApprove.groovy"]
    stages = jenkins_stages(render(config, "jenkins"))
    blocks = cases(approve)
    assert list(blocks) == ["production"]  # only the approval: manual environment
    block = blocks["production"]
    lock = braced(block, "lock(resource: 'our-project-production') {")
    assert sh_lines(lock) == [c for c in sh_lines(stages["plan-production"]) if c[0] == ".envpipe-venv/bin/envpipe"]
    assert "stash(name: 'plan-production', includes: '.envpipe-reports/production.plan')" in lock
    after = block[block.index(lock) + len(lock):]
    assert "node(" not in after and "input(" in after
    waiting = braced(after, "timeout(time: 7, unit: 'DAYS') {")
    assert "submitter: 'alice,bob', submitterParameter: 'APPROVER'" in waiting
    assert after.index("milestone(label: 'production planned')") < after.index("input(") \
        < after.index("milestone(label: 'production approved')")
    assert "env.ENVPIPE_APPROVER = approver" in approve and "return approver" in approve


def test_publish_returns_the_version_it_published_and_stashes_it(tmp_path):
    config = config_from(CONFIG, tmp_path)
    publish = render_library(config)["vars/envpipePublish.groovy"]
    assert "version = sh(script: '.envpipe-venv/bin/envpipe publish', returnStdout: true).trim()" in publish
    assert "stash(name: 'envpipe-version', includes: '.envpipe-reports/version')" in publish
    assert publish.rstrip().endswith("currentBuild.displayName = version\n    return version\n}")


def test_envpipe_step_quotes_each_argument_and_binds_only_the_named_environments_credentials(tmp_path):
    text = render_library(config_from(CONFIG, tmp_path))["vars/envpipe.groovy"]
    assert "script += \" '\" + arg.toString().replace(\"'\", \"'\\\\''\") + \"'\"" in text
    blocks = cases(text)
    assert "aws-" not in blocks["test"] and "credentialsId: 'db-password'" in blocks["test"]
    assert "credentialsId: 'aws-production'" in blocks["production"]
    assert "aws-staging" not in blocks["production"]


def test_hostile_values_stay_inside_the_librarys_strings(tmp_path):
    for name, text in render_library(hostile_config(tmp_path)).items():
        if name.endswith(".groovy"):
            for line in text.splitlines():
                groovy_literals(line)  # every literal closes on its line
                assert "$(id)" not in code_outside_strings(line) and "${HOME}" not in code_outside_strings(line)


def test_short_jenkinsfile_calls_the_four_steps_and_fits_on_one_screen(tmp_path):
    config = config_from(CONFIG, tmp_path)
    text = render(config, "jenkins", library="envpipe@v1")
    assert "@Library('envpipe@v1') _" in text
    assert len(text.splitlines()) <= 70
    stages = jenkins_stages(text)
    assert list(stages) == ["publish", "test", "staging", "production"]
    assert "env.ENVPIPE_PUBLISHED_VERSION = envpipePublish()" in stages["publish"]
    assert "envpipeDeploy(environment: 'test', version: env.ENVPIPE_PUBLISHED_VERSION)" in stages["test"]
    production = stages["production"]
    assert production.index("envpipeApprove(environment: 'production'") < production.index(
        "envpipeDeploy(environment: 'production'")
    assert "when {" not in stages["test"] and "branch 'main'" in stages["staging"]
    assert "sh " not in text and "withCredentials" not in text and "lock(" not in text


@pytest.mark.parametrize("target, options, message", [
    ("gocd-xml", {"library": "envpipe"}, "--use-library applies to jenkins only"),
    ("jenkins", {"template": True}, "--template applies to gocd-xml and gocd-yaml"),
    ("jenkins", {"library": " "}, "--use-library needs the library's name"),
    ("jenkins", {"library": "envpipe", "job": "reap"}, "--job reap renders a job of its own"),
])
def test_options_that_do_not_fit_the_target_are_refused(tmp_path, target, options, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        render(config_from(CONFIG, tmp_path), target, **options)


def envpipe(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "envpipe_agent", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_cli_writes_the_library_into_a_folder_and_checks_it(tmp_path):
    config_from(CONFIG, tmp_path)
    written = envpipe("generate", "jenkins-library", "-o", "lib", cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    files = render_library(config_from(CONFIG, tmp_path))
    for name, text in files.items():
        assert (tmp_path / "lib" / name).read_text() == text
    assert envpipe("generate", "jenkins-library", "-o", "lib", "--check", cwd=tmp_path).returncode == 0
    (tmp_path / "lib" / "vars" / "envpipeDeploy.groovy").write_text("// edited\n")
    stale = envpipe("generate", "jenkins-library", "-o", "lib", "--check", cwd=tmp_path)
    assert stale.returncode == 1 and "vars/envpipeDeploy.groovy" in stale.stderr
    missing = envpipe("generate", "jenkins-library", cwd=tmp_path)
    assert missing.returncode == 2 and "needs -o DIR" in missing.stderr and "Traceback" not in missing.stderr


# --- GoCD pipeline templates -------------------------------------------------------------

PARAM_RE = re.compile(r"(?<!#)#\{([^}]*)\}")


def _unparam(text: str, params: Dict[str, str]) -> str:
    """What GoCD makes of a template field: #{NAME} replaced, '##' a literal '#'."""
    def one(match: re.Match) -> str:
        return params[match.group(1)]
    return re.sub(r"##|#\{([^}]*)\}", lambda m: "#" if m.group(0) == "##" else one(m), text)


def expand_templates(text: str) -> str:
    """The <pipelines> group with each templated pipeline's stages put in from its
    template, parameters substituted, as the GoCD server does."""
    root = ET.fromstring(text if text.lstrip().startswith(("<?xml", "<cruise")) else f"<cruise>{text}</cruise>")
    templates = {t.get("name"): t for t in root.findall("templates/pipeline")}
    group = root.find("pipelines")
    for pipeline in group.findall("pipeline"):
        name = pipeline.attrib.pop("template", None)
        if name is None:
            continue
        params = {p.get("name"): p.text for p in pipeline.findall("params/param")}
        for stage in templates[name].findall("stage"):
            stage = copy.deepcopy(stage)
            for element in stage.iter():
                element.attrib.update({k: _unparam(v, params) for k, v in element.attrib.items()})
                if element.text and element.text.strip():
                    element.text = _unparam(element.text, params)
            pipeline.append(stage)
    return ET.tostring(group, encoding="unicode")


def template_configs(tmp_path: Path):
    return {"rich": config_from(CONFIG, tmp_path), "hostile": hostile_config(tmp_path)}


def test_every_parameter_a_template_uses_is_declared_by_each_pipeline_using_it(tmp_path):
    for config in template_configs(tmp_path).values():
        root = ET.fromstring(render(config, "gocd-xml", full=True, template=True).encode())
        used = {t.get("name"): set(PARAM_RE.findall(ET.tostring(t, encoding="unicode")))
                for t in root.findall("templates/pipeline")}
        assert used == {"envpipe-environment": {GOCD_TEMPLATE_PARAMETER},
                        "envpipe-environment-manual": {GOCD_TEMPLATE_PARAMETER}}
        users = [p for p in root.findall("pipelines/pipeline") if p.get("template")]
        assert len(users) == 3
        for pipeline in users:
            assert not pipeline.findall("stage")
            declared = {p.get("name") for p in pipeline.findall("params/param")}
            assert used[pipeline.get("template")] <= declared
            # nothing outside the templates refers to a parameter: free text keeps its '#' doubled
            assert not PARAM_RE.findall(ET.tostring(pipeline, encoding="unicode"))


def test_templated_pipelines_expand_to_exactly_the_generated_pipelines(tmp_path):
    for config in template_configs(tmp_path).values():
        for full in (False, True):
            templated = gocd_xml_pipelines(expand_templates(render(config, "gocd-xml", full=full, template=True)))
            # through ElementTree as the expansion goes (which writes a CR as it is, read back as LF)
            generated = gocd_xml_pipelines(ET.tostring(ET.fromstring(render(config, "gocd-xml")), encoding="unicode"))
            # one difference: a shared template leaves who may approve to the pipeline group
            assert generated["our-project-production"]["stages"][1]["users"] == ["alice", "bob"]
            generated["our-project-production"]["stages"][1]["users"] = []
            assert templated == generated
    assert {p["lock"] for p in templated.values()} == {"unlockWhenFinished", "lockOnFailure"}


def test_a_manual_environment_uses_the_manual_template_and_its_approvers_are_named(tmp_path):
    text = render(config_from(CONFIG, tmp_path), "gocd-xml", template=True)
    assert 'name="our-project-production" labeltemplate="${upstream}" lockBehavior="lockOnFailure" ' \
           'template="envpipe-environment-manual"' in text
    assert "<!-- approved by alice, bob in envpipe.yml" in text
    assert "<authorization>" not in text  # a shared template cannot name one project's approvers


def test_gocd_yaml_pipelines_name_the_templates_the_xml_defines_with_the_same_parameters(tmp_path):
    for config in template_configs(tmp_path).values():
        data = yaml.safe_load(render(config, "gocd-yaml", template=True))
        plain = gocd_yaml_pipelines(render(config, "gocd-yaml"))
        xml_root = ET.fromstring(render(config, "gocd-xml", full=True, template=True).encode())
        xml_pipelines = {p.get("name"): p for p in xml_root.findall("pipelines/pipeline")}
        assert "templates" not in data  # a config repository cannot define them
        for name, pipeline in data["pipelines"].items():
            if name == config.project:
                continue
            xml = xml_pipelines[name]
            assert pipeline["template"] == xml.get("template")
            assert pipeline["parameters"] == {p.get("name"): p.text for p in xml.findall("params/param")}
            assert "stages" not in pipeline
            assert (pipeline["group"], pipeline["label_template"], pipeline["lock_behavior"], pipeline["materials"],
                    pipeline["environment_variables"]) == (
                plain[name]["group"], plain[name]["label"], plain[name]["lock"], plain[name]["materials"],
                plain[name]["variables"])
        assert HOSTILE  # the hostile config's values are in the variables compared above
