"""`make demo`: the example stack along the whole path, with real Terraform.

Runs ``envpipe run`` on examples/ against a throw-away folder repository, approving
production explicitly, then prints ``envpipe status`` and writes the HTML status
page. Everything lives in build/demo/ (the repository, the JUnit reports, the page);
each run removes what the previous one left there first, so it starts from nothing
and leaves nothing elsewhere.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Sequence

EXAMPLES = Path(__file__).resolve().parent
# ENVPIPE_DEMO_DIR moves it elsewhere (the demo's own test does).
WORK = Path(os.environ.get("ENVPIPE_DEMO_DIR") or EXAMPLES.parent / "build" / "demo").resolve()
VERSION = "1.0.1"
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


def envpipe(args: Sequence[str], environ: Dict[str, str]) -> None:
    command = [sys.executable, "-m", "envpipe_agent", "--config", str(EXAMPLES / "envpipe.yml"),
               "--repo", str(WORK / "repository"), *args]
    print(f"\n$ envpipe {' '.join(args)}", flush=True)
    code = subprocess.call(command, env=environ, cwd=EXAMPLES)
    if code:
        raise SystemExit(f"demo: 'envpipe {' '.join(args)}' exited {code}; see its output above")


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


def main() -> int:
    started = time.monotonic()
    # Only what the demo itself made is removed, whatever WORK points at.
    shutil.rmtree(WORK / "repository", ignore_errors=True)
    shutil.rmtree(WORK / "reports", ignore_errors=True)
    (WORK / "status.html").unlink(missing_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    environ = demo_environ()
    print(f"demo: repository {WORK / 'repository'} (a folder; s3://bucket/prefix works the same)")
    envpipe(["run", "--version", VERSION, "--approve", "production", "--junit-dir", str(WORK / "reports")], environ)
    envpipe(["status", "--html", str(WORK / "status.html")], environ)
    envpipe(["history", "production", "--limit", "5"], environ)
    on_demand(environ)
    print(f"\ndemo: done in {time.monotonic() - started:.1f}s")
    print(f"demo: status page   {WORK / 'status.html'}")
    print(f"demo: JUnit reports {WORK / 'reports'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
