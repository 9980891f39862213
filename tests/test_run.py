"""envpipe run: publish, then promote, apply and test each environment, as a pipeline would."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import Project, read_repository_file

CONFIG = """\
project: our-project
source: infra
repository: {repository}
environments:
  - name: test
  - name: staging
    vars: {{size: 2}}
  - name: production
    approval: manual
    vars: {{size: 3}}
tests:
  path: tests/
"""
MAIN_TF = """\
variable "envpipe_environment" { type = string }
variable "size" {
  type    = number
  default = 1
}
resource "terraform_data" "app" {
  input = var.size
}
output "size" { value = terraform_data.app.output }
output "environment" { value = var.envpipe_environment }
"""
SUITE = """\
import json, os

def test_size_follows_the_environment():
    outputs = json.load(open(os.environ["ENVPIPE_OUTPUTS"]))
    assert outputs["environment"] == os.environ["ENVPIPE_ENVIRONMENT"]
    assert outputs["size"] == {"test": 1, "staging": 2, "production": 3}[os.environ["ENVPIPE_ENVIRONMENT"]]
"""


def configure(project: Project, suite: str = SUITE) -> None:
    (project.root / "envpipe.yml").write_text(CONFIG.format(repository=project.repository))
    project.write("main.tf", MAIN_TF)
    project.write("tests/test_size.py", suite)


def versions(project: Project) -> dict:
    result = project.envpipe("status", "--json", check=0)
    return {e["environment"]: e["version"] for e in json.loads(result.stdout)["environments"]}


def test_run_takes_the_version_along_the_path_and_waits_before_a_manual_environment(project: Project) -> None:
    configure(project)

    first = project.envpipe("run", "--version", "1.0.1", check=0)

    assert versions(project) == {"test": "1.0.1", "staging": "1.0.1", "production": None}
    stages = [tuple(line.split()[:2]) for line in first.stderr.splitlines()
              if re.match(r"^([a-z-]+)?\s+(publish|promote|apply|test|waiting)\s\s", line)]
    assert stages == [("publish", "1.0.1:"), ("test", "promote"), ("test", "apply"), ("test", "test"),
                      ("staging", "promote"), ("staging", "apply"), ("staging", "test"), ("production", "waiting")]
    assert "production waits for approval (rerun with --approve production" in first.stdout

    second = project.envpipe("run", "--version", "1.0.1", "--approve", "production", "--json", check=0)

    result = json.loads(second.stdout)
    assert result["completed"] == ["test", "staging", "production"] and result["waiting_for"] is None
    assert versions(project) == {"test": "1.0.1", "staging": "1.0.1", "production": "1.0.1"}
    status = json.loads(project.envpipe("status", "--json", check=0).stdout)
    production = status["environments"][2]["last"]
    assert (production["apply"]["outputs"]["size"], production["test"]["result"]) == (3, "passed")
    # --approve is the approval: the person running it is the approver on the record.
    assert production["promote"]["approved_by"] == production["apply"]["approved_by"] == "tester"
    assert "approved_by" not in status["environments"][1]["last"]["promote"]
    assert read_repository_file(project.repository, "production/tests/test_size.py") == SUITE.encode()


def test_run_stops_at_a_failing_test_with_exit_1_and_promotes_no_further(tmp_path: Path) -> None:
    project = Project(root=tmp_path / "work", repository=str(tmp_path / "repository"))
    project.root.mkdir()
    configure(project, suite="def test_broken():\n    assert False, 'service is down'\n")

    result = project.envpipe("run", "--version", "1.0.1", "--approve", "production", check=1)

    assert result.stderr.strip().splitlines()[-1].startswith(
        "envpipe: error: test: version 1.0.1 failed its tests (test.tests.test_size.test_broken)")
    assert versions(project) == {"test": "1.0.1", "staging": None, "production": None}


def test_run_through_an_environment_stops_after_it(tmp_path: Path) -> None:
    project = Project(root=tmp_path / "work", repository=str(tmp_path / "repository"))
    project.root.mkdir()
    configure(project)

    result = project.envpipe("run", "--version", "1.0.1", "--through", "test", "--json", check=0)

    assert json.loads(result.stdout)["completed"] == ["test"]
    assert versions(project) == {"test": "1.0.1", "staging": None, "production": None}


def test_run_refuses_unknown_environment_names_before_publishing(tmp_path: Path) -> None:
    project = Project(root=tmp_path / "work", repository=str(tmp_path / "repository"))
    project.root.mkdir()
    configure(project)

    for args in (["--approve", "prod"], ["--through", "qa"]):
        result = project.envpipe("run", "--version", "1.0.1", *args, check=2)
        assert "is not in envpipe.yml" in result.stderr
    assert not (tmp_path / "repository" / "1.0.1").exists()


def test_run_outside_ci_without_a_version_says_to_pass_one(tmp_path: Path) -> None:
    project = Project(root=tmp_path / "work", repository=str(tmp_path / "repository"))
    project.root.mkdir()
    configure(project)

    result = project.envpipe("run", check=2)

    assert "pass --version" in result.stderr


@pytest.mark.parametrize("edit, message", [
    (("tests:\n  path: tests/\n", ""), "nothing to test: set tests.path"),
    (("path: tests/", "path: checks/"), "tests.path 'checks/' is not a folder in the definition"),
])
def test_run_that_could_not_test_exits_2_before_publishing(tmp_path: Path, edit, message) -> None:
    project = Project(root=tmp_path / "work", repository=str(tmp_path / "repository"))
    project.root.mkdir()
    configure(project)
    config = project.root / "envpipe.yml"
    config.write_text(config.read_text().replace(*edit))

    result = project.envpipe("run", "--version", "1.0.1", check=2)

    assert message in result.stderr
    assert not (tmp_path / "repository").exists()  # truly nothing changed


def test_a_usage_error_after_publishing_is_a_stage_failure_naming_the_stage(tmp_path: Path) -> None:
    project = Project(root=tmp_path / "work", repository=str(tmp_path / "repository"))
    project.root.mkdir()
    configure(project)
    # The suite is in the working copy but left out of the published definition:
    # found out only by the test stage, after publish, promote and apply.
    project.write(".envpipeignore", "tests/\n")

    result = project.envpipe("run", "--version", "1.0.1", check=1)

    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("envpipe: error: run stopped at test of test: tests.path 'tests/' is not in version 1.0.1")
    assert versions(project) == {"test": "1.0.1", "staging": None, "production": None}
