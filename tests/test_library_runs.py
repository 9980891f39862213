"""The Jenkins Shared Library's steps, run: the calls of the short Jenkinsfile
(`generate jenkins --use-library`) executed by Groovy against the rendered library, with
the Jenkins steps it uses stood in for by tests/jenkins/run_library.groovy (`sh` runs for
real), on a folder repository with the embedded Terraform. They deploy the build's
version, apply the approved plan and record the approver, as the generated Jenkinsfile
does (test_generated_pipelines_run.py); bad calls stop with the step's own message."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import List

import pytest
from test_generate import braced, jenkins_stages
from test_generated_pipelines_run import checkout, records, workspace  # noqa: F401 (checkout: a fixture)

from envpipe_agent.config import load_config
from envpipe_agent.generate import render, render_library

HERE = Path(__file__).resolve().parent
JAVA = shutil.which("java")
TOOLS = Path(os.environ.get("ENVPIPE_TOOLS") or Path.home() / ".cache" / "envpipe-tools")
# Groovy comes with npm-groovy-lint, which ../shared/validators/validate-jenkinsfile installs
GROOVY_JARS = sorted(TOOLS.glob("ngl/node_modules/npm-groovy-lint/lib/java/groovy/lib/groovy-[0-9]*.jar"))

pytestmark = pytest.mark.skipif(not (JAVA and GROOVY_JARS),
                                reason=f"needs java and Groovy (npm-groovy-lint's, under {TOOLS})")


def jenkinsfile_calls(text: str) -> str:
    """What each stage's steps of the short Jenkinsfile do, in order, as plain Groovy."""
    calls = []
    for name, stage in jenkins_stages(text).items():
        steps = braced(stage, "steps {")
        if "script {" in steps:
            steps = braced(steps, "script {")
        calls += [line.strip() for line in steps.splitlines() if line.strip()]
    return "\n".join(calls) + "\n"


def run_steps(checkout_dir: Path, work: Path, calls: str, tmp_path: Path, *options: str) -> subprocess.CompletedProcess:
    library = tmp_path / "library"
    for name, text in render_library(load_config(checkout_dir / "envpipe.yml")).items():
        (library / name).parent.mkdir(parents=True, exist_ok=True)
        (library / name).write_text(text)
    (tmp_path / "calls.groovy").write_text(calls)
    jenkins = {"JENKINS_URL": "https://jenkins.example/", "JOB_NAME": "infra", "BUILD_NUMBER": "7",
               "BUILD_URL": "https://jenkins.example/job/infra/7/", "APPROVER": "alice"}
    return subprocess.run([JAVA, "-cp", str(GROOVY_JARS[0]), "groovy.ui.GroovyMain", str(HERE / "jenkins" / "run_library.groovy"),
                           str(work), str(library), str(tmp_path / "calls.groovy"), *options],
                          env={**os.environ, **jenkins}, capture_output=True, text=True, timeout=600)


def events(output: str) -> List[str]:
    return [line[len("event: "):] for line in output.splitlines() if line.startswith("event: ")]


def test_the_short_jenkinsfiles_step_calls_deploy_the_version_and_apply_the_approved_plan(checkout: Path,  # noqa: F811
                                                                                           tmp_path: Path):
    text = render(load_config(checkout / "envpipe.yml"), "jenkins", library="envpipe")
    calls = jenkinsfile_calls(text)
    assert calls.splitlines() == [
        "env.ENVPIPE_PUBLISHED_VERSION = envpipePublish()",
        "envpipeDeploy(environment: 'test', version: env.ENVPIPE_PUBLISHED_VERSION)",
        "envpipeApprove(environment: 'production', version: env.ENVPIPE_PUBLISHED_VERSION)",
        "envpipeDeploy(environment: 'production', version: env.ENVPIPE_PUBLISHED_VERSION)",
    ]
    result = run_steps(checkout, workspace(checkout, tmp_path / "jenkins"), calls, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    done = events(result.stdout)

    repository = tmp_path / "repository"
    (plan,) = records(repository, "production", "plan")
    (applied,) = records(repository, "production", "apply")
    assert (applied["version"], applied["result"], applied["approved_by"]) == ("1.0.7", "done", "alice")
    assert applied["plan"]["sha256"] == plan["saved_plan"]["sha256"]  # the plan made before the approval
    assert applied["outputs"] == {"release": "1.0.7"}
    assert [r["result"] for r in records(repository, "production", "test")] == ["passed"]
    assert [r["version"] for r in records(repository, "test", "apply")] == ["1.0.7"]
    # no agent is held while the approver decides; each environment's work under its lock
    asked = next(i for i, e in enumerate(done) if e.startswith("input "))
    assert done[asked] == "input Deploy version 1.0.7 to production? submitter=alice"
    assert done[asked - 2:asked] == ["milestone production planned", "timeout 7 DAYS"]
    assert done[asked + 1] == "milestone production approved"
    assert done.count("node null") == done.count("end node") == 4  # any agent: ci.jenkins.agent is not set
    assert done[:asked].count("node null") == done[:asked].count("end node")  # none held while asking
    for env in ("test", "production"):
        held = [e for e in done[done.index(f"lock our-project-{env}"):done.index(f"unlock our-project-{env}")]]
        assert held[1:3] == ["timeout 60 MINUTES", "node null"]
        assert any(e.startswith(f"sh .envpipe-venv/bin/envpipe promote \"$ENVPIPE_PUBLISHED_VERSION\" --to {env}")
                   for e in held)
    assert "junit .envpipe-reports/production.xml" in done


BAD_CALLS = {
    "envpipeDeploy(version: '1.0.7')":
        "envpipeDeploy: the parameter 'environment' is missing: call envpipeDeploy(environment: 'staging', version: version)",
    "envpipeDeploy(environment: 'staging', version: '1.0.7')":
        "envpipeDeploy: environment 'staging' is not one of test, production (envpipe.yml when this library was "
        "generated: regenerate it after changing the environments)",
    "envpipeApprove(environment: 'test', version: '1.0.7')": "envpipeApprove: environment 'test' is not one of production, the approval: manual ones",
    "envpipeDeploy(environment: 'production', version: '1.0.7')":
        "envpipeDeploy: production has approval: manual: call envpipeApprove(environment: 'production', "
        "version: version) before it",
    "envpipePublish(agnet: 'big')": "envpipePublish: unknown parameter 'agnet'",
    "envpipe(args: 'status')": "envpipe: 'args' is a list of the command's words",
}


def test_a_bad_call_stops_with_the_steps_message_before_anything_runs(checkout: Path, tmp_path: Path):  # noqa: F811
    result = run_steps(checkout, workspace(checkout, tmp_path / "jenkins"), "\n".join(BAD_CALLS) + "\n", tmp_path,
                       "--each")
    assert result.returncode == 0, result.stdout + result.stderr
    errors = [line for line in result.stdout.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(BAD_CALLS)
    for error, message in zip(errors, BAD_CALLS.values()):
        assert error.startswith("error: " + message), error
    assert events(result.stdout) == []  # no lock, agent or command
    assert not (tmp_path / "repository").exists()
