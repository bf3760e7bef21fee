"""Forwarding a worker's stdout and stderr into logging, and describing how a worker ended."""

from __future__ import annotations

import collections
import contextlib
import io
import json
import logging
import os
import selectors
import signal
import threading
from typing import IO

__all__ = [
    "MAX_LINE",
    "LineSplitter",
    "OutputPump",
    "describe_exit",
    "exit_reason",
    "oom_kill_count",
    "trace_ids",
]

#: Longest line (bytes) forwarded whole; the rest of a longer line is dropped and the line marked truncated.
MAX_LINE = 64 * 1024


def describe_exit(returncode: int | None, *, oom: bool = False) -> str:
    """``"killed by signal 9 (SIGKILL)"``, ``"exited with status 3"`` or ``"still running"``; with ``oom``, a
    SIGKILL is said to come from the kernel's OOM killer."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        by = " by the kernel's OOM killer (out of memory)" if oom and returncode == -signal.SIGKILL else ""
        return f"killed by signal {-returncode} ({name}){by}"
    return f"exited with status {returncode}"


def exit_reason(returncode: int | None, *, oom: bool = False) -> str:
    """The restart reason an exit counts under in health: ``"oom"``, ``"signal"`` or ``"exit"``."""
    if returncode is not None and returncode < 0:
        return "oom" if oom and returncode == -signal.SIGKILL else "signal"
    return "exit"


def oom_kill_count(root: str = "/sys/fs/cgroup") -> int | None:
    """How many processes the OOM killer has killed in this process's memory cgroup, or ``None`` where the
    kernel does not say (then an OOM kill looks like any other SIGKILL). cgroup v2 ``memory.events`` or v1
    ``memory.oom_control``."""
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    candidates = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            candidates.append(os.path.join(root, path.lstrip("/"), "memory.events"))
        elif "memory" in controllers.split(","):
            candidates.append(os.path.join(root, "memory", path.lstrip("/"), "memory.oom_control"))
    for candidate in candidates:
        try:
            with open(candidate, encoding="utf-8") as fh:
                for entry in fh.read().splitlines():
                    key, _, value = entry.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return None


def trace_ids(line: str) -> dict[str, str]:
    """The ``trace_id`` and ``span_id`` of a JSON log line (the worker writes its log records so), else none.

    >>> trace_ids('{"message": "hi", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"}')
    {'trace_id': '4bf92f3577b34da6a3ce929d0e0e4736', 'span_id': '00f067aa0ba902b7'}
    """
    if not line.startswith("{") or '"trace_id"' not in line:
        return {}
    try:
        entry = json.loads(line)
    except ValueError:
        return {}
    if not isinstance(entry, dict):
        return {}
    return {key: entry[key] for key in ("trace_id", "span_id") if isinstance(entry.get(key), str)}


class LineSplitter:
    r"""Splits a byte stream into lines of at most ``limit`` bytes, holding at most ``limit`` bytes in between.

    A line longer than ``limit`` is handed out as its first ``limit`` bytes, flagged truncated, as soon as
    that much has arrived; the rest of it, up to the next newline, is dropped. So a model that writes
    without newlines costs bounded memory.

    >>> splitter = LineSplitter(limit=4)
    >>> splitter.feed(b"ab\ncdefgh"), splitter.feed(b"ij\nk"), splitter.flush()
    ([(b'ab', False), (b'cdef', True)], [], [(b'k', False)])
    """

    def __init__(self, limit: int = MAX_LINE) -> None:
        self._limit = limit
        self._partial = bytearray()
        self._dropping = False  # inside the rest of a line already handed out truncated

    def feed(self, chunk: bytes) -> list[tuple[bytes, bool]]:
        """The lines ``chunk`` completes, each as ``(line without newline, truncated)``."""
        lines: list[tuple[bytes, bool]] = []
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            if self._dropping:
                self._dropping = False
            else:
                self._partial += chunk[start:end]
                lines.append(self._take())
            start = end + 1
        if not self._dropping:
            self._partial += chunk[start:]
            if len(self._partial) > self._limit:
                lines.append(self._take())
                self._dropping = True
        return lines

    def flush(self) -> list[tuple[bytes, bool]]:
        """The unfinished last line, if any (at end of stream)."""
        if self._partial and not self._dropping:
            return [self._take()]
        return []

    def _take(self) -> tuple[bytes, bool]:
        truncated = len(self._partial) > self._limit
        line = bytes(self._partial[: self._limit])
        self._partial.clear()
        return line, truncated


def _raw(pipe: IO[bytes]) -> IO[bytes] | io.RawIOBase:
    """The unbuffered file under ``pipe`` (detached from it), or ``pipe`` itself when it has no buffer."""
    return pipe.detach() if isinstance(pipe, io.BufferedReader) else pipe


class OutputPump:
    """One named thread that turns a worker's stdout/stderr lines into log records tagged with the model.

    stdout lines are logged at INFO, stderr lines at WARNING, each with ``extra={"model", "stream", "pid"}``, plus
    ``trace_id`` and ``span_id`` for a JSON line carrying them (a log record of a traced call: the host's JSON
    log line then has the call's trace id).
    The last stderr lines are kept for error messages (:attr:`stderr_tail`). A line longer than
    ``max_line`` bytes is cut there and logged with `` [line truncated at N bytes]`` appended and
    ``extra["truncated"]`` true. The thread ends by itself when both pipes reach end-of-file (the process
    exited and nothing it started holds them); once the worker has exited, :meth:`finish` ends it after what the
    pipes hold is logged, even while a process that left the worker's process group (a daemon the model started
    in a session of its own) keeps them open.
    """

    def __init__(
        self,
        model: str,
        pid: int,
        stdout: IO[bytes],
        stderr: IO[bytes],
        logger: logging.Logger,
        *,
        max_line: int = MAX_LINE,
    ) -> None:
        self._model = model
        self._max_line = max_line
        self._pid = pid
        self._logger = logger
        self._streams = {stdout.fileno(): "stdout", stderr.fileno(): "stderr"}
        # The raw files, not the buffered readers Popen made (read here with os.read anyway): closing a buffered reader
        # takes its lock, and a thread holding it at a fork (this pump's own, closing them as the worker exits) would
        # leave it locked in the child, whose at-fork handler closes them (forget_parent): os.fork() would never
        # return there.
        self._pipes = (_raw(stdout), _raw(stderr))
        self._tail: collections.deque[str] = collections.deque(maxlen=20)
        self._tail_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"autoglm-worker-{model}-output-{pid}", daemon=True)
        self._wake_r, self._wake_w = os.pipe()  # finish() writes here: the worker exited, drain the pipes and stop
        self._finish_lock = threading.Lock()

    def start(self) -> None:
        """Start forwarding."""
        self._thread.start()

    def finish(self, timeout: float | None = None) -> None:
        """The worker has exited: log what its pipes hold, stop, and wait (up to ``timeout`` s) until that is done."""
        with self._finish_lock:
            if self._wake_w >= 0:
                with contextlib.suppress(BrokenPipeError):  # it stopped by itself already (end of file on both)
                    os.write(self._wake_w, b"x")
                os.close(self._wake_w)
                self._wake_w = -1
        self._thread.join(timeout)

    @property
    def stderr_tail(self) -> list[str]:
        """The last (up to 20) lines the worker wrote to stderr."""
        with self._tail_lock:
            return list(self._tail)

    def _emit(self, stream: str, raw: bytes, truncated: bool) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if truncated:
            line += f" [line truncated at {self._max_line} bytes]"
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
            extra={"model": self._model, "stream": stream, "pid": self._pid, "truncated": truncated, **trace_ids(line)},
        )

    def _run(self) -> None:
        splitters = {fd: LineSplitter(self._max_line) for fd in self._streams}
        with selectors.DefaultSelector() as selector:
            for fd in self._streams:
                selector.register(fd, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            open_fds = set(self._streams)
            while open_fds:
                for key, _ in selector.select():
                    fd = int(key.fd)
                    if fd == self._wake_r:
                        self._drain(open_fds, splitters)
                        open_fds.clear()
                        break
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        selector.unregister(fd)
                        open_fds.discard(fd)
                    self._lines(fd, chunk, splitters[fd])
        wake_r, self._wake_r = self._wake_r, -1  # (before the close: a fork's child must never close a reused number)
        os.close(wake_r)
        for pipe in self._pipes:
            pipe.close()

    def forget_parent(self) -> None:
        """(In a forked child) close the child's copies of this pump's descriptors; the parent's thread reads on."""
        for pipe in self._pipes:
            pipe.close()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._wake_r = self._wake_w = -1

    def _lines(self, fd: int, chunk: bytes, splitter: LineSplitter) -> None:
        """Log the lines ``chunk`` completes (at end of file, an empty chunk: the unfinished last one)."""
        for line, truncated in splitter.feed(chunk) if chunk else splitter.flush():
            self._emit(self._streams[fd], line, truncated)

    def _drain(self, open_fds: set[int], splitters: dict[int, LineSplitter]) -> None:
        """Log what the pipes hold now (the worker exited: it writes no more), without waiting for an end of file a
        process it started may hold back; at most 64 MiB a pipe, should such a process write on meanwhile."""
        for fd in open_fds:
            os.set_blocking(fd, False)
            for _ in range(1024):
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    chunk = b""
                self._lines(fd, chunk, splitters[fd])
                if not chunk:
                    break
