"""envpipe publish/promote against ``aws s3 sync`` on the same moto S3 server.

    python benchmarks/s3_sync.py                 # both delay settings, 3 rounds, 1 GiB RSS check
    python benchmarks/s3_sync.py --quick         # 1 round, 30 ms only, no 1 GiB file
    python benchmarks/s3_sync.py --show benchmarks/results/s3_sync-....json

Both tools run as subprocesses, as a CD agent runs them, against one moto server
(benchmarks/moto_delay.py, its own process) that counts requests and can delay
each one to S3's order of latency. Steps, interleaved A/B and alternating which
side goes first each round:

* publish: 2,000 files of 0.5-4 KB in 40 folders into an empty version folder
  (``envpipe publish`` / ``aws s3 sync ./src s3://bucket/1.0.1/``);
* full promote into an empty environment folder
  (``envpipe promote`` / ``aws s3 sync --delete s3://bucket/1.0.1/ s3://bucket/target/``);
* promote of a version with 1% of the files changed (same sizes, other bytes);
* no-op promote: the same version again.

awscli's sync compares size and modification time, so after a newer version is
uploaded it copies every file; envpipe compares content tags and copies only the
changed ones. Raw results go to benchmarks/results/*.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
STEPS = ("publish", "promote_full", "promote_1pct", "promote_noop")
TARGETS = {"publish": 0.7, "promote_full": 0.7, "promote_noop": 0.5}


# ----------------------------------------------------------------- the server
class BenchServer:
    """moto_delay.py in its own process, driven over HTTP."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "moto_delay.py"), "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        line = self.process.stdout.readline().strip()
        if not line.startswith("http://"):
            self.process.kill()
            raise SystemExit(f"moto server did not start (got {line!r})")
        self.url = line

    def _call(self, method: str, path: str) -> Any:
        request = urllib.request.Request(self.url + path, method=method, data=b"" if method == "POST" else None)
        with urllib.request.urlopen(request, timeout=60) as response:
            body = response.read()
        return json.loads(body) if body.startswith(b"{") else body

    def reset_s3(self) -> None:
        self._call("POST", "/moto-api/reset")

    def set_delay(self, ms: float) -> None:
        self._call("POST", f"/_bench/delay?ms={ms:g}")

    def take_counts(self) -> Dict[str, Any]:
        return self._call("POST", "/_bench/counts")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


# ------------------------------------------------------------------ the trees
def make_tree(root: Path, files: int, folders: int, seed: int = 7) -> List[Path]:
    """``files`` text files of 0.5-4 KB spread over ``folders`` folders."""
    rng = random.Random(seed)
    paths = []
    for index in range(files):
        folder = root / f"module-{index % folders:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"resource-{index:04d}.tf"
        # Lower-case hex: never looks like an access key or a private key to
        # envpipe's secret scan.
        path.write_bytes(rng.randbytes(rng.randint(256, 2048)).hex().encode())
        paths.append(path)
    return paths


