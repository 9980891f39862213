"""The generated pipelines' own commands, run in order as Jenkins and GoCD run them, on a
folder repository with the embedded Terraform: the build's version reaches every
environment, production applies the plan made before its approval, and the approver is
recorded. Only what needs a CD server is stood in for: the venv the install lines make
(envpipe is already installed, and the install lines find it there and reuse it),
stash/unstash (one workspace) and GoCD's artifact fetch (a copy)."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Mapping

import pytest
from conftest import list_repository
from test_generate import gocd_xml_pipelines, groovy_literals, jenkins_stages

from envpipe_agent.config import load_config
from envpipe_agent.generate import INSTALL_MARKER, pip_arguments, render

CONFIG = """\
project: our-project
source: infra
repository: {repository}
version: "1.0.{{build}}"
environments:
  - name: test
  - name: production
    approval: manual
    approvers: [alice]
tests:
  path: tests/
ci:
  gocd: {{git_url: "https://git.example.com/our-project/infra.git"}}
"""
MAIN_TF = """\
variable "envpipe_version" {}
resource "terraform_data" "release" {
  input = var.envpipe_version
}
output "release" {
  value = terraform_data.release.output
}
"""
SUITE = """\
import os

def test_the_release_is_the_version_under_test():
    assert os.environ["ENVPIPE_OUTPUT_RELEASE"] == os.environ["ENVPIPE_VERSION"]
