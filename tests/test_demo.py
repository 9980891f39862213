"""make demo: examples/demo.py takes the example stack to production, and can run again."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lxml.html

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.py"


def run_demo(work: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ENVPIPE_DEMO_DIR": str(work)}
    result = subprocess.run([sys.executable, str(DEMO), *args], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"demo exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def test_demo_takes_the_example_to_production_writes_the_page_and_runs_again_afresh(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    (work / "repository" / "stale").mkdir(parents=True)  # left by an earlier run: removed
    result = run_demo(work)

    assert f"demo: status page   {work / 'status.html'}" in result.stdout
    tree = lxml.html.parse(str(work / "status.html"))
    shown = {li.get("data-environment"): (li.get("data-version"), li.get("data-state"))
             for li in tree.xpath("//li[@data-environment]")}
    assert shown == {"test": ("1.0.2", "passed"), "staging": ("1.0.2", "passed"),
                     "production": ("1.0.2", "passed")}
    assert sorted(p.name for p in (work / "reports").iterdir()) == ["production.xml", "staging.xml", "test.xml"]
    assert not (work / "repository" / "stale").exists()
    assert "production (manual)  1.0.1" in result.stdout  # the status table
    # production is released blue-green: the first version goes live on blue, the next
    # one on green, and the router's swap destroys blue
    first, second_release = result.stdout.split("demo: the next version", 1)
    assert "LIVE blue 1.0.1" in first and "LIVE green 1.0.2" in second_release
    assert "production   bluegreen  1.0.2 live on production-green, production-blue destroyed" in second_release
    assert tree.xpath("//p[@data-live='green']")
    assert not (work / "repository" / "production-blue").exists()
    assert (work / "repository" / "production-green" / ".envpipe" / "manifest.json").exists()
    # a tester's environment, reaped once expired; a developer's sandbox, up and destroyed
    assert "review-42: destroyed (env of" in result.stdout
    assert "ON-DEMAND" in result.stdout and "sandbox-tester  sandbox  wc-" in result.stdout
    assert tree.xpath("//table[@id='on-demand']//td[starts-with(text(), 'wc-')]")
    assert "registration removed, records kept" in result.stdout.split("$ envpipe sandbox destroy", 1)[1]
    assert not list((work / "repository" / ".envpipe" / "on-demand").glob("*.json"))

    # Quiet: one line per stage and each command's result; the tools' output is in the log it names.
    log = work / "demo.log"
    assert f"demo: full log      {log}" in result.stdout
    assert "Terraform has been successfully initialized" not in result.stdout + result.stderr
    assert "Terraform has been successfully initialized" in log.read_text()
    stages = [line.split()[:2] for line in result.stdout.split("$ envpipe run", 1)[1].split("\n$ ", 1)[0].splitlines()
              if line.endswith("s") and "  " in line]
    assert stages[0] == ["publish", "1.0.1:"] and stages[-1] == ["production", "bluegreen"] and len(stages) == 8
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) < 90

    second = run_demo(work, "-v")  # -v: everything printed as well
    history = second.stdout.split("$ envpipe history production", 1)[1]
    assert history.count("released: live production-green") == 1  # the first run's repository is gone
    assert "Terraform has been successfully initialized" in second.stderr