def change_some(source: Path, destination: Path, paths: List[Path], fraction: float, seed: int = 11) -> int:
    """Copy the tree and rewrite ``fraction`` of its files with other bytes of the same size."""
    shutil.copytree(source, destination)
    rng = random.Random(seed)
    chosen = rng.sample(paths, max(1, round(len(paths) * fraction)))
    for path in chosen:
        target = destination / path.relative_to(source)
        target.write_bytes(rng.randbytes(target.stat().st_size // 2).hex().encode().ljust(target.stat().st_size, b"0"))
    return len(chosen)


# ------------------------------------------------------------------- running
def child_environment(endpoint: str, home: Path) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "BUILD_", "GO_", "JENKINS_", "ENVPIPE_"))}
    env.update(
        AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="benchmark", AWS_SECRET_ACCESS_KEY="benchmark-secret",
        AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE=str(home / "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "aws-credentials"), AWS_EC2_METADATA_DISABLED="true",
        USER="benchmark",
    )
    return env


def run_timed(server: BenchServer, command: Sequence[str], cwd: Path, env: Dict[str, str]) -> Dict[str, Any]:
    """Run ``command``; its wall time, exit code and the S3 requests it made."""
    server.take_counts()
    started = time.perf_counter()
    result = subprocess.run(list(command), cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    counts = server.take_counts()
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return {"seconds": seconds, "requests": counts["total"], "by_kind": counts["by_kind"]}


CONFIG = """\
project: benchmark
source: src
repository: s3://{bucket}
version: "1.0.{{build}}"
environments:
  - name: target
  - name: after
"""


class Envpipe:
    name = "envpipe"

    def __init__(self, work: Path, bucket: str) -> None:
        self.work = work
        self.bucket = bucket
        (work / "envpipe.yml").write_text(CONFIG.format(bucket=bucket))

    def commands(self, source: Path, version: str) -> Dict[str, List[str]]:
        envpipe = str(BIN / "envpipe")
        return {
            "publish": [envpipe, "publish", "--version", version, "--source", str(source)],
            "promote": [envpipe, "promote", version, "--to", "target"],
        }


class AwsCli:
    name = "awscli"

    def __init__(self, work: Path, bucket: str) -> None:
        self.work = work
        self.bucket = bucket

    def commands(self, source: Path, version: str) -> Dict[str, List[str]]:
        aws = str(BIN / "aws")
        return {
            "publish": [aws, "s3", "sync", "--only-show-errors", str(source), f"s3://{self.bucket}/{version}/"],
            "promote": [aws, "s3", "sync", "--only-show-errors", "--delete",
                        f"s3://{self.bucket}/{version}/", f"s3://{self.bucket}/target/"],
        }


def create_bucket(server: BenchServer, env: Dict[str, str], bucket: str, cwd: Path) -> None:
    subprocess.run([str(BIN / "aws"), "s3api", "create-bucket", "--bucket", bucket], cwd=cwd, env=env,
                   check=True, capture_output=True)


def one_round(server: BenchServer, work: Path, env: Dict[str, str], first: Path, second: Path,
              envpipe_first: bool) -> Dict[str, Dict[str, Any]]:
    """One round of the four steps on fresh buckets; A/B interleaved step by step."""
    server.reset_s3()
    sides = [Envpipe(work, "envpipe-benchmark"), AwsCli(work, "awscli-benchmark")]
    if not envpipe_first:
        sides.reverse()
    for side in sides:
        create_bucket(server, env, side.bucket, work)
    results: Dict[str, Dict[str, Any]] = {side.name: {} for side in sides}
    plan = [("publish", first, "1.0.1", "publish"), ("promote_full", first, "1.0.1", "promote"),
            (None, second, "1.0.2", "publish"), ("promote_1pct", second, "1.0.2", "promote"),
            ("promote_noop", second, "1.0.2", "promote")]
    for step, source, version, action in plan:
        for side in sides:
            command = side.commands(source, version)[action]
            measured = run_timed(server, command, work, env)
            if step:
                results[side.name][step] = measured
    return results


def summarise(rounds: List[Dict[str, Dict[str, Any]]]) -> Dict[str, Any]:
    summary = {}
    for step in STEPS:
        row: Dict[str, Any] = {}
        for side in ("envpipe", "awscli"):
            runs = [r[side][step] for r in rounds]
            row[side] = {
                "median_seconds": statistics.median(r["seconds"] for r in runs),
                "seconds": [round(r["seconds"], 3) for r in runs],
                "requests": statistics.median(r["requests"] for r in runs),
                "by_kind": runs[-1]["by_kind"],
            }
        row["ratio"] = row["envpipe"]["median_seconds"] / row["awscli"]["median_seconds"]
        # Each round runs the two sides back to back, so a round's ratio is robust to
        # load that drifts over minutes (other work on a shared machine).
        row["median_round_ratio"] = statistics.median(r["envpipe"][step]["seconds"] / r["awscli"][step]["seconds"]
                                                      for r in rounds)
        summary[step] = row
    return summary


def startup_costs(env: Dict[str, str], cwd: Path, repeats: int = 5) -> Dict[str, float]:
    """Median wall time of commands that do no S3 work: the fixed cost of each tool."""
    def median_time(command: List[str]) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            subprocess.run(command, cwd=cwd, env=env, capture_output=True, check=True)
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    return {
        "envpipe --help": median_time([str(BIN / "envpipe"), "--help"]),
        "python -c pass": median_time([sys.executable, "-c", "pass"]),
        "python -c 'import boto3'": median_time([sys.executable, "-c", "import boto3"]),
        "aws --version": median_time([str(BIN / "aws"), "--version"]),
    }


# ---------------------------------------------------------------- peak memory
def peak_rss(server: BenchServer, work: Path, env: Dict[str, str], size_mib: int) -> Dict[str, Any]:
    """Peak RSS of publishing one file of ``size_mib`` MiB (random bytes), envpipe and awscli."""
    server.set_delay(0)
    server.reset_s3()
    big = work / "big"
    big.mkdir()
    chunk = 8 * 1024 * 1024
    with open(big / "blob.bin", "wb") as out:
        for _ in range(size_mib * 1024 * 1024 // chunk):
            out.write(os.urandom(chunk))
    bucket = "rss-benchmark"
    create_bucket(server, env, bucket, work)
    (work / "rss").mkdir()
    (work / "rss" / "envpipe.yml").write_text(CONFIG.format(bucket=bucket))
    # A fresh parent per measurement: RUSAGE_CHILDREN's maxrss is that of its
    # largest waited-for child, so nothing else can leak into the figure.
    measure = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
               "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t, rc)")
    figures = {}
    for name, command in (
        ("envpipe", [str(BIN / "envpipe"), "publish", "--version", "2.0.0", "--source", str(big)]),
        ("awscli", [str(BIN / "aws"), "s3", "sync", "--only-show-errors", str(big), f"s3://{bucket}/aws/"]),
    ):
        output = subprocess.run([sys.executable, "-c", measure, *command], cwd=work / "rss", env=env,
                                capture_output=True, text=True, check=True).stdout.split()
        if output[2] != "0":
            raise SystemExit(f"{name} failed to upload the {size_mib} MiB file")
        figures[name] = {"peak_rss_mb": int(output[0]) / 1024, "seconds": float(output[1])}
    shutil.rmtree(big)
    server.reset_s3()
    return {"file_mib": size_mib, **figures}


# ----------------------------------------------------------------- reporting
def print_table(delay: float, summary: Dict[str, Any], threads: Dict[str, int]) -> None:
    print(f"\n== per-request delay {delay:g} ms "
          f"(envpipe {threads['envpipe']} threads, awscli {threads['awscli']}) ==")
    print(f"{'step':<14}{'envpipe s':>10}{'awscli s':>10}{'ratio':>8}{'rounds':>8}{'target':>8}"
          f"{'envpipe req':>13}{'awscli req':>12}")
    for step, row in summary.items():
        target = TARGETS.get(step)
        print(f"{step:<14}{row['envpipe']['median_seconds']:>10.2f}{row['awscli']['median_seconds']:>10.2f}"
              f"{row['ratio']:>8.2f}{row['median_round_ratio']:>8.2f}{('<= %.1f' % target) if target else '-':>8}"
              f"{row['envpipe']['requests']:>13.0f}{row['awscli']['requests']:>12.0f}")
    for step, row in summary.items():
        print(f"  {step} requests: envpipe {row['envpipe']['by_kind']}  awscli {row['awscli']['by_kind']}")


def show(path: Path) -> int:
    report = json.loads(path.read_text())
    print(f"{path.name}: {report['date']}, {report['machine']['cpus']} CPUs, {report['files']} files, "
          f"{report['rounds']} rounds; startup {report['startup_seconds']}")
    for delay, result in report["delays"].items():
        print_table(float(delay[:-2]), summarise(result["rounds"]), report["threads"])
    if "peak_rss" in report:
        print("\npeak RSS:", report["peak_rss"])
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--folders", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds per delay setting (default 3)")
    parser.add_argument("--delays", default="0,30", help="per-request delays in ms, comma-separated")
    parser.add_argument("--big-file-mib", type=int, default=1024, help="size for the peak-RSS check; 0 skips it")
    parser.add_argument("--quick", action="store_true", help="1 round, 30 ms only, no big file")
    parser.add_argument("--output", type=Path, default=HERE / "results")
    parser.add_argument("--show", type=Path, metavar="JSON", help="print the tables of a saved result and stop")
    parser.add_argument("--code", type=Path, metavar="DIR",
                        help="benchmark the envpipe_agent package in DIR (e.g. a 'git archive' of a commit) "
                             "instead of the installed one")
    args = parser.parse_args(argv)
    if args.show:
        return show(args.show)
    if args.quick:
        args.rounds, args.delays, args.big_file_mib = 1, "30", 0
    for tool in ("envpipe", "aws"):
        if not (BIN / tool).exists():
            raise SystemExit(f"{BIN / tool} not found: run 'make install' and '{BIN}/pip install awscli'")

    from envpipe_agent.repository.base import TRANSFER_THREADS

    threads = {"envpipe": TRANSFER_THREADS, "awscli": 10}  # awscli's s3.max_concurrent_requests default
    started = time.perf_counter()
    server = BenchServer()
    report: Dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_at_start": os.getloadavg()},
        "files": args.files, "folders": args.folders, "rounds": args.rounds, "threads": threads,
        "delays": {},
    }
    try:
        with tempfile.TemporaryDirectory(prefix="envpipe-bench-") as temp:
            work = Path(temp)
            (work / "home").mkdir()
            env = child_environment(server.url, work / "home")
            if args.code:
                env["PYTHONPATH"] = str(args.code.resolve())
                report["code"] = str(args.code.resolve())
            paths = make_tree(work / "src", args.files, args.folders)
            changed = change_some(work / "src", work / "src2", paths, 0.01)
            report["changed_files"] = changed
            report["startup_seconds"] = startup_costs(env, work)
            print("startup (median s):", {k: round(v, 3) for k, v in report["startup_seconds"].items()})
            for delay in (float(d) for d in args.delays.split(",") if d.strip()):
                server.set_delay(delay)
                rounds = [one_round(server, work, env, work / "src", work / "src2", envpipe_first=i % 2 == 0)
                          for i in range(args.rounds)]
                summary = summarise(rounds)
                report["delays"][f"{delay:g}ms"] = {"summary": summary, "rounds": rounds}
                print_table(delay, summary, threads)
            if args.big_file_mib:
                report["peak_rss"] = peak_rss(server, work, env, args.big_file_mib)
                print(f"\npeak RSS publishing one {args.big_file_mib} MiB file:",
                      {k: v for k, v in report["peak_rss"].items() if k != "file_mib"})
    finally:
        server.stop()
    report["total_seconds"] = time.perf_counter() - started
    report["machine"]["load_average_at_end"] = os.getloadavg()
    args.output.mkdir(parents=True, exist_ok=True)
    out = args.output / f"s3_sync-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    print(f"\nraw results: {out} ({report['total_seconds']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
