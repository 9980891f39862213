"""The command line: options anywhere, one stderr line per failure, SPEC exit codes."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import list_repository, read_repository_file, run_envpipe
from envpipe_agent import main as main_module
from envpipe_agent.stages import status as status_stage
from envpipe_agent.locking import lock_key
from envpipe_agent.repository import open_repository

FOLDER_ONLY = pytest.mark.parametrize("repository_url", ["folder"], indirect=True)


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got:\n{stderr}"
    assert "Traceback" not in stderr
    return lines[0]


def test_python_m_envpipe_agent_runs_the_cli(tmp_path):
    result = run_envpipe(["--help"], cwd=tmp_path, check=0)
    assert "publish" in result.stdout and "promote" in result.stdout


@FOLDER_ONLY
def test_global_options_before_or_after_the_command_are_the_same(project):
    project.envpipe("publish", "--version", "1.0.1", check=0)
    before = json.loads(project.envpipe("--json", "status", check=0).stdout)
    after = json.loads(project.envpipe("status", "--json", check=0).stdout)
    assert before == after and before["project"] == "our-project"
    verified = json.loads(project.envpipe("verify", "1.0.1", "--json", "--config", "envpipe.yml", check=0).stdout)
    assert verified["ok"] is True


@FOLDER_ONLY
def test_force_without_reason_is_a_usage_error_and_changes_nothing(project):
    project.envpipe("publish", "--version", "1.0.1", check=0)
    line = one_line(project.envpipe("promote", "1.0.1", "--to", "staging", "--force", check=2).stderr)
    assert "--reason" in line
    assert read_repository_file(project.repository, "staging/main.tf") is None


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["status", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["promote", "1.0.1"], "the following arguments are required: --to"),
        ([], "the following arguments are required: COMMAND"),
        (["status", "--lock-timeout", "soon"], "argument --lock-timeout: invalid value 'soon'"),
    ],
)
def test_unknown_commands_and_flags_exit_2_with_one_line(tmp_path, args, expected):
    result = run_envpipe(args, cwd=tmp_path, check=2)
    assert expected in one_line(result.stderr)


@FOLDER_ONLY
@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("project: our-project\nrepository: {repo}\nenvironments: [{{name: test}}]\ncolour: red\n",
         "envpipe.yml: colour: unknown key"),
        ("project: our-project\nrepository: {repo}\nenvironments: [{{name: test, vars: 3}}]\n",
         "envpipe.yml: environments[0].vars: expected a mapping"),
        ("project: our-project\nrepository: {repo}\nenvironments: [{{name: Test}}]\n",
         "envpipe.yml: environments[0].name: 'Test' does not match"),
        ("project: our-project\nrepository: {repo}\nenvironments: [{{name: test}}, {{name: test}}]\n",
         "envpipe.yml: environments[1].name: environment 'test' appears twice"),
        ("project: our-project\nrepository: {repo}\nversion: 'release-{{build}}'\nenvironments: [{{name: test}}]\n",
         "envpipe.yml: version: template"),
        ("project: our-project\nrepository: {repo}\nenvironments: [{{name: test}}\n", "envpipe.yml: line"),
        ("project: our-project\nenvironments: [{{name: test}}]\n", "envpipe.yml: no repository"),
    ],
    ids=["unknown-key", "wrong-type", "bad-env-name", "duplicate-env", "bad-version-template", "invalid-yaml",
         "no-repository"],
)
def test_malformed_config_exits_2_naming_file_and_key_and_writes_nothing(project, config, expected):
    (project.root / "envpipe.yml").write_text(config.format(repo=project.repository))
    result = project.envpipe("publish", "--version", "1.0.1", check=2)
    assert expected in one_line(result.stderr)
    assert list_repository(project.repository, "") == {}


def test_missing_config_exits_2_saying_where(tmp_path):
    line = one_line(run_envpipe(["status"], cwd=tmp_path, check=2).stderr)
    assert "envpipe.yml: not found" in line and "--config" in line


@FOLDER_ONLY
def test_repo_option_and_envpipe_repo_override_the_config(project, tmp_path):
    other = tmp_path / "other-repository"
    project.envpipe("--repo", str(other), "publish", "--version", "1.0.1", check=0)
    assert (other / "1.0.1" / "main.tf").is_file()
    third = tmp_path / "third-repository"
    project.envpipe("publish", "--version", "1.0.1", env={"ENVPIPE_REPO": str(third)}, check=0)
    assert (third / "1.0.1" / "main.tf").is_file()
    assert read_repository_file(project.repository, "1.0.1/main.tf") is None


@pytest.mark.parametrize("repository_url", ["s3"], indirect=True)
def test_s3_endpoint_from_aws_endpoint_url_s3(project, moto_server, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    project.envpipe("publish", "--version", "1.0.1", env={"AWS_ENDPOINT_URL_S3": moto_server}, check=0)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)  # for the direct read below
    assert read_repository_file(project.repository, "1.0.1/main.tf") is not None


@pytest.mark.parametrize("repository_url", ["s3"], indirect=True)
def test_missing_bucket_is_one_clear_line(project, s3):
    s3.delete_bucket(Bucket="our-project-repository")
    line = one_line(project.envpipe("status", check=2).stderr)
    assert "bucket 'our-project-repository' does not exist" in line


@FOLDER_ONLY
def test_secret_values_never_reach_an_error_line(project):
    result = project.envpipe("publish", "--version", "1.0.1", "--repo", "ftp://hunter2-secret/x",
                             env={"TF_VAR_db_password": "hunter2-secret"}, check=2)
    assert "hunter2-secret" not in result.stderr and "****" in result.stderr


def test_internal_error_shows_no_traceback_without_v(project, monkeypatch, capsys):
    def broken(ctx):
        raise KeyError("boom")

    monkeypatch.setattr(status_stage, "status", broken)
    monkeypatch.chdir(project.root)
    assert main_module.main(["status"], environ=dict(os.environ)) == 4
    err = capsys.readouterr().err
    assert "internal error: KeyError" in one_line(err) and "rerun with -v" in err
    assert main_module.main(["status", "-v"], environ=dict(os.environ)) == 4
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'boom'" in err


def test_a_multi_line_error_message_is_still_one_line(project, monkeypatch, capsys):
    from envpipe_agent.errors import StageFailed

    def failing(ctx):
        raise StageFailed("terraform failed:\nError: bad\n\n  on main.tf line 1")

    monkeypatch.setattr(status_stage, "status", failing)
    monkeypatch.chdir(project.root)
    assert main_module.main(["status"], environ=dict(os.environ)) == 1
    assert one_line(capsys.readouterr().err) == (
        "envpipe: error: terraform failed:; Error: bad; on main.tf line 1")


@FOLDER_ONLY
def test_sigterm_while_waiting_for_a_lock_exits_130_with_one_line(project):
    from test_locking import held_lock

    open_repository(project.repository, {}).write(lock_key("test"), held_lock(3600))
    project.envpipe("publish", "--version", "1.0.1", check=0)
    process = subprocess.Popen(
        [sys.executable, "-m", "envpipe_agent", "promote", "1.0.1", "--to", "test", "--lock-timeout", "600"],
        cwd=project.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        waiting = process.stderr.readline()  # logged once the wait begins
        assert "is locked by bob@agent-9" in waiting and "waiting up to 600s" in waiting
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130
    assert "terminated (SIGTERM)" in one_line(rest)
    assert json.loads(read_repository_file(project.repository, ".envpipe/locks/test.json"))["holder"] == "bob@agent-9"


@FOLDER_ONLY
def test_config_secrets_are_masked_in_the_error_line(project):
    config = project.root / "envpipe.yml"
    config.write_text(config.read_text() + "secrets: [DB_PASSWORD]\n")
    result = project.envpipe("verify", "s3cr3t-value-9", env={"DB_PASSWORD": "s3cr3t-value-9"}, check=2)
    assert "s3cr3t-value-9" not in result.stderr and "****" in result.stderr


@FOLDER_ONLY
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["publish", "--version", "../1.0.1"], "invalid version '../1.0.1'"),
        (["publish", "--version", "1.0/1"], "invalid version '1.0/1'"),
        (["promote", "v1", "--to", "test"], "invalid version 'v1'"),
        (["promote", "1.0.1", "--to", "Test"], "environment 'Test' is not in envpipe.yml"),
        (["unlock", "../test"], "environment '../test' is not in envpipe.yml"),
    ],
)
def test_invalid_versions_and_environment_names_exit_2(project, args, expected):
    assert expected in one_line(project.envpipe(*args, check=2).stderr)
    assert list_repository(project.repository, "") == {}


def test_history_limit_must_be_positive(tmp_path):
    line = one_line(run_envpipe(["history", "--limit", "0"], cwd=tmp_path, check=2).stderr)
    assert "expected a positive whole number, got '0'" in line


def _parsers(parser, name="envpipe"):
    """(command name, parser) for the parser and every sub-command, at any depth."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_command_has_a_description_and_every_argument_help_text():
    missing = []
    for name, parser in _parsers(main_module.build_parser()):
        if name != "envpipe" and not parser.description:
            missing.append(f"{name}: description")
        missing += [f"{name}: {action.dest}" for action in parser._actions
                    if not action.help and not isinstance(action, argparse._SubParsersAction)]
    assert missing == []


