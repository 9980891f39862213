"""Exit codes a pipeline branches on: --detailed-exitcode's 2 means "changes" only,
--lock-timeout takes only a finite number of seconds, and the one error handler gives
every failure, a broken installation's included, one line and its code."""
from __future__ import annotations

import math
import os

import pytest
from conftest import run_envpipe

from envpipe_agent import main as main_module
from envpipe_agent.ci_context import CIContext
from envpipe_agent.errors import LockHeld, UsageError
from envpipe_agent.locking import environment_lock
from envpipe_agent.main import main
from envpipe_agent.repository import open_repository


@pytest.mark.parametrize("args", [
    ["plan", "--detailed-exitcode"],                    # ENV missing
    ["plan", "test", "--detailed-exitcode", "--bogus"],  # an unknown flag
    ["--detailed-exitcode", "plan", "test"],            # the flag before the command is not an option there
    ["plan", "test", "--detailed"],                     # argparse's abbreviation still asks for it
])
def test_usage_errors_with_detailed_exitcode_exit_1_never_2(tmp_path, args):
    result = run_envpipe(args, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("envpipe: error: ") and len(result.stderr.splitlines()) == 1


def test_a_configuration_error_with_detailed_exitcode_exits_1(tmp_path):
    result = run_envpipe(["plan", "test", "--detailed-exitcode"], cwd=tmp_path)  # no envpipe.yml here
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("envpipe: error: ") and len(result.stderr.splitlines()) == 1
    assert run_envpipe(["plan", "test"], cwd=tmp_path).returncode == 2


def test_a_broken_installation_is_one_line_and_exit_4(monkeypatch, capsys):
    monkeypatch.setattr(main_module, "COMMAND_MODULES", (*main_module.COMMAND_MODULES, "envpipe_agent.commands.gone"))

    assert main(["status"], environ=dict(os.environ)) == 4

    err = capsys.readouterr().err
    assert err.startswith("envpipe: internal error: ModuleNotFoundError: No module named "
                          "'envpipe_agent.commands.gone': this is a bug in envpipe")
    assert len(err.splitlines()) == 1 and "Traceback" not in err


class HeldUntil(LockHeld):
    """An error whose constructor takes other arguments than a message."""

    def __init__(self, holder: str, until: str) -> None:
        super().__init__(f"locked by {holder} until {until}")
        self.holder = holder


def test_a_reworded_error_keeps_its_class_exit_code_and_attributes():
    reworded = HeldUntil("build 7", "12:00").reworded("run stopped at apply of test: locked by build 7")

    assert type(reworded) is HeldUntil and reworded.exit_code == 3 and reworded.holder == "build 7"
    assert str(reworded) == "run stopped at apply of test: locked by build 7"


def test_usage_errors_without_detailed_exitcode_still_exit_2(tmp_path):
    assert run_envpipe(["plan"], cwd=tmp_path).returncode == 2


def test_help_with_detailed_exitcode_still_exits_0(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["plan", "--detailed-exitcode", "--help"], environ=dict(os.environ))
    assert exited.value.code == 0 and "--detailed-exitcode" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "-1", "soon", ""])
def test_lock_timeout_must_be_a_finite_number_of_seconds(tmp_path, value):
    result = run_envpipe(["status", f"--lock-timeout={value}"], cwd=tmp_path)
    assert result.returncode == 2
    assert f"argument --lock-timeout: invalid value {value!r}: give the seconds to wait" in result.stderr


@pytest.mark.parametrize("seconds", [math.nan, math.inf, -0.5])
def test_the_lock_refuses_a_timeout_that_is_not_finite_seconds(tmp_path, seconds):
    repository = open_repository(str(tmp_path / "repository"), {})
    with pytest.raises(UsageError, match="invalid lock timeout"):
        with environment_lock(repository, "test", "apply", CIContext(server="local"), timeout=seconds):
            pass  # pragma: no cover - never entered
    assert not list(repository.list(".envpipe/locks/"))


@pytest.mark.parametrize("args", [
    ["apply", "test", "--plan", ""],       # $PLAN unset: never a fresh plan in place of the approved one
    ["plan", "test", "--out", " "],
    ["test", "test", "--junit", ""],
    ["run", "--version", "1.0.1", "--junit-dir", ""],
])
def test_an_empty_file_name_is_a_usage_error_not_no_file(tmp_path, args):
    result = run_envpipe(args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "an empty name: give the file or folder" in result.stderr and len(result.stderr.splitlines()) == 1


def minimal_working_copy(tmp_path) -> None:
    (tmp_path / "infra").mkdir()
    (tmp_path / "envpipe.yml").write_text(f"project: our-project\nsource: infra\nrepository: {tmp_path / 'repo'}\n"
                                          "environments:\n  - name: test\n")


@pytest.mark.parametrize("args, says", [
    (["status", "--html", "{tmp}"], "--html {tmp}: a folder; give the file to write"),
    (["status", "--html", "{tmp}/envpipe.yml/page.html"], "--html {tmp}/envpipe.yml/page.html: cannot create its folder"),
    (["generate", "jenkins", "-o", "{tmp}"], "-o {tmp}: a folder; give the file to write"),
    (["generate", "jenkins-library", "-o", "{tmp}/envpipe.yml"], "-o {tmp}/envpipe.yml: cannot create"),
    (["--repo", "file://relative", "status"], "repository 'file://relative': a file URL names an absolute path"),
])
def test_an_output_or_repository_that_cannot_be_used_is_a_usage_error_not_a_bug(tmp_path, args, says):
    minimal_working_copy(tmp_path)
    result = run_envpipe([arg.format(tmp=tmp_path) for arg in args], cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert says.format(tmp=tmp_path) in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["envpipe.yml", "infra"]
