"""Streams on one worker, blocking or async: the chunks of a generator method as the model yields them, with flow
control (the worker runs at most ``WINDOW`` chunks ahead) and an early close; the promises are in ``calls.py``.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from autoglm_runtime.errors import ModelTimeoutError, UsageError
from autoglm_runtime.isolation._scripts import protocol as _protocol
from autoglm_runtime.isolation._scripts.dispatch import WINDOW
from autoglm_runtime.isolation.workers import _closer
from autoglm_runtime.isolation.workers._calls import AsyncStreamSink, Item, StreamSink
from autoglm_runtime.isolation.workers._connection import Connection
from autoglm_runtime.isolation.workers._unread import UnreadWatch
from autoglm_runtime.isolation.workers.calls import (
    _abandon,
    _aconnection,
    _deadline,
    _outcome,
    _request,
    _send,
    _unsent,
)

if TYPE_CHECKING:
    from autoglm_runtime.isolation.workers.process import WorkerProcess

__all__ = ["AsyncModelStream", "ModelStream", "astream", "open_astream", "stream"]

_MORE = WINDOW // 2
_WAITING = " (waiting for its next chunk)"  # what a stream's idle timeout says it waited for


def _open(
    worker: WorkerProcess, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float | None
) -> tuple[int, _protocol.Frame, float | None]:
    deadline = _deadline(worker, method, timeout)
    call_id, frame = _request(worker, method, args, kwargs, True)
    return call_id, frame, deadline


class _StreamState:
    """What a stream's two flavours share: its chunk accounting and how it ends."""

    def __init__(  # noqa: PLR0917
        self,
        worker: WorkerProcess,
        conn: Connection,
        call_id: int,
        method: str,
        timeout: float | None,
        on_done: Callable[[], None] | None,
    ) -> None:
        self.worker, self.conn, self.call_id, self.method, self.timeout = worker, conn, call_id, method, timeout
        self._on_done = on_done
        self._release_lock = threading.Lock()
        self._consumed = 0
        self.finished = False
        self.error: ModelTimeoutError | None = None  # why the host gave up on a stream its consumer left unread
        self.pid = _closer.pid()  # the process that opened the stream, the only one whose copy talks to the worker

    def not_here(self) -> UsageError:
        """The error reading a copy of the stream a forked child inherited raises."""
        return UsageError(
            f"the stream of {self.method}() on model '{self.worker.spec.name}' was opened by process {self.pid} and "
            f"cannot be read in process {_closer.pid()}, a fork of it: its chunks go to process {self.pid}; open "
            "streams in the process that reads them"
        )

    def take(self, item: Item | None) -> tuple[bool, Any]:
        """``(True, chunk)`` for a chunk; ``(False, None)`` at the end; raises the stream's error."""
        if isinstance(item, BaseException):
            self.finish(cancel=False)
            raise item
        assert item is not None
        if "chunk" in item:
            if "undecodable" in item:  # the stream fails here; the worker, still running it, closes the generator
                self.finish(cancel=True)
                _outcome(self.worker, self.method, self.call_id, item)
            self._consumed += 1
            if self._consumed % _MORE == 0:
                self.conn.send_message({"id": self.call_id, "type": "more", "n": _MORE})
            return True, item["chunk"]
        self.finish(cancel=False)
        if item.get("end"):
            self.worker.succeeded()
            return False, None
        _outcome(self.worker, self.method, self.call_id, item)
        raise AssertionError("a stream ended with a result")  # pragma: no cover - the worker never sends one

    def release(self) -> None:
        """Give the stream's place back (``on_done``), once: when the worker is done with it (its end or error came,
        read or not, or the worker died), or when the host gives up on it."""
        on_done = self.take_release()
        if on_done is not None:
            on_done()

    def take_release(self) -> Callable[[], None] | None:
        """Take ``on_done`` away (``None`` once it ran or was taken): the caller runs it when it sees fit."""
        with self._release_lock:
            on_done, self._on_done = self._on_done, None
        return on_done

    def kill(self) -> ModelTimeoutError:
        """The stream waited past its idle timeout: kill the worker (see ``WorkerProcess.timed_out``) and end it."""
        # The place is given back once the kill returned, not by an end coming meanwhile: a call given it before
        # would go to the doomed worker (see AbandonedSink.late).
        on_done = self.take_release()
        try:
            return self.worker.timed_out(self.conn, self.method, self.timeout, _WAITING)
        finally:
            self.finish(cancel=False)
            if on_done is not None:
                on_done()

    @property
    def consumed(self) -> int:
        """Chunks the consumer took so far."""
        return self._consumed

    @property
    def holding(self) -> bool:
        """True while the stream holds its place (the worker has not ended it, and nobody gave it up)."""
        return self._on_done is not None

    def fail_with(self, error: ModelTimeoutError) -> None:
        """What reading the (finished) stream raises from now on: ``error``."""
        with self._release_lock:
            self.error = error

    def finish(
        self,
        cancel: bool,
        error: ModelTimeoutError | None = None,
        within: float | None = None,
        on_late: Callable[[], object] | None = None,
    ) -> bool:
        """End the stream here (``cancel``: stop it in the worker; ``error``: what reading it raises from now on);
        False when it had ended already. A cancelled stream keeps its place until the worker closed the generator,
        for up to ``within`` s (default: its idle timeout), then ``on_late`` (default: the kill of a late call)."""
        if self.pid != _closer.pid():  # a forked child's copy: only marked closed (see the module's promises)
            # Without the lock: a thread of the parent (its reader, its watch) may have held it at the fork, and no
            # thread of this process will ever let it go. Only the child's own code touches its copy.
            ended, self.finished = self.finished, True
            return not ended
        with self._release_lock:  # (the watch thread may give an unread stream up as its consumer closes it)
            if self.finished:
                return False
            self.finished = True
            self.error = error
        # Stopped early: the worker closes the model's generator once its current step returns, and only then is it
        # free; until its end reply comes (or it dies) the stream keeps its place (release), as an abandoned call.
        timeout = self.timeout
        kept = (
            cancel
            and self._on_done is not None
            and _abandon(
                self.worker,
                self.conn,
                self.call_id,
                self.method,
                timeout,
                timeout if within is None else within,
                self.release,
                "its stream was closed",
                on_late,
            )
        )
        if not kept:  # ended by the worker (or given up on by the host), or its end came already (unread)
            self.conn.unregister(self.call_id)
        if cancel:
            self.conn.send_message({"id": self.call_id, "type": "cancel"})
        if not kept:
            self.release()
        return True


