"""Where a call's replies wait for its caller: a thread (a lock or a queue) or a coroutine (future or queue).

Each implements :class:`Sink`. Whoever reads the socket calls
``deliver``/``fail``: the blocked caller of a :class:`CallSink` itself where it can, else the connection's
reader thread; the async kinds hand over with ``loop.call_soon_threadsafe``, so an in-flight async call costs
a future, not a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import itertools
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from autoglm_runtime._fork import after_fork_in_child

_log = logging.getLogger("autoglm_runtime.isolation.workers.process")

__all__ = [
    "AbandonedSink",
    "AsyncCallSink",
    "AsyncStreamSink",
    "CallSink",
    "Due",
    "OwnSink",
    "PeerGone",
    "SendTimeout",
    "Sink",
    "StreamSink",
    "caller_context",
    "watch",
]


class Sink(Protocol):
    """Where the replies to one call go; both methods are called by whoever reads the socket (or by a closer).

    ``reads`` is True for a sink whose thread waits in :meth:`Connection.wait <.._routing.ReadSide.wait>`
    and reads for itself. ``context`` is the caller's context (copied as the call began), for what other threads
    log about the call to carry its trace id; ``None`` where only the caller's own thread can see its reply.
    """

    method: str
    reads: bool
    context: contextvars.Context | None

    def deliver(self, message: dict[str, Any]) -> None: ...

    def fail(self, error: BaseException) -> None: ...


class PeerGone(Exception):
    """A call's request could not be written: the worker's end is closed (it died, or was stopped), or the
    connection broke before the call registered. None of it can have run: the call may go to a restarted worker."""


class SendTimeout(Exception):
    """A frame could not be written before its deadline; ``partial``: part of it went out (the stream is broken)."""

    def __init__(self, partial: bool) -> None:
        super().__init__("partly written" if partial else "not written")
        self.partial = partial


#: What a stream's queue holds: a reply message, or the error the stream failed with.
Item = dict[str, Any] | BaseException


class CallSink:
    """One reply for a thread blocked in :meth:`Connection.wait <.._routing.ReadSide.wait>`, which reads
    the socket itself when nobody else does (``reads`` is True): see :mod:`._connection`."""

    reads = True

    def __init__(self, method: str) -> None:
        self.method = method
        self.context: contextvars.Context | None = contextvars.copy_context()  # (the reader thread may read it)
        self._signal = threading.Lock()  # released when there is news: a bare lock wakes the waiter fastest
        self._signal.acquire()
        self._signalled = False
        self._guard = threading.Lock()
        self.settled = False
        self.granted = False  # set (under the connection's lock) when this call's thread is to read next
        self.queued = False  # in the connection's line of threads waiting for the read side
        self.reply: dict[str, Any] | None = None
        self.error: BaseException | None = None

    def _settle(self, reply: dict[str, Any] | None, error: BaseException | None) -> None:
        with self._guard:
            if self.settled:
                return
            self.reply, self.error = reply, error
            self.settled = True
            if self._signalled:
                return
            self._signalled = True
        self._signal.release()

    def deliver(self, message: dict[str, Any]) -> None:
        self._settle(message, None)

    def fail(self, error: BaseException) -> None:
        self._settle(None, error)

    def poke(self) -> None:
        """Wake the waiting thread (a reply arrived, or the read side was handed to it)."""
        with self._guard:
            if self._signalled:
                return
            self._signalled = True
        self._signal.release()

    def sleep(self, timeout: float | None) -> bool:
        """Wait for news (a poke since the last sleep); False when ``timeout`` (s) passed first."""
        if not self._signal.acquire(timeout=-1 if timeout is None else timeout):
            return False
        with self._guard:
            self._signalled = False
        return True


class OwnSink:
    """One reply for a blocking call whose thread held the read side from the moment it registered (nothing else
    was in flight): it reads its reply itself and nobody ever has to wake it, so there is nothing to signal."""

    reads = True
    context: contextvars.Context | None = None  # (its own thread reads every frame while it is in flight)
    __slots__ = ("error", "method", "reply", "settled")

    def __init__(self, method: str) -> None:
        self.method = method
        self.settled = False
        self.reply: dict[str, Any] | None = None
        self.error: BaseException | None = None

    def deliver(self, message: dict[str, Any]) -> None:
        if not self.settled:
            self.reply, self.settled = message, True

    def fail(self, error: BaseException) -> None:
        if not self.settled:
            self.error, self.settled = error, True


class AsyncCallSink:
    """One reply, as the result of a future of ``loop``."""

    reads = False

    def __init__(self, method: str, loop: asyncio.AbstractEventLoop) -> None:
        self.method = method
        self.context: contextvars.Context | None = contextvars.copy_context()
        self.loop = loop
        self.future: asyncio.Future[dict[str, Any]] = loop.create_future()

    def deliver(self, message: dict[str, Any]) -> None:
        _soon(self.loop, self._settle, message, None)

    def fail(self, error: BaseException) -> None:
        _soon(self.loop, self._settle, None, error)

    def _settle(self, message: dict[str, Any] | None, error: BaseException | None) -> None:
        if self.future.done():
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(message or {})


class AbandonedSink:
    """The last reply of a call its caller stopped waiting for (a cancelled task) or of a stream closed early, while
    the worker still runs it: nobody wants it, but the worker is busy until it comes, so ``on_done`` (freeing the
    call's place) runs then, once; a stream's chunks still on their way are dropped. :meth:`watch` bounds the wait,
    as the caller's timeout would have: past it, ``on_done`` runs once ``on_late`` (the kill) returned, whatever
    came meanwhile."""

    reads = False

    def __init__(self, method: str, on_done: Callable[[], None]) -> None:
        self.method = method
        self.context: contextvars.Context | None = contextvars.copy_context()  # (made by the call giving up)
        self._on_done: Callable[[], None] | None = on_done
        self._on_late: Callable[[], object] | None = None
        self._lock = threading.Lock()

    def watch(self, left: float | None, on_late: Callable[[], object]) -> None:
        """Run ``on_late`` (kill the worker) on the watch thread unless the last reply comes within ``left`` s
        (``None``: wait for ever)."""
        if left is None:
            return
        with self._lock:
            if self._on_done is None:  # the last reply came already
                return
            self._on_late = on_late
        _watch.add(time.monotonic() + left, self)

    def deliver(self, message: dict[str, Any]) -> None:
        if "chunk" not in message:  # (a chunk sent before the worker saw the stream's cancel: not the end yet)
            self._done()

    def fail(self, error: BaseException) -> None:
        self._done()

    def late(self) -> None:
        """(On the watch thread, at the deadline) kill the worker, unless the last reply came."""
        # The place is freed once on_late (the kill) returned, not by a reply coming meanwhile: the kill logs, then
        # waits for the worker's lifecycle lock, and a place freed before it would hand the doomed worker a call.
        with self._lock:
            on_late, self._on_late = self._on_late, None
            if on_late is None:  # the last reply came already (it took on_late with on_done)
                return
            on_done, self._on_done = self._on_done, None
        try:
            on_late()
        finally:
            if on_done is not None:
                on_done()

    def _done(self) -> None:
        with self._lock:
            on_done, self._on_done = self._on_done, None
            self._on_late = None  # (the watch thread lets go of the rest at the deadline)
        if on_done is not None:
            on_done()


class Due(Protocol):
    """A deadline of the watch thread: :meth:`late` runs on it at the deadline, in ``context`` (a copy) when it has
    one (a call's: the kill's log lines carry its trace id); ``method`` names it in logs."""

    method: str
    context: contextvars.Context | None

    def late(self) -> None: ...


def watch(at: float, due: Due) -> None:
    """Run ``due.late()`` on the watch thread at ``at`` (a ``time.monotonic()`` instant)."""
    _watch.add(at, due)


class _Watch:
    """One daemon thread (``autoglm-abandoned-watch``, started with the first deadline) runs the deadlines of every
    abandoned call: a timer thread each cost the closing caller up to a millisecond to start where threads contend
    for the GIL."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, Due]] = []  # a heap, soonest first
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, at: float, sink: Due) -> None:
        with self._cond:
            heapq.heappush(self._due, (at, next(self._order), sink))
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="autoglm-abandoned-watch", daemon=True)
                try:
                    thread.start()
                except RuntimeError as exc:  # no thread to be had: the next deadline tries again, this one waits
                    if not sys.is_finalizing():  # (shutting down: its workers go with it)
                        _log.warning(
                            "no thread could start to watch the deadline of abandoned call %s() (%s); its worker "
                            "keeps its place until it answers",
                            sink.method,
                            exc,
                            extra={"error_code": "E0103"},
                        )
                else:
                    self._thread = thread
            elif self._due[0][2] is sink:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._due or self._due[0][0] > (now := time.monotonic()):
                    self._cond.wait(self._due[0][0] - now if self._due else None)
                sink = heapq.heappop(self._due)[2]
            # In the call's context: the kill's log lines carry the trace id of the call that outlived its timeout.
            caller_context([sink]).run(_late, sink)
            del sink  # (the sink of a worker since gone goes now, not with the next deadline)