def test_a_subcommands_help_says_what_it_does_and_what_env_is(tmp_path):
    shown = run_envpipe(["apply", "--help"], cwd=tmp_path, check=0).stdout
    assert "Fetch, verify and apply ENV's definition." in shown
    assert "environment to apply" in shown


@FOLDER_ONLY
@pytest.mark.parametrize("args", [["promote", "1.0.1", "--to", "staging", "--reason", "hotfix"],
                                  ["destroy", "production", "--reason", "decommissioned"]],
                         ids=["promote", "destroy"])
def test_reason_without_force_is_a_usage_error_saying_so_and_changes_nothing(project, args):
    project.envpipe("publish", "--version", "1.0.1", check=0)
    before = list_repository(project.repository, "")
    line = one_line(project.envpipe(*args, check=2).stderr)
    assert "--reason is only used with --force" in line and f"envpipe {args[0]} --help" in line
    assert list_repository(project.repository, "") == before


@FOLDER_ONLY
def test_promote_takes_the_version_positionally_or_as_version_like_the_other_commands(project):
    project.envpipe("publish", "--version", "1.0.1", check=0)
    project.envpipe("publish", "--version", "1.0.2", check=0)
    promoted = project.envpipe("promote", "--version", "1.0.1", "--to", "test", check=0)
    assert promoted.stdout == "test: version 1.0.1 promoted (was empty; 1 copied, 0 deleted, 0 unchanged)\n"
    project.envpipe("promote", "1.0.2", "--to", "test", check=0)
    assert json.loads(project.envpipe("status", "--json", check=0).stdout)["environments"][0]["version"] == "1.0.2"
    line = one_line(project.envpipe("promote", "1.0.1", "--version", "1.0.2", "--to", "test", check=2).stderr)
    assert "two versions given (1.0.1 and --version 1.0.2)" in line


