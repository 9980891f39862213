"""Blue-green: what one `envpipe bluegreen` release costs beyond its parts.

    python benchmarks/bluegreen.py              # 5 rounds
    python benchmarks/bluegreen.py --rounds 3

One `envpipe bluegreen production V` of a one-resource `terraform_data` stack (with a
one-test pytest suite and a `terraform_data` router), in its steady state: an instance
is live, V goes into the other one, is tested, the router swaps, the old one is
destroyed. Against the same work run by hand as five commands on a twin project:
`promote V --to ENV` and `apply ENV` into the idle environment, `test ENV`, `apply` of
the router (its own project, given TF_VAR_envpipe_live_* as bluegreen gives them), and
`destroy` of the old environment. Interleaved, a new version each round, both on a
folder repository, Terraform as envpipe finds it. Target: overhead <= 0.5 s.

Raw results go to benchmarks/results/bluegreen-*.json.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from ondemand import envpipe  # noqa: E402

DEFINITION = """\
variable "envpipe_environment" {}
variable "envpipe_version" {}
resource "terraform_data" "app" {
  input = "${var.envpipe_environment}@${var.envpipe_version}"
}
output "endpoint" {
  value = "https://${var.envpipe_environment}.example.com"
}
"""
ROUTER = """\
variable "envpipe_live_color" {}
variable "envpipe_live_environment" {}
variable "envpipe_live_outputs" {}
resource "terraform_data" "route" {
  input = {
    color    = var.envpipe_live_color
    endpoint = jsondecode(var.envpipe_live_outputs)["endpoint"]
  }
}
"""
TEST = "import os\n\ndef test_endpoint():\n    assert os.environ['ENVPIPE_OUTPUT_ENDPOINT'].startswith('https://')\n"
BLUEGREEN_CONFIG = """\
project: bench
source: src
repository: {repository}
environments:
  - name: production
    bluegreen: {{router: router/}}
tests: {{path: tests/}}
"""
# Two environments each first on its own path (one config each, one repository), so
# neither promote waits on a gate, as the idle instance's does not.
PARTS_CONFIG = """\
project: bench
source: src
repository: {repository}
environments:
  - name: {environment}
tests: {{path: tests/}}
"""
ROUTER_CONFIG = """\
project: bench
source: src/router
repository: {repository}
environments:
  - name: router
"""


def project(root: Path, config: str) -> Path:
    root.mkdir(parents=True)
    for name in ("a", "b"):
        (root / f"{name}.yml").write_text(config.format(repository=root / "repository", environment=name))
    (root / "envpipe.yml").write_text(config.format(repository=root / "repository", environment="a"))
    (root / "src" / "router").mkdir(parents=True)
    (root / "src" / "tests").mkdir()
    (root / "src" / "main.tf").write_text(DEFINITION)
    (root / "src" / "router" / "main.tf").write_text(ROUTER)
    (root / "src" / "tests" / "test_app.py").write_text(TEST)
    return root


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GO_", "TF_VAR_", "ENVPIPE_"))
           and k not in ("BUILD_NUMBER", "BUILD_URL", "JENKINS_URL")}
    env.update(CHECKPOINT_DISABLE="1")
    rows: List[Dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="envpipe-bench-bluegreen-") as temp:
        home = Path(temp)
        bg = project(home / "bluegreen", BLUEGREEN_CONFIG)
        parts = project(home / "parts", PARTS_CONFIG)
        router = home / "router"
        router.mkdir()
        # The router project's definition is the twin's router folder, published to its own repository.
        (router / "envpipe.yml").write_text(ROUTER_CONFIG.format(repository=router / "repository").replace(
            "source: src/router", f"source: {parts / 'src' / 'router'}"))
        # Round 0, not timed: an instance live on each side.
        for work in (bg, parts, router):
            envpipe(["publish", "--version", "1.0.0"], work, env)
        envpipe(["bluegreen", "production", "1.0.0"], bg, env)
        envpipe(["promote", "1.0.0", "--to", "a"], parts, env)
        envpipe(["apply", "a"], parts, env)
        envpipe(["promote", "1.0.0", "--to", "router"], router, env)
        envpipe(["apply", "router"], router, dict(env, TF_VAR_envpipe_live_color="a", TF_VAR_envpipe_live_environment="a",
                                                  TF_VAR_envpipe_live_outputs='{"endpoint": "https://a.example.com"}'))
        live, idle = "a", "b"
        for round_ in range(1, args.rounds + 1):
            version = f"1.0.{round_}"
            for work in (bg, parts):
                envpipe(["publish", "--version", version], work, env)
            release = envpipe(["bluegreen", "production", version], bg, env)
            on = ("--config", f"{idle}.yml")
            steps = {"promote": envpipe([*on, "promote", version, "--to", idle], parts, env),
                     "apply": envpipe([*on, "apply", idle], parts, env),
                     "test": envpipe([*on, "test", idle], parts, env)}
            outputs = json.dumps({"endpoint": f"https://{idle}.example.com"})
            router_env = dict(env, TF_VAR_envpipe_live_color=idle, TF_VAR_envpipe_live_environment=idle,
                              TF_VAR_envpipe_live_outputs=outputs)
            steps["router apply"] = envpipe(["apply", "router"], router, router_env)
            steps["destroy"] = envpipe(["--config", f"{live}.yml", "destroy", live], parts, env)
            live, idle = idle, live
            row = {"bluegreen": release, "parts": sum(steps.values()), **steps}
            rows.append(row)
            print(f"round {round_}: bluegreen {release:.2f}s, parts {row['parts']:.2f}s "
                  f"({', '.join(f'{k} {v:.2f}' for k, v in steps.items())})", flush=True)
    median = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
    overhead = median["bluegreen"] - median["parts"]
    print(f"median: bluegreen {median['bluegreen']:.2f}s, parts by hand {median['parts']:.2f}s, "
          f"overhead {overhead:+.2f}s (target <= 0.5 s)")
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    (results / f"bluegreen-{stamp}.json").write_text(json.dumps(
        {"rounds": rows, "median": median, "overhead": overhead, "python": platform.python_version(),
         "cpus": os.cpu_count()}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