def _late(sink: Due) -> None:
    try:
        sink.late()
    except Exception:  # (one failed kill, e.g. no fork left for the restart, must not end every deadline)
        _log.exception(
            "model call %s(): killing its worker at its deadline failed", sink.method, extra={"error_code": "E0103"}
        )


def caller_context(sinks: Iterable[Sink | Due]) -> contextvars.Context:
    """A copy of the context of the first of ``sinks`` that has one (an empty one if none has), for a thread that is
    not the caller's to run what it logs about those calls in: the lines then carry the call's trace id. A copy, as
    a context runs on one thread at a time and the reader and watch threads may both use a call's at once."""
    context = next((sink.context for sink in sinks if sink.context is not None), None)
    return context.copy() if context is not None else contextvars.Context()


_watch = _Watch()


@after_fork_in_child
def _forget_parent() -> None:
    """In a forked child: the parent's watch thread does not run here, and its deadlines are the parent's."""
    global _watch
    _watch = _Watch()


class StreamSink:
    """A stream's replies, in order, for a thread reading with :meth:`get`; ``on_end`` runs as the last one (its end,
    its error, or the connection's failure) is queued: the worker is done with the stream, read or not."""

    reads = False

    def __init__(self, method: str, on_end: Callable[[], None]) -> None:
        self.method = method
        self.on_end = on_end
        self.context: contextvars.Context | None = contextvars.copy_context()
        self._queue: queue.SimpleQueue[Item] = queue.SimpleQueue()

    def deliver(self, message: dict[str, Any]) -> None:
        self._queue.put(message)
        if "chunk" not in message:
            self.on_end()

    def fail(self, error: BaseException) -> None:
        self._queue.put(error)
        self.on_end()

    def queued(self) -> int:
        """Replies waiting to be read."""
        return self._queue.qsize()

    def get(self, timeout: float | None) -> Item | None:
        """The next reply or error; ``None`` when ``timeout`` (s) passed first."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None


class AsyncStreamSink:
    """A stream's replies, in order, in an ``asyncio.Queue`` of ``loop``; ``on_end`` as for :class:`StreamSink`."""

    reads = False

    def __init__(self, method: str, loop: asyncio.AbstractEventLoop, on_end: Callable[[], None]) -> None:
        self.method = method
        self.context: contextvars.Context | None = contextvars.copy_context()
        self.loop = loop
        self.on_end = on_end
        self.queue: asyncio.Queue[Item] = asyncio.Queue()

    def queued(self) -> int:
        """Replies waiting to be read (read from any thread: a length)."""
        return self.queue.qsize()

    def deliver(self, message: dict[str, Any]) -> None:
        _soon(self.loop, self.queue.put_nowait, message)
        if "chunk" not in message:
            self.on_end()

    def fail(self, error: BaseException) -> None:
        _soon(self.loop, self.queue.put_nowait, error)
        self.on_end()


def _soon(loop: asyncio.AbstractEventLoop, callback: Any, *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the caller's loop closed: nobody waits for this reply any more
        loop.call_soon_threadsafe(callback, *args)