"""


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """What the CD server checks out: envpipe.yml and the definition; Terraform embedded."""
    kept = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and not any((Path(d) / name).exists() for name in ("terraform", "tofu"))]
    monkeypatch.setenv("PATH", os.pathsep.join(kept))
    monkeypatch.delenv("ENVPIPE_TERRAFORM", raising=False)
    root = tmp_path / "checkout"
    (root / "infra" / "tests").mkdir(parents=True)
    (root / "envpipe.yml").write_text(CONFIG.format(repository=tmp_path / "repository"))
    (root / "infra" / "main.tf").write_text(MAIN_TF)
    (root / "infra" / "tests" / "test_release.py").write_text(SUITE)
    return root


def workspace(checkout: Path, where: Path) -> Path:
    """A job's workspace: the checkout, with envpipe where the install lines would put it,
    and their marker saying it is the pinned one: the install lines run and reuse it."""
    shutil.copytree(checkout, where)
    venv = where / ".envpipe-venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "envpipe").write_text(f'#!/bin/sh\nexec {sys.executable} -m envpipe_agent "$@"\n')
    (venv / "envpipe").chmod(stat.S_IRWXU)
    wanted = " ".join(pip_arguments(load_config(checkout / "envpipe.yml")))
    (where / INSTALL_MARKER).write_text(wanted + "\n")
    return where


def run(argv: List[str], cwd: Path, environ: Mapping[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, cwd=cwd, env={**os.environ, **environ}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"{argv} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result




def records(repository: Path, env: str, action: str) -> List[Dict]:
    found = list_repository(str(repository), f".envpipe/records/{env}/")
    return [json.loads(body) for key, body in sorted(found.items()) if f"-{action}-" in key]


def test_the_jenkinsfile_deploys_its_version_and_applies_the_approved_plan(checkout: Path, tmp_path: Path):
    blocks = jenkins_stages(render(load_config(checkout / "envpipe.yml"), "jenkins"))
    work = workspace(checkout, tmp_path / "jenkins")
    jenkins = {"JENKINS_URL": "https://jenkins.example/", "JOB_NAME": "infra", "BUILD_NUMBER": "7",
               "BUILD_URL": "https://jenkins.example/job/infra/7/"}
    for name in ("publish", "deploy-test", "plan-production", "approve-production", "deploy-production"):
        if name == "approve-production":
            # what the approval stage does: the input's submitterParameter, kept for the deploy
            assert "env.ENVPIPE_APPROVER = env.APPROVER" in blocks[name]
            jenkins["ENVPIPE_APPROVER"] = "alice"
            continue
        for line in blocks[name].splitlines():
            line = line.strip()
            if line.startswith(("sh '", "env.ENVPIPE_PUBLISHED_VERSION = sh(script: '")):
                command = groovy_literals(line)[0]
                result = run(["sh", "-c", command], work, jenkins)
                if "returnStdout: true" in line:
                    jenkins["ENVPIPE_PUBLISHED_VERSION"] = result.stdout.strip()

    repository = tmp_path / "repository"
    assert jenkins["ENVPIPE_PUBLISHED_VERSION"] == "1.0.7"
    (plan,) = records(repository, "production", "plan")
    (applied,) = records(repository, "production", "apply")
    assert (applied["version"], applied["result"], applied["approved_by"]) == ("1.0.7", "done", "alice")
    assert applied["plan"]["sha256"] == plan["saved_plan"]["sha256"]  # the plan made before the approval
    assert applied["outputs"] == {"release": "1.0.7"}
    assert [r["result"] for r in records(repository, "production", "test")] == ["passed"]


def test_the_gocd_pipelines_pass_the_version_by_label_and_apply_the_approved_plan(checkout: Path, tmp_path: Path):
    pipelines = gocd_xml_pipelines(render(load_config(checkout / "envpipe.yml"), "gocd-xml"))
    repository = tmp_path / "repository"
    label = None
    artifacts: Dict[str, Path] = {}
    # each pipeline has its own counter; only the publishing one's makes the version
    for counter, name in ((7, "our-project"), (3, "our-project-test"), (2, "our-project-production")):
        pipeline = pipelines[name]
        for stage in pipeline["stages"]:
            (job,) = stage["jobs"]
            work = workspace(checkout, tmp_path / "gocd" / name / stage["name"])  # each job on its own agent
            for source, _, file, dest in job["fetches"]:
                (work / dest).mkdir(parents=True, exist_ok=True)
                shutil.copy(artifacts[f"{source}/{file}"], work / dest / Path(file).name)
            environ = {**pipeline["variables"], **stage["variables"], "GO_SERVER_URL": "https://gocd.example/go",
                       "GO_PIPELINE_NAME": name, "GO_PIPELINE_COUNTER": str(counter),
                       "GO_PIPELINE_LABEL": label or f"1.0.{counter}", "GO_STAGE_NAME": stage["name"],
                       "GO_TRIGGER_USER": "alice" if stage["manual"] else "changes"}
            for command in job["commands"]:
                run(command, work, environ)
            for source, dest in job["build_artifacts"]:
                artifacts[f"{stage['name']}/{dest}/{Path(source).name}"] = work / source
        label = label or f"1.0.{counter}"  # what ${upstream} gives the pipelines after it

    (plan,) = records(repository, "production", "plan")
    (applied,) = records(repository, "production", "apply")
    assert (applied["version"], applied["result"], applied["approved_by"]) == ("1.0.7", "done", "alice")
    assert applied["plan"]["sha256"] == plan["saved_plan"]["sha256"]
    assert applied["outputs"] == {"release": "1.0.7"}
    assert [r["version"] for r in records(repository, "test", "apply")] == ["1.0.7"]


def test_a_gocd_manual_stage_names_its_approver_by_the_variable_that_holds_it():
    from envpipe_agent.approval import approver
    from envpipe_agent.config import Environment
    from envpipe_agent.errors import ApprovalRequired

    production = Environment(name="production", approval="manual")
    gocd = {"ENVPIPE_APPROVER_FROM": "GO_TRIGGER_USER"}
    assert approver(production, "apply", {**gocd, "GO_TRIGGER_USER": "alice"}) == "alice"
    assert approver(production, "apply", {**gocd, "GO_TRIGGER_USER": "alice", "ENVPIPE_APPROVER": "bob"}) == "bob"
    for nobody in ("changes", "timer", "", None):  # GoCD's values when no person triggered the stage
        environ = {**gocd, **({"GO_TRIGGER_USER": nobody} if nobody is not None else {})}
        with pytest.raises(ApprovalRequired):
            approver(production, "apply", environ)
