"""What the environment builder needs around its installer: running it safely, hiding credentials, paths.

:func:`run_streaming` runs one installer command in a session of its own and hands every output line to a
callback. Whatever happens (the command ends, the deadline passes, the callback raises, Ctrl-C), the
command and every process it started are gone when the call returns or raises.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import shutil
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from autoglm_runtime.errors import UsageError

__all__ = ["Scrubber", "remove_path", "run_streaming", "usable_root"]

_USERINFO = re.compile(r"://[^/\s@]+@")


class Scrubber:
    """Removes the credentials of ``index_url`` from installer output (installers usually hide them, but
    nothing a user sees or a log keeps may depend on that)."""

    def __init__(self, index_url: str | None) -> None:
        self.secrets: tuple[str, ...] = ()
        if index_url is None:
            return
        parts = urllib.parse.urlsplit(index_url)
        secret = parts.password or parts.username
        if not secret or len(secret) < 4:  # a short one would blank out ordinary words; the URL rule still holds
            return
        userinfo = parts.netloc.rpartition("@")[0]
        raw = userinfo.partition(":")[2] if parts.password else userinfo
        self.secrets = tuple(dict.fromkeys((raw, urllib.parse.unquote(raw))))

    def __call__(self, text: str) -> str:
        """``text`` with every URL's user information and the index's secret replaced by ``****``."""
        text = _USERINFO.sub("://****@", text)
        for secret in self.secrets:
            text = text.replace(secret, "****")
        return text


def run_streaming(
    argv: Sequence[str], env: Mapping[str, str], deadline: float | None, line: Callable[[str], None]
) -> int | None:
    """Run ``argv``, passing each line of its output (stdout and stderr) to ``line``.

    Returns the exit status, or ``None`` when ``deadline`` (a ``time.monotonic`` value) passed first. The
    command runs in a session of its own; on a timeout or any exception (``line`` raising, Ctrl-C) its whole
    process group is killed and reaped before this returns or raises. Raises ``OSError`` when it cannot start.
    """
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(env),
        start_new_session=True,
    )
    assert proc.stdout is not None
    try:
        if not _pump(proc.stdout.fileno(), deadline, line):
            return None
        try:
            return proc.wait(timeout=None if deadline is None else max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            return None
    finally:
        if proc.returncode is None:  # not reaped yet, so its pid (and its group's id) cannot have been reused
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()


def _pump(fd: int, deadline: float | None, line: Callable[[str], None]) -> bool:
    """Feed the lines read from ``fd`` to ``line`` until it closes; ``False`` when ``deadline`` passes first."""
    pending = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                return False
            if not selector.select(timeout):
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            for raw in lines:
                line(raw.decode("utf-8", "replace").rstrip())
    if pending:
        line(pending.decode("utf-8", "replace").rstrip())
    return True


def remove_path(path: Path) -> None:
    """Delete ``path``: a directory tree, or a file or symlink."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def usable_root(root: Path) -> None:
    """Create ``root`` if needed; a root that cannot hold environments is a :class:`UsageError` (E0001)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = "it is not a directory" if isinstance(exc, FileExistsError) else exc.strerror or str(exc)
        raise UsageError(
            f"environment root {root} cannot be created: {reason}; give a directory that can be created and written"
        ) from exc
    if not os.access(root, os.W_OK | os.X_OK):
        raise UsageError(f"environment root {root} is not writable; give a directory that can be written")