@FOLDER_ONLY
def test_history_is_aligned_columns_with_the_reason_of_every_override_and_refusal(project):
    project.envpipe("publish", "--version", "1.0.1", check=0)
    project.envpipe("promote", "1.0.1", "--to", "test", check=0)
    project.envpipe("promote", "1.0.1", "--to", "staging", "--force", "--reason", "hotfix INC-42", check=0)
    (Path(project.repository) / "staging" / "main.tf").write_text("# edited by hand\n")
    project.envpipe("apply", "staging", check=3)

    lines = project.envpipe("history", check=0).stdout.splitlines()
    heading, rows = lines[0], lines[1:]
    columns = [heading.index(name) for name in ("ENVIRONMENT", "ACTION", "VERSION", "RESULT", "BY", "NOTE")]
    for row in rows:
        # Every cell starts under its heading (an empty NOTE is trimmed away).
        assert all(row[column - 2:column] == "  " and row[column] != " " for column in columns
                   if column < len(row)), row
    by_action = {(row.split()[1], row.split()[2]): row for row in rows}
    assert "reason: hotfix INC-42 (promote's gate (tests in test) overridden)" in by_action[("staging", "override")]
    assert "reason: hotfix INC-42" in by_action[("staging", "promote")]
    assert "does not match its manifest (altered: main.tf)" in by_action[("staging", "apply")]
