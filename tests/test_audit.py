"""What an auditor and an on-call engineer see: a version forced past its gate, and
drift found by a plan, in status (table, JSON, page) and history until cleared."""
from __future__ import annotations

import json
from pathlib import Path

import lxml.html
import pytest

from conftest import Project

FOLDER_ONLY = pytest.mark.parametrize("repository_url", ["folder"], indirect=True)
JENKINS = {"JENKINS_URL": "https://jenkins.example.com/", "BUILD_NUMBER": "9", "JOB_NAME": "infra",
           "BUILD_URL": "https://jenkins.example.com/job/infra/9/", "BUILD_USER_ID": "alice"}


def status_of(project: Project) -> dict:
    entries = json.loads(project.envpipe("status", "--json", check=0).stdout)["environments"]
    return {entry["environment"]: entry for entry in entries}


def table_row(project: Project, environment: str) -> str:
    return next(line for line in project.envpipe("status", check=0).stdout.splitlines()
                if line.startswith(environment + " "))


def badges(project: Project, page: Path) -> dict:
    project.envpipe("status", "--html", str(page), check=0)
    tree = lxml.html.parse(str(page))
    return {li.get("data-environment"): sorted(li.xpath(".//span[contains(@class, 'badge')]/text()"))
            for li in tree.xpath("//li[@data-environment]")}


def drift_test_environment(project: Project) -> None:
    """Change test's infrastructure behind Terraform's back (its state says otherwise)."""
    state_file = Path(project.repository) / ".envpipe" / "state" / "test" / "terraform.tfstate"
    state = json.loads(state_file.read_text())
    attributes = state["resources"][0]["instances"][0]["attributes"]
    # terraform_data keeps its input as a dynamic value: {"value": ..., "type": ...}
    attributes["input"] = {**attributes["input"], "value": "changed by hand"}
    state_file.write_text(json.dumps(state))


@FOLDER_ONLY
def test_a_forced_version_and_drift_show_in_status_and_on_the_page_until_an_apply_clears_the_drift(
        project: Project, tmp_path: Path) -> None:
    project.write("main.tf", 'resource "terraform_data" "example" {\n  input = "as defined"\n}\n')
    project.envpipe("publish", "--version", "1.0.1", check=0)
    project.envpipe("promote", "1.0.1", "--to", "test", check=0)
    project.envpipe("apply", "test", check=0)
    project.envpipe("promote", "1.0.1", "--to", "staging", "--force", "--reason", "hotfix INC-42", env=JENKINS,
                    check=0)

    assert status_of(project)["staging"]["forced"] == {
        "by": "alice", "reason": "hotfix INC-42", "gate": "test", "at": status_of(project)["staging"]["promoted"]["at"],
        "build_url": JENKINS["BUILD_URL"]}
    assert "FORCED by alice: hotfix INC-42" in table_row(project, "staging")
    assert status_of(project)["test"]["forced"] is None and status_of(project)["test"]["drift"] is None

    project.envpipe("plan", "test", "--detailed-exitcode", check=0)  # no drift yet: nothing marked
    assert status_of(project)["test"]["drift"] is None
    drift_test_environment(project)
    project.envpipe("plan", "test", "--detailed-exitcode", env=JENKINS, check=2)

    drift = status_of(project)["test"]["drift"]
    assert (drift["build_url"], drift["version"]) == (JENKINS["BUILD_URL"], "1.0.1")
    assert "1 to change" in drift["summary"]
    row = table_row(project, "test")
    assert f"DRIFT found by plan at {drift['at']} ({JENKINS['BUILD_URL']}): apply to clear it" in row
    shown = badges(project, tmp_path / "status.html")
    assert "drift" in shown["test"] and "forced" not in shown["test"]
    assert "forced" in shown["staging"] and "drift" not in shown["staging"]
    page = (tmp_path / "status.html").read_text()
    assert "Forced in by alice past the gate of test: hotfix INC-42" in page
    assert "Drift found by the plan of" in page

    project.envpipe("apply", "test", check=0)
    assert status_of(project)["test"]["drift"] is None
    assert "drift" not in badges(project, tmp_path / "status.html")["test"]
    assert "DRIFT" not in table_row(project, "test")
    # The version staging holds is still the forced one after a repair.
    (Path(project.repository) / "staging" / "main.tf").write_text("# edited by hand\n")
    project.envpipe("promote", "1.0.1", "--to", "staging", check=0)
    assert "FORCED by alice: hotfix INC-42" in table_row(project, "staging")


@FOLDER_ONLY
def test_a_plan_of_a_promoted_version_not_yet_applied_is_no_drift(project: Project) -> None:
    project.envpipe("publish", "--version", "1.0.1", check=0)
    project.envpipe("promote", "1.0.1", "--to", "test", check=0)
    project.envpipe("plan", "test", "--detailed-exitcode", check=2)  # pending: the apply, not drift
    assert status_of(project)["test"]["drift"] is None
