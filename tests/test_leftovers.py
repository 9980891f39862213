"""What killed runs leave behind is cleaned up by later ones: temporary files of the
folder backend, and private work folders (which hold plans and state in clear text)."""
from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from envpipe_agent.repository.local import STALE_TEMP_SECONDS, TEMP_MARK, LocalRepository
from envpipe_agent.workdir import STALE_WORK_SECONDS, sweep_stale_work_folders, work_folder


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_write_removes_stale_temporary_files_of_its_folder_and_keeps_young_ones(tmp_path):
    repository = LocalRepository(tmp_path)
    repository.write("1.0.1/main.tf", b"a")
    stale = tmp_path / "1.0.1" / f"{TEMP_MARK}dead-main.tf"
    young = tmp_path / "1.0.1" / f"{TEMP_MARK}live-vars.tf"
    elsewhere = tmp_path / "staging" / f"{TEMP_MARK}dead-main.tf"
    for path in (stale, young, elsewhere):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    age(stale, STALE_TEMP_SECONDS + 60)
    age(elsewhere, STALE_TEMP_SECONDS + 60)

    LocalRepository(tmp_path).write("1.0.1/other.tf", b"b")  # a new run writes into the folder
    assert not stale.exists() and young.exists() and elsewhere.exists()
    assert [info.key for info in repository.list("1.0.1/")] == ["1.0.1/main.tf", "1.0.1/other.tf"]


def killed_run_folder(parent: Path, name: str, seconds_ago: float) -> Path:
    folder = parent / name
    folder.mkdir(mode=0o700)
    (folder / ".terraform").mkdir()
    (folder / "terraform.tfvars.json").write_text('{"pw": "secret"}')
    lock = parent / f"{name}.lock"
    lock.write_bytes(b"")
    age(lock, seconds_ago)
    return folder


def test_work_folders_of_killed_runs_older_than_a_day_are_removed(tmp_path):
    dead = killed_run_folder(tmp_path, "envpipe-test-dead1", STALE_WORK_SECONDS + 60)
    recent = killed_run_folder(tmp_path, "envpipe-test-recent", 60)
    alive = killed_run_folder(tmp_path, "envpipe-test-alive", STALE_WORK_SECONDS + 60)
    other = tmp_path / "not-envpipe"
    other.mkdir()
    shared = tmp_path / "envpipe-shared"  # not private: not a work folder envpipe made
    shared.mkdir(mode=0o755)
    (tmp_path / "envpipe-shared.lock").touch()
    age(tmp_path / "envpipe-shared.lock", STALE_WORK_SECONDS + 60)
    with open(tmp_path / "envpipe-test-alive.lock", "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a run still going after a day
        assert sweep_stale_work_folders(tmp_path) == 1
    assert not dead.exists() and not (tmp_path / "envpipe-test-dead1.lock").exists()
    assert recent.exists() and alive.exists() and other.exists() and shared.exists()


def test_a_work_folder_is_private_removed_afterwards_and_sweeps_first(tmp_path):
    dead = killed_run_folder(tmp_path, "envpipe-staging-dead", STALE_WORK_SECONDS + 60)
    with work_folder("staging-", {"TMPDIR": str(tmp_path)}) as path:
        assert path.parent == tmp_path and (path.stat().st_mode & 0o777) == 0o700
        assert Path(f"{path}.lock").exists()
        assert not dead.exists()
    assert not path.exists() and not Path(f"{path}.lock").exists()
    with work_folder("staging-", {"TMPDIR": str(tmp_path)}, keep=True) as kept:
        pass
    assert kept.exists() and not Path(f"{kept}.lock").exists()  # kept on purpose: never swept
