"""One writer per run directory: a lock file with its owner, a heartbeat, and a fencing check.

    RUN/writer.lock   {"token", "host", "boot_id", "pid_ns", "pid", "pid_start", "command", "since"}

What it relies on, so that it holds on a local disk and on the shared filesystems clusters use (NFS v3/v4,
Lustre, GPFS, CephFS):
- Taking the lock is atomic: the owner record is written to a private file and hard-linked to
  `writer.lock` (link fails if the name exists, on every POSIX filesystem including NFS); where hard
  links are not supported it falls back to O_CREAT|O_EXCL. flock/fcntl locks are not used: on some
  cluster filesystems they are local to one client or refused.
- A holder is alive if, on the same host and pid namespace, its pid still runs with the same start
  time (a killed process frees the lock at once), and otherwise if its heartbeat is fresh: the holder
  refreshes the lock file's mtime every `heartbeat_s`, and another host calls it stale after
  `stale_after_s` without one. Ages are measured against the filesystem's own clock (the mtime of a probe
  file written next to the lock), so clock skew between hosts does not matter.
- Breaking a stale lock is serialised by a second lock (`writer.lock.break`), so two processes cannot both
  take over the same stale lock.
- Fencing: before every commit the holder checks that `writer.lock` still holds its token (a process
  frozen past `stale_after_s` on another host may have lost it); if not, it stops without committing.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import StylecapsError

LOCK_NAME = "writer.lock"
_BREAK_SUFFIX = ".break"
_BREAK_STALE_S = 30.0  # breaking takes milliseconds; a break lock this old was left by a dead process
_WAIT_POLL_S = 1.0
_UNREADABLE_GRACE_S = 1.0  # a record is written in microseconds; longer means a writer that died doing it


class RunLockedError(StylecapsError):
    """Another live process holds the run directory."""


class LockLostError(StylecapsError):
    """This process's lock was taken over (it was considered stale); it must not commit."""


@dataclass(frozen=True)
class LockOwner:
    token: str
    host: str
    boot_id: str
    pid_ns: int
    pid: int
    pid_start: int
    command: str
    since: float

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"pid {self.pid} on {self.host} since {started} ({self.command})"


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