_S = TypeVar("_S", bound="ModelStream")
_A = TypeVar("_A", bound="AsyncModelStream")


class ModelStream(Iterator[Any]):
    """The chunks a model's generator yields, one by one, as they come; close it to stop the generator.

    >>> with model.stream("generate", "Once upon", timeout=30) as chunks:  # doctest: +SKIP
    ...     for chunk in chunks: print(chunk, end="")
    """

    def __init__(self, state: _StreamState, sink: StreamSink) -> None:
        self._state = state
        self._sink = sink

    def __next__(self) -> Any:
        state = self._state
        if state.finished:
            if state.error is not None:
                raise state.error
            raise StopIteration
        if state.pid != _closer.pid():
            raise state.not_here()
        item = self._sink.get(state.timeout)
        if item is None:
            raise state.kill()
        more, chunk = state.take(item)
        if not more:
            raise StopIteration
        return chunk

    def close(self) -> None:
        """Stop early: the model's generator is closed in the worker (its ``finally`` blocks run) once its current
        step returns; this returns at once, and the stream keeps its place until then. Idempotent.

        In a forked child, its inherited copy is only marked closed: the stream goes on in the parent.
        """
        self._state.finish(cancel=True)

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        state = self._state
        if not state.finished and state.pid == _closer.pid():  # dropped unclosed (see _closer), where it was opened
            _closer.dropped(self.close)


