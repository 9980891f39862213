"""A whole path, two ways: ``envpipe run`` (one process) against the stages a generated
pipeline runs, each a fresh process (publish, then promote/apply/test per environment).

    python benchmarks/pipeline.py                # 3 rounds, interleaved
    python benchmarks/pipeline.py --quick        # 1 round

Three environments, a folder repository (so the difference is envpipe's own: process
start-up, imports, repeated reads), a one-resource Terraform definition and a one-test
pytest suite per environment. Each round publishes a new version on both sides. What a
CD server adds per job (checkout, agent start, the install line) is not in either: with
the install line reusing ``.envpipe-venv`` that is a few milliseconds per job instead
of a ``pip install``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ENVIRONMENTS = ("test", "staging", "production")
CONFIG = """\
project: pipeline
source: infra
repository: {repository}
tests: {{path: tests/}}
environments:
""" + "".join(f"  - name: {name}\n" for name in ENVIRONMENTS)
MAIN_TF = 'variable "envpipe_version" {\n  default = ""\n}\nresource "terraform_data" "r" {\n  input = var.envpipe_version\n}\n'
SUITE = "def test_the_environment_is_there():\n    assert True\n"


def envpipe(argv: Sequence[str], cwd: Path, env: Dict[str, str]) -> None:
    result = subprocess.run([sys.executable, "-m", "envpipe_agent", *argv], cwd=cwd, env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"envpipe {' '.join(argv)} failed ({result.returncode}):\n{result.stderr[-3000:]}")


def as_a_pipeline(version: str, cwd: Path, env: Dict[str, str]) -> float:
    started = time.perf_counter()
    envpipe(["publish", "--version", version], cwd, env)
    for name in ENVIRONMENTS:
        envpipe(["promote", version, "--to", name], cwd, env)
        envpipe(["apply", name, "--version", version], cwd, env)
        envpipe(["test", name, "--version", version], cwd, env)
    return time.perf_counter() - started


def as_one_run(version: str, cwd: Path, env: Dict[str, str]) -> float:
    started = time.perf_counter()
    envpipe(["run", "--version", version], cwd, env)
    return time.perf_counter() - started


def checkout(where: Path) -> Path:
    (where / "infra" / "tests").mkdir(parents=True)
    (where / "envpipe.yml").write_text(CONFIG.format(repository=where / "repository"))
    (where / "infra" / "main.tf").write_text(MAIN_TF)
    (where / "infra" / "tests" / "test_it.py").write_text(SUITE)
    return where


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 round")
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else args.rounds
    base = Path(tempfile.mkdtemp(prefix="envpipe-pipeline-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUILD_", "GO_", "JENKINS_", "ENVPIPE_"))}
    env.update(PYTHONPATH=str(ROOT), CHECKPOINT_DISABLE="1", TF_IN_AUTOMATION="1", USER="benchmark")
    found = shutil.which("terraform") or shutil.which("tofu")
    if found:
        env["ENVPIPE_TERRAFORM"] = found
    samples: Dict[str, List[float]] = {"run": [], "stages": []}
    try:
        sides = {"run": (checkout(base / "run"), as_one_run), "stages": (checkout(base / "stages"), as_a_pipeline)}
        print(f"{len(ENVIRONMENTS)} environments; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
              flush=True)
        for round_number in range(1, rounds + 1):
            order = ["run", "stages"] if round_number % 2 else ["stages", "run"]
            for side in order:
                cwd, how = sides[side]
                samples[side].append(how(f"1.0.{round_number}", cwd, env))
            print(f"round {round_number}: envpipe run {samples['run'][-1]:.2f} s, as pipeline stages "
                  f"{samples['stages'][-1]:.2f} s (10 processes)", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    summary = {side: statistics.median(values) for side, values in samples.items()}
    print(json.dumps({"median_seconds": summary, "samples": samples,
                      "load_after": os.getloadavg()[0]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
