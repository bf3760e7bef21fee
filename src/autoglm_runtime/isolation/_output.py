"""Forwarding a worker's stdout and stderr into logging, and describing how a worker ended."""

from __future__ import annotations

import collections
import logging
import os
import selectors
import signal
import threading
from typing import IO

__all__ = ["OutputPump", "describe_exit"]


def describe_exit(returncode: int | None) -> str:
    """``"killed by signal 9 (SIGKILL)"``, ``"exited with status 3"`` or ``"still running"``."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        return f"killed by signal {-returncode} ({name})"
    return f"exited with status {returncode}"


class OutputPump:
    """One named thread that turns a worker's stdout/stderr lines into log records tagged with the model.

    stdout lines are logged at INFO, stderr lines at WARNING, each with ``extra={"model", "stream", "pid"}``.
    The last stderr lines are kept for error messages (:attr:`stderr_tail`). The thread ends by itself when
    both pipes reach end-of-file (the process exited); :meth:`join` waits for that.
    """

    def __init__(self, model: str, pid: int, stdout: IO[bytes], stderr: IO[bytes], logger: logging.Logger) -> None:
        self._model = model
        self._pid = pid
        self._logger = logger
        self._streams = {stdout.fileno(): "stdout", stderr.fileno(): "stderr"}
        self._pipes = (stdout, stderr)
        self._tail: collections.deque[str] = collections.deque(maxlen=20)
        self._tail_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"autoglm-worker-{model}-output-{pid}", daemon=True)

    def start(self) -> None:
        """Start forwarding."""
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait until both pipes are drained (the worker has exited and everything it wrote is logged)."""
        self._thread.join(timeout)

    @property
    def stderr_tail(self) -> list[str]:
        """The last (up to 20) lines the worker wrote to stderr."""
        with self._tail_lock:
            return list(self._tail)

    def _emit(self, stream: str, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if stream == "stderr":
            with self._tail_lock:
                self._tail.append(line)
        level = logging.WARNING if stream == "stderr" else logging.INFO
        self._logger.log(
            level,
            "model %s %s: %s",
            self._model,
            stream,
            line,
            extra={"model": self._model, "stream": stream, "pid": self._pid},
        )

    def _run(self) -> None:
        partial = dict.fromkeys(self._streams, b"")
        with selectors.DefaultSelector() as selector:
            for fd in self._streams:
                selector.register(fd, selectors.EVENT_READ)
            open_fds = set(self._streams)
            while open_fds:
                for key, _ in selector.select():
                    fd = int(key.fd)
                    chunk = os.read(fd, 65536)
                    stream = self._streams[fd]
                    if not chunk:
                        selector.unregister(fd)
                        open_fds.discard(fd)
                        if partial[fd]:
                            self._emit(stream, partial[fd])
                        continue
                    *lines, partial[fd] = (partial[fd] + chunk).split(b"\n")
                    for line in lines:
                        self._emit(stream, line)
        for pipe in self._pipes:
            pipe.close()
