"""Errors a user can cause, each with the exit code the CLI gives it.

Usage errors (a config, an argument, a path the user gave) exit 2; runtime errors (a held lock, a full
disk, a stage that dies) exit 1. The CLI prints the message as one line; tracebacks go to the run's log.
"""

from __future__ import annotations

import errno


class StylecapsError(Exception):
    """A runtime failure the user can act on; the message says what to do."""

    exit_code = 1


class UsageError(StylecapsError, ValueError):
    """The command, its config or its paths are wrong."""

    exit_code = 2


_OS_ADVICE = {
    errno.ENOSPC: "no space left on the device: free space or use another --out",
    errno.EDQUOT: "disk quota exceeded: free space or use another --out",
    errno.EROFS: "the file system is read-only: use another --out",
    errno.EACCES: "permission denied: check the folder's owner and mode, or use another --out",
    errno.EPERM: "operation not permitted: check the folder's owner and mode, or use another --out",
    errno.EIO: "input/output error: the disk or network file system failed",
}


def describe_os_error(error: OSError) -> str:
    """One line for an OSError: what failed, on which path, and what to do."""
    where = f" ({error.filename})" if error.filename else ""
    advice = _OS_ADVICE.get(error.errno or 0, error.strerror or str(error))
    return f"{advice}{where}"
