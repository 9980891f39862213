"""`make demo`: the example stack along the whole path, with real Terraform.

Runs ``envpipe run`` on examples/ against a throw-away folder repository, approving
production explicitly, then prints ``envpipe status`` and writes the HTML status
page; then releases the next version the same way, which production, released
blue-green, takes into its other instance before the router swaps traffic to it. Everything lives in build/demo/ (the repository, the JUnit reports, the page,
the log); each run removes what the previous one left there first, so it starts from
nothing and leaves nothing elsewhere.

Quiet by default: each command's result, and one line per stage of ``envpipe run``;
everything envpipe and Terraform print goes to build/demo/demo.log, which it names.
``-v`` (``make demo DEMO_ARGS=-v``) prints it all as well.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

EXAMPLES = Path(__file__).resolve().parent
# ENVPIPE_DEMO_DIR moves it elsewhere (the demo's own test does).
WORK = Path(os.environ.get("ENVPIPE_DEMO_DIR") or EXAMPLES.parent / "build" / "demo").resolve()
VERSION, NEXT_VERSION = "1.0.1", "1.0.2"
# A CI server's variables would make envpipe record that build as the one running it.
CI_PREFIXES = ("GO_", "TF_VAR_")
CI_VARIABLES = ("BUILD_NUMBER", "BUILD_URL", "BUILD_USER_ID", "JOB_NAME", "JENKINS_URL", "GIT_COMMIT", "NODE_NAME",
                "ENVPIPE_REPO", "ENVPIPE_DEMO_DIR")


def demo_environ() -> Dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(CI_PREFIXES) and k not in CI_VARIABLES}
    environ.update(CHECKPOINT_DISABLE="1", TF_IN_AUTOMATION="1")
    configured = environ.get("TF_CLI_CONFIG_FILE")
    if not (configured and Path(configured).is_file()) and not (Path.home() / ".terraformrc").exists():
        # Terraform warns about a missing ~/.terraformrc on every run; an empty one is quiet.
        (WORK / "terraformrc").write_text("")
        environ["TF_CLI_CONFIG_FILE"] = str(WORK / "terraformrc")
    return environ


# envpipe run's line per stage: "<env>  <stage>  <detail>  <seconds>s", a waiting or failed stage.
STAGE_LINE = re.compile(r"^[a-z0-9-]*\s+(publish|promote|apply|test|bluegreen|waiting)\s{2}|\sFAILED after ")
LOG = WORK / "demo.log"
VERBOSE = False


def envpipe(args: Sequence[str], environ: Dict[str, str]) -> None:
    """Run envpipe: its results (stdout) here, its log and Terraform's output (stderr) into
    the log file, and here too with -v; envpipe run's stage lines and errors always."""
    command = [sys.executable, "-m", "envpipe_agent", "--config", str(EXAMPLES / "envpipe.yml"),
               "--repo", str(WORK / "repository"), *args]
    shown = f"$ envpipe {' '.join(args)}"
    print(f"\n{shown}", flush=True)
    with LOG.open("a", encoding="utf-8") as log:
        log.write(f"\n{shown}\n")
        log.flush()
        process = subprocess.Popen(command, env=environ, cwd=EXAMPLES, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace")
        tail: List[str] = []

        def pump_stderr() -> None:
            assert process.stderr is not None
            for line in process.stderr:
                log.write(line)
                tail[:] = (tail + [line])[-15:]
                if line.startswith("envpipe: ") or (VERBOSE and not STAGE_LINE.search(line)):
                    sys.stderr.write(line)
                    sys.stderr.flush()
                elif STAGE_LINE.search(line):
                    sys.stdout.write(line)  # in order with the results
                    sys.stdout.flush()

        reader = threading.Thread(target=pump_stderr)
        reader.start()
        assert process.stdout is not None
        results = process.stdout.read()  # printed once the stage lines are out, in order after them
        reader.join()
        code = process.wait()
        log.write(results)
        sys.stdout.write(results)
        sys.stdout.flush()
    if code:
        if not VERBOSE:
            sys.stderr.write("".join(tail))
        raise SystemExit(f"demo: 'envpipe {' '.join(args)}' exited {code}; the full output is in {LOG}")


def expire(name: str) -> None:
    """Move an on-demand environment's expiry into the past, as if its time were up
    (the demo's own folder repository; nobody edits registrations otherwise)."""
    path = WORK / "repository" / ".envpipe" / "on-demand" / f"{name}.json"
    registration = json.loads(path.read_text())
    registration["expires"] = "2000-01-01T00:00:00Z"
    path.write_text(json.dumps(registration, indent=1))
    print(f"\ndemo: ... time passes: {name} has expired", flush=True)


def on_demand(environ: Dict[str, str]) -> None:
    """A tester's environment from staging's version, reaped once expired; a developer's
    sandbox from the working copy (examples/infra), nothing published."""
    envpipe(["env", "create", "review-42", "--from", "staging", "--ttl", "1h"], environ)
    envpipe(["env", "list"], environ)
    expire("review-42")
    envpipe(["env", "reap"], environ)
    envpipe(["sandbox", "up", "--test"], environ)
    envpipe(["status", "--html", str(WORK / "status.html")], environ)  # the sandbox has a section of its own
    envpipe(["sandbox", "destroy"], environ)


def main(argv: Optional[Sequence[str]] = None) -> int:
    global VERBOSE
    VERBOSE = "-v" in (sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    # Only what the demo itself made is removed, whatever WORK points at.
    shutil.rmtree(WORK / "repository", ignore_errors=True)
    shutil.rmtree(WORK / "reports", ignore_errors=True)
    (WORK / "status.html").unlink(missing_ok=True)
    LOG.unlink(missing_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    environ = demo_environ()
    print(f"demo: repository {WORK / 'repository'} (a folder; s3://bucket/prefix works the same)")
    print(f"demo: full output of envpipe and Terraform in {LOG}" + ("" if VERBOSE else " (-v prints it here too)"))
    envpipe(["run", "--version", VERSION, "--approve", "production", "--junit-dir", str(WORK / "reports")], environ)
    envpipe(["status", "--html", str(WORK / "status.html")], environ)
    # The next version: production is released blue-green, so it goes into the idle
    # instance (green), is tested there, the router swaps traffic to it, and blue goes.
    print("\ndemo: the next version, released to production blue-green", flush=True)
    envpipe(["run", "--version", NEXT_VERSION, "--approve", "production", "--junit-dir", str(WORK / "reports")],
            environ)
    envpipe(["status", "--html", str(WORK / "status.html")], environ)
    envpipe(["history", "production", "--limit", "5"], environ)
    on_demand(environ)
    print(f"\ndemo: done in {time.monotonic() - started:.1f}s")
    print(f"demo: status page   {WORK / 'status.html'}")
    print(f"demo: JUnit reports {WORK / 'reports'}")
    print(f"demo: full log      {LOG}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
