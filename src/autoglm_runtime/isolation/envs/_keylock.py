"""One build of an environment key at a time, across processes: an exclusive ``fcntl`` lock on
``<root>/.<key>.lock``. POSIX only.

The holder unlinks the file before it unlocks, so a waiter that got a lock on a file no longer at that path (it
opened it before the unlink) tries again on the new one: a lock on an unlinked file protects nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from autoglm_runtime.errors import EnvironmentBuildError

__all__ = ["key_lock"]


@contextlib.contextmanager
def key_lock(root: Path, key: str, timeout: float, waiting: Callable[[], None]) -> Iterator[None]:
    """Hold the build lock of ``key`` under ``root``; ``waiting()`` is called once should another process hold it.

    Raises :class:`EnvironmentBuildError` when the lock file cannot be opened, or after ``timeout`` s of waiting.
    """
    path = root / f".{key}.lock"
    deadline = time.monotonic() + timeout
    told = False
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise EnvironmentBuildError(
                f"the lock file {path} of environment {key} cannot be opened: {exc.strerror or exc}; check that "
                f"{root} is a writable directory, then load the model again"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if not told:
                waiting()
                told = True
            if time.monotonic() > deadline:
                raise EnvironmentBuildError(
                    f"gave up waiting {timeout:g} s for the lock {path}: another build of "
                    f"environment {key} still runs; remove the lock file if no build runs"
                ) from None
            time.sleep(0.02)
            continue
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)
