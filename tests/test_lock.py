"""The run directory's writer lock: one holder, stale locks taken over, waiting, fencing."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.lock import LOCK_NAME, LockLostError, RunLock, RunLockedError, lock_holder
from tests.conftest import REPO

PYTHON = sys.executable


def hold_in_subprocess(root: Path, seconds: float, *extra: str) -> subprocess.Popen[str]:
    """Another process that takes the lock, prints 'held', and keeps it for `seconds`."""
    code = (
        "import sys, time; from pipeline.lock import RunLock\n"
        f"lock = RunLock({str(root)!r}, 'holder-test').acquire()\n"
        "print('held', flush=True)\n"
        f"time.sleep({seconds})\n"
        "lock.release()\n"
    )
    proc = subprocess.Popen([PYTHON, "-c", code, *extra], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def write_record(root: Path, **changes: object) -> None:
    """A lock record as another process would have left it."""
    record = {
        "token": "someone-else",
        "host": socket.gethostname(),
        "boot_id": RunLock(root).owner.boot_id,
        "pid_ns": RunLock(root).owner.pid_ns,
        "pid": 1,
        "pid_start": 0,
        "command": "stylecaps annotate (test)",
        "since": time.time(),
        **changes,
    }
    (root / LOCK_NAME).write_text(json.dumps(record))


def dead_pid() -> int:
    proc = subprocess.run([PYTHON, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_a_second_writer_is_refused_at_once_with_the_holders_pid_and_host(tmp_path):
    holder = hold_in_subprocess(tmp_path, 30)
    try:
        started = time.monotonic()
        with pytest.raises(RunLockedError) as refused:
            RunLock(tmp_path).acquire()
        assert time.monotonic() - started < 1.0
        message = str(refused.value)
        assert f"pid {holder.pid} on {socket.gethostname()}" in message
        assert "holder-test" in message and "--wait" in message
    finally:
        holder.kill()
        holder.wait()


def test_release_removes_the_lock_and_the_next_writer_takes_it(tmp_path):
    lock = RunLock(tmp_path).acquire()
    record = json.loads((tmp_path / LOCK_NAME).read_text())
    assert record["pid"] == os.getpid() and record["token"] == lock.owner.token
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()
    with RunLock(tmp_path):
        assert lock_holder(tmp_path)[1] is True
    assert lock_holder(tmp_path) == (None, False)


def test_a_killed_holders_lock_does_not_block_the_next_run(tmp_path):
    holder = hold_in_subprocess(tmp_path, 60)
    holder.kill()  # SIGKILL: no chance to release
    holder.wait()
    assert (tmp_path / LOCK_NAME).exists()
    started = time.monotonic()
    with RunLock(tmp_path) as lock:
        assert json.loads((tmp_path / LOCK_NAME).read_text())["token"] == lock.owner.token
    assert time.monotonic() - started < 1.0  # same host: a dead pid frees the lock at once


def test_a_reused_pid_with_another_start_time_is_not_the_holder(tmp_path):
    write_record(tmp_path, pid=os.getpid(), pid_start=1)  # our pid, but not our start time
    with RunLock(tmp_path) as lock:
        assert json.loads((tmp_path / LOCK_NAME).read_text())["token"] == lock.owner.token


def test_another_hosts_lock_holds_while_its_heartbeat_is_fresh_and_is_taken_when_stale(tmp_path):
    write_record(tmp_path, host="node-17", pid=dead_pid())
    with pytest.raises(RunLockedError, match="on node-17"):
        RunLock(tmp_path, stale_after_s=60).acquire()
    old = time.time() - 120
    os.utime(tmp_path / LOCK_NAME, (old, old))  # no heartbeat for two minutes
    with RunLock(tmp_path, stale_after_s=60) as lock:
        assert json.loads((tmp_path / LOCK_NAME).read_text())["token"] == lock.owner.token


def test_a_lock_record_that_is_not_valid_json_and_old_is_broken(tmp_path):
    (tmp_path / LOCK_NAME).write_text("{half a rec")
    with pytest.raises(RunLockedError):
        RunLock(tmp_path).acquire()  # fresh: may be a writer filling it right now
    old = time.time() - 600
    os.utime(tmp_path / LOCK_NAME, (old, old))
    with RunLock(tmp_path):
        pass


def test_the_holder_refreshes_its_heartbeat(tmp_path):
    with RunLock(tmp_path, heartbeat_s=0.1, stale_after_s=1) as lock:
        old = time.time() - 100
        os.utime(lock.path, (old, old))
        time.sleep(0.5)
        assert time.time() - lock.path.stat().st_mtime < 5


def test_wait_starts_when_the_holder_finishes(tmp_path):
    holder = hold_in_subprocess(tmp_path, 2)
    waited_for = []
    started = time.monotonic()
    lock = RunLock(tmp_path).acquire(wait=True, on_wait=waited_for.append)
    try:
        assert time.monotonic() - started > 0.5
        assert [owner.pid for owner in waited_for] == [holder.pid]
        assert holder.wait(timeout=10) == 0
    finally:
        lock.release()


def test_a_holder_whose_lock_was_taken_over_may_not_commit(tmp_path):
    lock = RunLock(tmp_path, heartbeat_s=0.1, stale_after_s=1).acquire()
    lock.check()
    write_record(tmp_path, host="node-3", token="the-new-owner")  # taken over while we were frozen
    with pytest.raises(LockLostError, match="taken over by pid 1 on node-3"):
        lock.check()
    time.sleep(0.3)
    assert json.loads((tmp_path / LOCK_NAME).read_text())["token"] == "the-new-owner"
    lock.release()  # never removes the new owner's lock
    assert (tmp_path / LOCK_NAME).exists()


def test_processes_racing_for_a_stale_lock_end_with_exactly_one_holder(tmp_path):
    write_record(tmp_path, pid=dead_pid())
    code = (
        "import sys, time\n"
        "from pipeline.lock import RunLock, RunLockedError\n"
        "try:\n"
        f"    lock = RunLock({str(tmp_path)!r}).acquire()\n"
        "except RunLockedError:\n"
        "    print('refused'); sys.exit(0)\n"
        "print('held'); time.sleep(3); lock.release()\n"
    )
    racers = [
        subprocess.Popen([PYTHON, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True) for _ in range(6)
    ]
    outcomes = sorted(racer.communicate(timeout=60)[0].strip() for racer in racers)
    assert outcomes == ["held"] + ["refused"] * 5