def _pid_start(pid: int) -> int:
    """The process's start time in clock ticks since boot (0 if it does not exist)."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return 0
    # The command name (field 2) may hold spaces; fields after its closing parenthesis are plain.
    return int(stat.rsplit(")", 1)[1].split()[19])


def _pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def current_owner(command: str) -> LockOwner:
    return LockOwner(
        token=uuid.uuid4().hex,
        host=socket.gethostname(),
        boot_id=(_read("/proc/sys/kernel/random/boot_id") or "").strip(),
        pid_ns=_pid_namespace(),
        pid=os.getpid(),
        pid_start=_pid_start(os.getpid()),
        command=command,
        since=time.time(),
    )


class RunLock:
    """The writer lock of one run directory. Use as a context manager, or acquire()/release()."""

    def __init__(
        self,
        root: str | Path,
        command: str = "stylecaps",
        heartbeat_s: float = 10.0,
        stale_after_s: float = 60.0,
    ) -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_NAME
        self.owner = current_owner(command)
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self._held = False
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # -- taking and giving back ----------------------------------------------------------------------
    def acquire(self, wait: bool = False, on_wait: Any = None) -> RunLock:
        """Take the lock; if a live process holds it, raise RunLockedError or (wait=True) wait for it."""
        announced = False
        unreadable_since = None
        while True:
            if self._try_create():
                self._held = True
                self._start_heartbeat()
                return self
            holder, alive = self._holder()
            if not alive:
                self._break(holder)
                continue
            if holder is None:  # a record being written (or removed) right now: look again shortly
                unreadable_since = unreadable_since or time.monotonic()
                if wait or time.monotonic() - unreadable_since < _UNREADABLE_GRACE_S:
                    time.sleep(0.05)
                    continue
                raise RunLockedError(
                    f"{self.root} is in use: its {LOCK_NAME} is fresh but unreadable; wait for it to "
                    "finish, or pass --wait to start when it does"
                )
            if not wait:
                raise RunLockedError(
                    f"{self.root} is in use by {holder.describe()}; wait for it to finish, or pass "
                    "--wait to start when it does"
                )
            if not announced and on_wait is not None:
                on_wait(holder)
                announced = True
            time.sleep(_WAIT_POLL_S)

    def release(self) -> None:
        if not self._held:
            return
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        with contextlib.suppress(LockLostError, FileNotFoundError):
            self.check()
            os.unlink(self.path)
        self._held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def check(self) -> None:
        """Fencing: raise LockLostError unless writer.lock still holds this process's token."""
        record = _parse(_read(str(self.path)))
        if record is None or record.token != self.owner.token:
            taker = f" by {record.describe()}" if record is not None else ""
            raise LockLostError(
                f"the lock on {self.root} was taken over{taker} after this process missed its heartbeats; "
                "nothing more is committed by this process"
            )

    # -- internals ------------------------------------------------------------------------------------
    def _try_create(self) -> bool:
        blob = json.dumps(asdict(self.owner))
        private = self.root / f".{LOCK_NAME}.{self.owner.token}"
        private.write_text(blob)
        try:
            os.link(private, self.path)
            return True
        except FileExistsError:
            return False
        except OSError as error:
            # NFS may report a failed link that did happen (a lost reply): the link count tells.
            if error.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                return self._try_create_exclusive(blob)
            return private.stat().st_nlink == 2
        finally:
            private.unlink()

    def _try_create_exclusive(self, blob: str) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            handle.write(blob)
        return True

    def _holder(self) -> tuple[LockOwner | None, bool]:
        """The holder's record and whether it is alive; (None, False) if the record is unreadable and
        old (a writer that died between creating and filling it), (None, True) if it is being written."""
        text = _read(str(self.path))
        if text is None:
            return None, True  # released between our attempt and this read: try again
        record = _parse(text)
        if record is None:
            return None, self._age(self.path) < self.stale_after_s
        if record.host == self.owner.host and record.pid_ns == self.owner.pid_ns and record.pid_ns:
            if record.boot_id and record.boot_id != self.owner.boot_id:
                return record, False  # the host rebooted since
            started = _pid_start(record.pid)
            return record, started != 0 and started == record.pid_start
        return record, self._age(self.path) < self.stale_after_s

    def _age(self, path: Path) -> float:
        """Seconds since `path` was last modified, on the filesystem's clock (0 if it is gone)."""
        probe = self.root / f".clock.{self.owner.token}"
        try:
            probe.write_bytes(b"")
            now = probe.stat().st_mtime
            probe.unlink()
        except OSError:  # a read-only view of the run (verify-run): the local clock has to do
            now = time.time()
        try:
            return now - path.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def _break(self, stale: LockOwner | None) -> None:
        breaker = self.root / (LOCK_NAME + _BREAK_SUFFIX)
        try:
            fd = os.open(breaker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if self._age(breaker) > _BREAK_STALE_S:
                with contextlib.suppress(FileNotFoundError):
                    breaker.unlink()
            time.sleep(0.05)
            return
        os.close(fd)
        try:
            # Re-read under the break lock: remove only the very record judged stale.
            current = _parse(_read(str(self.path)))
            same = (current is None and stale is None) or (
                current is not None and stale is not None and current.token == stale.token
            )
            if same:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
        finally:
            os.unlink(breaker)

    def _start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(self.heartbeat_s):
                try:
                    self.check()  # never refresh a lock that another process has taken over
                    os.utime(self.path)
                except (LockLostError, OSError):
                    return

        self._stop.clear()
        self._heartbeat = threading.Thread(target=beat, name="run-lock-heartbeat", daemon=True)
        self._heartbeat.start()


def _parse(text: str | None) -> LockOwner | None:
    if not text:
        return None
    try:
        return LockOwner(**json.loads(text))
    except (ValueError, TypeError):
        return None


def lock_holder(root: str | Path) -> tuple[LockOwner | None, bool]:
    """Who holds a run directory's lock and whether that process is alive; (None, False) if no one."""
    if not (Path(root) / LOCK_NAME).exists():
        return None, False
    return RunLock(root)._holder()


def command_line() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:200]
