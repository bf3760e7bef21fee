"""Where a call's replies wait for its caller: a thread (event or queue) or a coroutine (future or queue).

Each implements :class:`~autoglm_runtime.isolation.workers._connection.Sink`. The reader thread calls
``deliver``/``fail``; the async kinds hand over with ``loop.call_soon_threadsafe``, so an in-flight async call
costs a future, not a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from typing import Any

__all__ = ["AsyncCallSink", "AsyncStreamSink", "CallSink", "StreamSink"]

#: What a stream's queue holds: a reply message, or the error the stream failed with.
Item = dict[str, Any] | BaseException


class CallSink:
    """One reply for a thread waiting in :meth:`wait`."""

    def __init__(self, method: str) -> None:
        self.method = method
        self._done = threading.Lock()  # held until the reply or error is in: a bare lock wakes the waiter fastest
        self._done.acquire()
        self._settled = False
        self._guard = threading.Lock()
        self.reply: dict[str, Any] | None = None
        self.error: BaseException | None = None

    def _settle(self, reply: dict[str, Any] | None, error: BaseException | None) -> None:
        with self._guard:
            if self._settled:
                return
            self._settled = True
            self.reply, self.error = reply, error
        self._done.release()

    def deliver(self, message: dict[str, Any]) -> None:
        self._settle(message, None)

    def fail(self, error: BaseException) -> None:
        self._settle(None, error)

    def wait(self, timeout: float | None) -> bool:
        """True once a reply or an error arrived; False when ``timeout`` (s) passed first."""
        return self._done.acquire(timeout=-1 if timeout is None else timeout)


class AsyncCallSink:
    """One reply, as the result of a future of ``loop``."""

    def __init__(self, method: str, loop: asyncio.AbstractEventLoop) -> None:
        self.method = method
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


class StreamSink:
    """A stream's replies, in order, for a thread reading with :meth:`get`."""

    def __init__(self, method: str) -> None:
        self.method = method
        self._queue: queue.SimpleQueue[Item] = queue.SimpleQueue()

    def deliver(self, message: dict[str, Any]) -> None:
        self._queue.put(message)

    def fail(self, error: BaseException) -> None:
        self._queue.put(error)

    def get(self, timeout: float | None) -> Item | None:
        """The next reply or error; ``None`` when ``timeout`` (s) passed first."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None


class AsyncStreamSink:
    """A stream's replies, in order, in an ``asyncio.Queue`` of ``loop``."""

    def __init__(self, method: str, loop: asyncio.AbstractEventLoop) -> None:
        self.method = method
        self.loop = loop
        self.queue: asyncio.Queue[Item] = asyncio.Queue()

    def deliver(self, message: dict[str, Any]) -> None:
        _soon(self.loop, self.queue.put_nowait, message)

    def fail(self, error: BaseException) -> None:
        _soon(self.loop, self.queue.put_nowait, error)


def _soon(loop: asyncio.AbstractEventLoop, callback: Any, *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the caller's loop closed: nobody waits for this reply any more
        loop.call_soon_threadsafe(callback, *args)
