"""Child processes (Terraform, pytest) that stop cleanly when envpipe is interrupted.

A CI server aborting a build sends SIGTERM (``main`` raises it as ``Terminated``, a
``KeyboardInterrupt``); a person presses Ctrl-C. Either way envpipe must not exit
and release the environment lock while its child is still changing things: the
child is asked to stop (SIGINT: Terraform's graceful stop, which saves its state and
releases its own state lock), waited for up to a bound while its output is still
read, and only then does the interrupt go on to release locks and write records.

Children start in a session of their own, so a terminal's Ctrl-C reaches envpipe
alone and is forwarded once: Terraform reads a second interrupt as "stop at once,
whatever is lost", which is what a person pressing Ctrl-C twice asks for, but not
what one press should do.

Under Jenkins they also start without its process cookies. Jenkins finds what to kill
when a build is aborted by an environment variable its processes inherit
(``JENKINS_NODE_COOKIE`` in Pipeline, ``JENKINS_SERVER_COOKIE`` for a durable ``sh``
step, ``BUILD_ID`` in freestyle jobs) and kills every process carrying it at once: a
child carrying it would be killed beside envpipe instead of being stopped by it, and
Terraform would get a second interrupt before saving its state.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from typing import IO, Any, Callable, Dict, Mapping, Optional, Sequence

log = logging.getLogger(__name__)

# How long an interrupted child gets to finish what it is doing and save its state.
# Terraform waits for the operations in flight (a database can take minutes); a CI
# server that will not wait this long kills the whole tree itself.
STOP_GRACE_SECONDS = 300.0
_POSIX = os.name == "posix"
_stopping = 0  # how many children are being stopped right now


def stopping() -> bool:
    """Whether a child is being stopped: another interrupt now is meant for it."""
    return _stopping > 0


# Jenkins' process cookies (see above). BUILD_ID only counts under Jenkins: elsewhere it
# may be a child's own business.
JENKINS_COOKIES = ("JENKINS_NODE_COOKIE", "JENKINS_SERVER_COOKIE")
_JENKINS_BUILD_COOKIE = "BUILD_ID"


def without_jenkins_cookies(environ: Mapping[str, str]) -> Dict[str, str]:
    """``environ`` without the variables by which Jenkins finds a build's processes to kill."""
    under_jenkins = any(name in environ for name in (*JENKINS_COOKIES, "JENKINS_URL", "JENKINS_HOME"))
    dropped = {*JENKINS_COOKIES, _JENKINS_BUILD_COOKIE} if under_jenkins else set(JENKINS_COOKIES)
    return {name: value for name, value in environ.items() if name not in dropped}


def start(argv: Sequence[str], env: Mapping[str, str], **popen: Any) -> subprocess.Popen:
    """``subprocess.Popen(argv, env=env, **popen)`` in a new session (process group) of its
    own, without Jenkins' process cookies: an abort reaches envpipe, which stops the child."""
    if _POSIX:
        popen["start_new_session"] = True
    return subprocess.Popen(list(argv), env=without_jenkins_cookies(env), **popen)


def pump(stream: IO[str], handle: Callable[[str], None]) -> threading.Thread:
    """A daemon thread calling ``handle`` with each line of ``stream`` until it closes.

    The reading goes on while an interrupted child is being stopped: a child blocked
    on a full pipe could never finish saving its state.
    """
    def read() -> None:
        for line in stream:
            handle(line)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def wait(process: subprocess.Popen, name: str, grace: float = STOP_GRACE_SECONDS) -> int:
    """``process``'s exit code. Interrupted, stop it first (see ``stop``), then let the
    interrupt through; the interrupt carries ``child_stopped`` for the stage's record."""
    try:
        return process.wait()
    except KeyboardInterrupt as interrupt:
        interrupt.child_stopped = stop(process, name, grace)  # type: ignore[attr-defined]
        raise


def stop(process: subprocess.Popen, name: str, grace: float = STOP_GRACE_SECONDS) -> str:
    """Ask ``process`` to stop and wait up to ``grace`` seconds; past that, kill its group.

    Another interrupt while waiting is forwarded too (a person insisting). Returns
    what happened, in words, for the record.
    """
    global _stopping
    if process.poll() is not None:
        return f"{name} had already exited ({process.returncode})"
    _stopping += 1
    try:
        return _stop(process, name, grace)
    finally:
        _stopping -= 1


def _stop(process: subprocess.Popen, name: str, grace: float) -> str:
    log.warning("interrupted: asking %s to stop and save its state (waiting up to %gs; interrupt again "
                "to stop it at once, which may lose state)", name, grace)
    _interrupt(process)
    deadline = time.monotonic() + grace
    forwarded = 1
    while True:
        try:
            code = process.wait(timeout=max(0.0, deadline - time.monotonic()))
            return f"{name} stopped (exit code {code}) after {forwarded} interrupt(s)"
        except subprocess.TimeoutExpired:
            log.error("%s did not stop within %gs: killing it; its state may be out of date and its "
                      "state lock left behind", name, grace)
            _kill(process)
            return f"{name} was killed after {grace:g}s; its state may be out of date"
        except KeyboardInterrupt:
            forwarded += 1
            log.warning("interrupted again: telling %s to stop at once", name)
            _interrupt(process)


def _interrupt(process: subprocess.Popen) -> None:
    try:
        if _POSIX:
            process.send_signal(signal.SIGINT)
        else:  # Windows has no SIGINT for another process group
            process.terminate()
    except ProcessLookupError:
        pass


def _kill(process: subprocess.Popen) -> None:
    try:
        if _POSIX:
            # The whole group: Terraform's provider plugins go with it.
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def join(threads: Sequence[threading.Thread], timeout: Optional[float] = None) -> None:
    """Wait for reader threads; with ``timeout``, at most that long in all (after an
    interrupt, a grandchild may hold the pipe open long after the child is gone)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for thread in threads:
        thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
