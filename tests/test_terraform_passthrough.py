"""Passing flags to Terraform: apply ENV -- -target=ADDR (allowlisted, recorded), and
envpipe terraform ENV -- state list|show, output, import on the verified definition."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import Project

FOLDER_ONLY = pytest.mark.parametrize("repository_url", ["folder"], indirect=True)
TWO = 'resource "terraform_data" "a" {}\nresource "terraform_data" "b" {}\noutput "greeting" {\n  value = "hello"\n}\n'


def state_addresses(project: Project, environment: str) -> list:
    state = json.loads((Path(project.repository) / ".envpipe" / "state" / environment / "terraform.tfstate").read_text())
    return sorted(f"{r['type']}.{r['name']}" for r in state["resources"])


def records(project: Project, environment: str, action: str) -> list:
    folder = Path(project.repository) / ".envpipe" / "records" / environment
    return [json.loads(p.read_text()) for p in sorted(folder.rglob(f"*-{action}-*.json"), key=lambda p: p.name)]


@pytest.fixture
def promoted(project: Project) -> Project:
    project.write("main.tf", TWO)
    project.envpipe("publish", "--version", "1.0.1", check=0)
    project.envpipe("promote", "1.0.1", "--to", "test", check=0)
    return project


@FOLDER_ONLY
def test_apply_passes_target_on_and_records_it_and_refuses_other_flags(promoted: Project) -> None:
    for flag in ("-destroy", "-target", "-state=elsewhere.tfstate", "-lock=false"):
        refused = promoted.envpipe("apply", "test", "--", flag, check=2)
        assert "after '--' apply and plan take -target=ADDRESS, -replace=ADDRESS" in refused.stderr
    assert records(promoted, "test", "apply") == []  # refused before anything ran
    assert "takes no arguments after '--'" in promoted.envpipe("promote", "1.0.1", "--to", "test", "--",
                                                                "-target=x", check=2).stderr

    promoted.envpipe("apply", "test", "-q", "--", "-target=terraform_data.a", check=0)

    assert state_addresses(promoted, "test") == ["terraform_data.a"]
    [applied] = records(promoted, "test", "apply")
    assert applied["tool_args"] == ["-target=terraform_data.a"]
    assert "terraform -target=terraform_data.a" in promoted.envpipe("history", "test", check=0).stdout
    promoted.envpipe("apply", "test", "--", "-replace=terraform_data.a", check=0)
    assert state_addresses(promoted, "test") == ["terraform_data.a", "terraform_data.b"]


@FOLDER_ONLY
def test_terraform_state_commands_run_on_the_environments_own_state_and_import_is_recorded(
        promoted: Project) -> None:
    promoted.envpipe("apply", "test", "--", "-target=terraform_data.a", check=0)

    listed = promoted.envpipe("terraform", "test", "--", "state", "list", check=0)
    assert listed.stdout.splitlines() == ["terraform_data.a"]
    shown = promoted.envpipe("terraform", "test", "--", "state", "show", "terraform_data.a", check=0).stdout
    assert 'resource "terraform_data" "a"' in shown and "\x1b[" not in shown
    assert records(promoted, "test", "state") == []  # read-only: no record

    imported = promoted.envpipe("terraform", "test", "--", "import", "terraform_data.b",
                                "0b1c7f3e-0000-0000-0000-000000000000", check=0)
    assert "Import successful" in imported.stdout
    assert state_addresses(promoted, "test") == ["terraform_data.a", "terraform_data.b"]
    [record] = records(promoted, "test", "import")
    assert (record["result"], record["args"][:2], record["version"]) == ("done", ["import", "terraform_data.b"], "1.0.1")

    for args, expected in ((["state", "rm", "terraform_data.a"], "not available through envpipe"),
                           (["state", "pull"], "not available through envpipe"),
                           (["output", "-json"], "print sensitive outputs in clear")):
        assert expected in promoted.envpipe("terraform", "test", "--", *args, check=2).stderr
    assert state_addresses(promoted, "test") == ["terraform_data.a", "terraform_data.b"]


@FOLDER_ONLY
def test_import_into_a_manual_environment_needs_an_approver(project: Project) -> None:
    project.envpipe("publish", "--version", "1.0.1", check=0)
    project.envpipe("promote", "1.0.1", "--to", "production", "--force", "--reason", "setup", "--approved-by", "ann",
                    check=0)
    refused = project.envpipe("terraform", "production", "--", "import", "terraform_data.example", "x", check=3)
    assert "production has approval: manual: terraform import needs an approver" in refused.stderr
    assert records(project, "production", "import") == []
