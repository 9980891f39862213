"""The generated pipelines' own workspace folders stay out of what publish uploads."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from conftest import list_repository, run_envpipe

from envpipe_agent.config import load_config
from envpipe_agent.generate import REPORTS, VENV, pipeline_model

CONFIG = """\
project: our-project
source: .
repository: {repository}
version: "1.0.{{build}}"
environments:
  - name: test
ci:
  install: "envpipe-agent[terraform]==0.1.0"
"""


def test_publishing_the_workspace_leaves_out_the_pipelines_venv_and_reports(tmp_path: Path):
    workspace, repository = tmp_path / "workspace", tmp_path / "repository"
    workspace.mkdir()
    repository.mkdir()
    (workspace / "envpipe.yml").write_text(CONFIG.format(repository=repository))
    (workspace / "main.tf").write_text('resource "terraform_data" "example" {}\n')
    # what a generated pipeline leaves in a reused workspace: its virtualenv (a symlink
    # out of the workspace, which publish would refuse) and an earlier build's report
    config = load_config(workspace / "envpipe.yml")
    deploy = pipeline_model(config).stages[-1]
    assert deploy.junit == f"{REPORTS}/test.xml" and VENV == ".envpipe-venv"
    (workspace / VENV / "bin").mkdir(parents=True)
    os.symlink(sys.executable, workspace / VENV / "bin" / "python")
    (workspace / REPORTS).mkdir()
    (workspace / deploy.junit).write_text("<testsuite tests='1' failures='1'/>\n")

    run_envpipe(["publish", "--version", "1.0.1"], cwd=workspace, check=0)

    published = list_repository(str(repository), "")
    assert any(key.endswith("/main.tf") for key in published)
    assert not [key for key in published if ".envpipe-venv" in key or ".envpipe-reports" in key]
