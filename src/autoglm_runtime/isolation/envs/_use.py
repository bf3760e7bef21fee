"""Marking an environment as used: its last use (a modification time) and a hold while a model runs from it.

Read by :mod:`autoglm_runtime.isolation.envs.gc`, which never removes a held environment; written by the
builder (every ``ensure``) and the loader (a hold per loaded model).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

__all__ = ["METADATA_NAME", "EnvironmentHold", "hold_environment", "touch"]

#: Written last into a finished environment; its modification time is the environment's last use.
METADATA_NAME = "autoglm-env.json"


def touch(environment: Path) -> None:
    """Record a use of ``environment`` now (best effort: a read-only root only loses the record)."""
    with contextlib.suppress(OSError):
        os.utime(environment / METADATA_NAME)


class EnvironmentHold:
    """A shared lock on one environment: :func:`collect_garbage` leaves it alone until :meth:`release`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        """True until :meth:`release`."""
        return self._fd is not None

    def release(self) -> None:
        """Give the environment up (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the flock

    def __enter__(self) -> EnvironmentHold:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<EnvironmentHold {self.path} held={self.held}>"


def hold_environment(environment: Path) -> EnvironmentHold | None:
    """Hold the finished environment at ``environment`` (``<root>/<key>``) in use, and record the use.

    Returns None when it is not there (any more): a collection removed it after it was looked up, and the
    caller builds it again. Waits while a collection holds it (a rename, milliseconds).
    """
    metadata = environment / METADATA_NAME
    try:
        fd = os.open(metadata, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        # A collection may have moved the directory aside between our open and our lock.
        still_there = os.stat(metadata).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        still_there = False
    except BaseException:
        os.close(fd)
        raise
    if not still_there:
        os.close(fd)
        return None
    touch(environment)
    return EnvironmentHold(environment, fd)