class AsyncModelStream(AsyncIterator[Any]):
    """:class:`ModelStream` for ``async for``; ``await stream.aclose()`` (or ``async with``) stops it early.

    It reaches its worker on the first ``__anext__`` (so ``async for chunk in model.astream(...)`` works).
    """

    def __init__(self, opener: Callable[[], Awaitable[tuple[_StreamState, AsyncStreamSink]]]) -> None:
        self._opener = opener
        self._state: _StreamState | None = None
        self._sink: AsyncStreamSink | None = None
        self._closed = False

    async def __anext__(self) -> Any:
        if self._closed:
            raise StopAsyncIteration
        if self._state is None:
            self._state, self._sink = await self._opener()
        state, sink = self._state, self._sink
        assert sink is not None
        if state.finished:
            if state.error is not None:
                raise state.error
            raise StopAsyncIteration
        if state.pid != _closer.pid():
            raise state.not_here()
        try:
            item = await asyncio.wait_for(sink.queue.get(), state.timeout)
        except asyncio.TimeoutError:
            raise await asyncio.to_thread(state.kill) from None
        more, chunk = state.take(item)
        if not more:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        """Stop early: the model's generator is closed in the worker. Idempotent (in a forked child, see
        :meth:`ModelStream.close`)."""
        self._closed = True
        if self._state is not None:
            self._state.finish(cancel=True)

    async def __aenter__(self: _A) -> _A:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        state = self._state
        if state is not None and not state.finished and state.pid == _closer.pid():
            _closer.dropped(functools.partial(state.finish, cancel=True))


def stream(  # noqa: PLR0917
    worker: WorkerProcess,
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    timeout: float | None,
    on_done: Callable[[], None] | None = None,
    unread: float | None = None,
) -> ModelStream:
    """Start ``model.<method>(*args, **kwargs)`` (a generator) in ``worker``; ``on_done`` runs once, when the worker
    is done with the stream (or this raises). With ``unread`` (s), the stream is closed once a chunk waited that
    long (up to twice that) without its consumer reading it; the consumer's next read raises E0305."""
    _closer.ensure_started()  # here, not in __del__: see _closer
    try:
        call_id, frame, deadline = _open(worker, method, args, kwargs, timeout)
        conn = worker.connection(method, timeout, deadline)
    except BaseException:
        if on_done is not None:
            on_done()
        raise
    state = _StreamState(worker, conn, call_id, method, timeout, on_done)
    sink = StreamSink(method, state.release)
    conn.register(call_id, sink)
    unsent = _send(conn, call_id, frame, deadline)
    if unsent is not None:
        try:
            raise _unsent(worker, conn, method, timeout, unsent)
        finally:
            state.release()
    if unread is not None:
        UnreadWatch(state, sink.queued, unread)
    return ModelStream(state, sink)


async def open_astream(  # noqa: PLR0917
    worker: WorkerProcess,
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    timeout: float | None,
    on_done: Callable[[], None] | None = None,
    unread: float | None = None,
) -> tuple[_StreamState, AsyncStreamSink]:
    """Start ``model.<method>(...)`` (a generator) in ``worker`` from the running loop (opens an
    :class:`AsyncModelStream`); ``on_done`` and ``unread`` as for :func:`stream`."""
    loop = asyncio.get_running_loop()
    _closer.ensure_started()
    try:
        call_id, frame, deadline = _open(worker, method, args, kwargs, timeout)
        conn = await _aconnection(worker, method, timeout, deadline)
    except BaseException:
        if on_done is not None:
            on_done()
        raise
    state = _StreamState(worker, conn, call_id, method, timeout, on_done)
    sink = AsyncStreamSink(method, loop, state.release)
    conn.register(call_id, sink)
    unsent = _send(conn, call_id, frame, deadline)
    if unsent is not None:
        try:
            raise await asyncio.to_thread(_unsent, worker, conn, method, timeout, unsent)
        finally:
            state.release()
    if unread is not None:
        UnreadWatch(state, sink.queued, unread)
    return state, sink


def astream(
    worker: WorkerProcess, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float | None
) -> AsyncModelStream:
    """:func:`stream` for ``async for``."""
    return AsyncModelStream(lambda: open_astream(worker, method, args, kwargs, timeout))
