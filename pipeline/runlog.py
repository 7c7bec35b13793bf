"""The log of one invocation: commits, warnings and the full traceback of an error.

Until the run directory is known to be ours, lines go to a temporary file; once it is open (under its
lock), the log moves to RUN/logs/<command>-<time>-<pid>.log, so a foreign or unusable --out is never
written to. The console gets one line per error; this file gets the rest, including what libraries
print on the process's stderr (Ray's C++ core worker logs there, and Ray Data warns there): with
`capture_stderr()`, file descriptor 2 points at this file and `console` is the terminal's stderr.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import TextIO

LOGGER_NAME = "stylecaps"
log = logging.getLogger(LOGGER_NAME)
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _QuietFileHandler(logging.FileHandler):
    def handleError(self, record: logging.LogRecord) -> None:
        """A log line that cannot be written (a full disk) must not print logging's noise on the console."""


class InvocationLog:
    def __init__(self, command: str) -> None:
        self.name = f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        handle, temporary = tempfile.mkstemp(prefix="stylecaps-", suffix=".log")
        os.close(handle)
        self.path = Path(temporary)
        self._handler: logging.Handler | None = None
        self._attach()
        log.setLevel(logging.INFO)
        self.console: TextIO = sys.stderr
        self._console_fd: int | None = None

    def capture_stderr(self) -> None:
        """Send what anything in this process writes to stderr into the log; keep `console` for us."""
        if sys.stderr is not sys.__stderr__:  # stderr is already redirected (a test runner): leave it
            return
        sys.stderr.flush()
        self._console_fd = os.dup(2)
        self.console = os.fdopen(os.dup(self._console_fd), "w", buffering=1)
        self._point_stderr_at(self.path)

    @staticmethod
    def _point_stderr_at(path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, 2)
        os.close(fd)

    def _attach(self) -> None:
        handler = _QuietFileHandler(self.path, encoding="utf-8", delay=True)
        handler.setFormatter(logging.Formatter(_FORMAT))
        log.addHandler(handler)
        self._handler = handler

    def _detach(self) -> None:
        if self._handler is not None:
            log.removeHandler(self._handler)
            self._handler.close()
            self._handler = None

    def move_into(self, run_root: Path) -> None:
        """Continue the log inside the run directory (RUN/logs/), keeping what was written so far."""
        target = run_root / "logs" / self.name
        try:
            target.parent.mkdir(exist_ok=True)
            self._detach()
            if self.path.exists():
                shutil.move(self.path, target)
            self.path = target
            if self._console_fd is not None:
                self._point_stderr_at(target)
        except OSError:
            log.warning("the log stays at %s: the run directory's logs/ is not writable", self.path)
        self._attach()

    def close(self) -> None:
        self._detach()
        if self._console_fd is not None:
            sys.stderr.flush()
            os.dup2(self._console_fd, 2)
            os.close(self._console_fd)
            self._console_fd = None
            self.console.close()
            self.console = sys.stderr
        in_run = self.path.parent.name == "logs"
        if not in_run and self.path.exists() and self.path.stat().st_size == 0:
            self.path.unlink()  # nothing worth keeping was logged before a run directory was open

    def exception(self, message: str) -> str:
        """Write the current exception's traceback; return where it went (or why it could not)."""
        if self._handler is not None:
            self._handler.flush()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        text = f"{stamp} ERROR {LOGGER_NAME}: {message}\n{traceback.format_exc()}"
        failure = ""
        for path in (self.path, Path(tempfile.gettempdir()) / self.name):  # the run's disk may be full
            try:
                with open(path, "a", encoding="utf-8") as handle:
                    handle.write(text)
                return str(path)
            except OSError as error:
                failure = error.strerror
        return f"nowhere ({failure})"
