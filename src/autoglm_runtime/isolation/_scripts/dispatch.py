"""The worker's request loop: calls multiplexed by id on one socket, run on threads or an event loop.

STDLIB ONLY (loaded by path by ``worker_main.py``, like ``protocol.py``).

The socket's reader (the worker's main thread) answers heartbeats and hands calls to the executor the model
declared (``[serving] concurrency`` in ``model.toml``); it runs model code itself only for a serial model's
plain call while no other call runs (one thread hand-off less; heartbeats are answered between calls):

* ``serial``: one thread runs the calls one at a time (the default: models are rarely thread-safe);
* ``threads``: up to ``max_inflight`` threads run calls at the same time;
* ``async``: one event loop runs every method; coroutines are awaited, async generators iterated.

Messages from the host: ``{"type": "call", "id", "method", "args", "kwargs", "stream"}`` (plus an optional
``"traceparent"``: the caller's W3C trace context, see ``trace_context.py``), ``{"type": "more",
"id", "n"}`` (the host consumed ``n`` more chunks of a stream), ``{"type": "cancel", "id"}`` (close a stream's
generator now) and ``{"type": "ping", "seq"}``. Replies: ``{"id", "ok": true, "result"}``, ``{"id", "ok":
false, "error"}``, ``{"id", "chunk"}`` (a stream's next item), ``{"id", "ok": true, "end": true}`` (a stream
ended) and ``{"type": "pong", "seq"}``. A stream sends at most ``WINDOW`` chunks ahead of the host's ``more``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

#: Chunks a stream may send before the host says it consumed them.
WINDOW = 32
#: Result types that are never a generator or a coroutine.
_PLAIN = frozenset((type(None), bool, int, float, str, bytes, bytearray, memoryview, list, dict, tuple))


def a_type(value: object) -> str:
    """``value``'s type name after its article, for messages: "an int", "a list"."""
    kind = type(value).__name__
    return f"{'an' if kind[:1].lower() in 'aeiou' else 'a'} {kind}"


def not_a_generator(method: str, result: object) -> TypeError:
    """What a stream's call says when the method returned something else ("returned an int")."""
    return TypeError(f"{method}() returned {a_type(result)}, not a generator: use call()")


def method_of(model: object, name: str) -> Any:
    """The model's method ``name``, or an ``AttributeError`` naming the methods it has (a misspelt name)."""
    method = getattr(model, name, None)
    if callable(method):
        return method
    # Looked up on the class: reading an instance's properties would run the model's code.
    names = sorted(n for n in dir(type(model)) if not n.startswith("_") and callable(getattr(type(model), n, None)))
    has = f"its methods are {', '.join(names)}" if names else "it has no public method"
    what = "has no method" if method is None else "has an attribute that is not a method named"
    raise AttributeError(f"the model ({type(model).__name__}) {what} {name!r}: {has}")


class _Stream:
    """Flow control and cancellation of one stream; its waits end on credit or cancel."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.credits = WINDOW
        self.cancelled = False
        self._cond = threading.Condition()
        self._loop = loop
        self._event: asyncio.Event | None = None  # made on the loop (3.8/3.9 bind events at creation)

    def grant(self, n: int = 0, cancel: bool = False) -> None:
        with self._cond:
            self.credits += n
            self.cancelled = self.cancelled or cancel
            self._cond.notify_all()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        if self._event is not None:
            self._event.set()

    def take(self) -> bool:
        """Wait for a credit; False once cancelled."""
        with self._cond:
            while self.credits <= 0 and not self.cancelled:
                self._cond.wait()
            self.credits -= 1
            return not self.cancelled

    async def atake(self) -> bool:
        if self._event is None:
            self._event = asyncio.Event()
        while True:
            with self._cond:
                if self.cancelled:
                    return False
                if self.credits > 0:
                    self.credits -= 1
                    return True
                self._event.clear()
            await self._event.wait()


class Dispatcher:
    """Runs the calls of one connection; ``reply(message)`` sends a frame (thread-safe), and so does
    ``result(call_id, value)``, if given, for the reply ``{"id": call_id, "ok": True, "result": value}``."""

    def __init__(  # noqa: PLR0917
        self,
        model: Any,
        reply: Callable[[dict[str, Any]], None],
        error: Callable[[BaseException], dict[str, Any]],
        exit_now: Callable[[object], None],
        concurrency: str,
        max_inflight: int,
        name: str,
        scope: Callable[[dict[str, Any]], contextlib.AbstractContextManager[None]] | None = None,
        result: Callable[[Any, Any], None] | None = None,
    ) -> None:
        self._model = model
        self._result = result or (lambda call_id, value: reply({"id": call_id, "ok": True, "result": value}))
        self._scope = scope if scope is not None else (lambda message: contextlib.nullcontext())
        self._exit_now = exit_now
        self._reply = reply
        self._error = error
        self._streams: dict[Any, _Stream] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._serial = concurrency == "serial"
        self._queued = 0  # calls handed to the pool and not finished
        if concurrency == "async":
            self._loop = asyncio.new_event_loop()
            threading.Thread(target=self._loop.run_forever, name=f"autoglm-worker-{name}-loop").start()
        else:
            size = max_inflight if concurrency == "threads" else 1
            self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix=f"autoglm-worker-{name}-call")

    def handle(self, message: dict[str, Any]) -> None:
        """One message from the host (called on the reader thread; runs model code only for a serial model's plain
        call while nothing else runs)."""
        kind = message.get("type", "call")
        plain = kind == "call" and self._serial and not self._queued and "traceparent" not in message
        if plain and not message.get("stream"):  # the commonest message first: a serial model's plain call, run here
            self._run_scoped(message, None)
            return
        if kind == "ping":
            self._reply({"type": "pong", "seq": message.get("seq")})
        elif kind in ("more", "cancel"):
            with self._lock:
                stream = self._streams.get(message.get("id"))
            if stream is not None:
                stream.grant(int(message.get("n", 0)), cancel=kind == "cancel")
        elif self._loop is not None:
            stream = self._open(message)
            asyncio.run_coroutine_threadsafe(self._run_async(message, stream), self._loop)
        elif self._serial and not message.get("stream") and self._queued == 0:
            # Nothing else runs: a serial model's plain call runs right here, one thread hand-off less per call.
            # Pings wait until it returns (the host only expects answers between calls).
            self._run(message, None)
        else:
            assert self._pool is not None
            stream = self._open(message)
            with self._lock:
                self._queued += 1
            self._pool.submit(self._run_queued, message, stream)

    def _run_queued(self, message: dict[str, Any], stream: _Stream | None) -> None:
        try:
            self._run(message, stream)
        finally:
            with self._lock:
                self._queued -= 1

    def _open(self, message: dict[str, Any]) -> _Stream | None:
        if not message.get("stream"):
            return None
        stream = _Stream(self._loop)
        with self._lock:
            self._streams[message.get("id")] = stream
        return stream

    def _close(self, call_id: Any) -> None:
        with self._lock:
            self._streams.pop(call_id, None)

    def _start(self, message: dict[str, Any]) -> Any:
        method = method_of(self._model, message["method"])
        return method(*message.get("args", ()), **message.get("kwargs", {}))

    def _run(self, message: dict[str, Any], stream: _Stream | None) -> None:
        if "traceparent" not in message:  # no trace context to enter: the scope would do nothing
            self._run_scoped(message, stream)
            return
        with self._scope(message):  # the call's trace context, for its whole run (a stream's every chunk)
            self._run_scoped(message, stream)

    def _run_scoped(self, message: dict[str, Any], stream: _Stream | None) -> None:
        call_id = message.get("id")
        try:
            result = self._start(message)
            if stream is None and type(result) in _PLAIN:  # the common answer: no generator or coroutine checks
                self._result(call_id, result)
                return
            if inspect.iscoroutine(result):  # an async method of a model served on threads: run it here
                result = asyncio.run(result)
            if inspect.isasyncgen(result):
                raise TypeError(
                    f"{message['method']}() is an async generator: serve the model with concurrency='async'"
                )
            if stream is None:
                self._answer(call_id, result)
                return
            if not inspect.isgenerator(result):
                raise not_a_generator(message["method"], result)
            try:
                for item in result:
                    if not stream.take():
                        break
                    self._reply({"id": call_id, "chunk": item})
                    if stream.cancelled:
                        break
            finally:
                result.close()  # runs the generator's finally blocks now, also when the host cancelled
            self._reply({"id": call_id, "ok": True, "end": True})
        except BaseException as exc:
            self._fail(call_id, exc)
        finally:
            if stream is not None:
                self._close(call_id)

    async def _run_async(self, message: dict[str, Any], stream: _Stream | None) -> None:
        with self._scope(message):  # set inside the call's own task: other calls on the loop never see it
            await self._run_async_scoped(message, stream)

    async def _run_async_scoped(self, message: dict[str, Any], stream: _Stream | None) -> None:  # noqa: PLR0912
        call_id = message.get("id")
        try:
            result = self._start(message)
            if inspect.isawaitable(result):
                result = await result
            if stream is None:
                self._answer(call_id, result)
                return
            if inspect.isasyncgen(result):
                try:
                    async for item in result:
                        if not await stream.atake():
                            break
                        self._reply({"id": call_id, "chunk": item})
                finally:
                    await result.aclose()
            elif inspect.isgenerator(result):
                try:
                    for item in result:
                        if not await stream.atake():
                            break
                        self._reply({"id": call_id, "chunk": item})
                finally:
                    result.close()
            else:
                raise not_a_generator(message["method"], result)
            self._reply({"id": call_id, "ok": True, "end": True})
        except BaseException as exc:
            self._fail(call_id, exc)
        finally:
            self._close(call_id)

    def _answer(self, call_id: Any, result: Any) -> None:
        if inspect.isgenerator(result):
            result.close()
        if inspect.isgenerator(result) or inspect.isasyncgen(result):
            raise TypeError("the method returned a generator: consume it with stream() (or astream())")
        self._reply({"id": call_id, "ok": True, "result": result})

    def _fail(self, call_id: Any, exc: BaseException) -> None:
        if isinstance(exc, SystemExit):  # the model asked the process to end: end it as asked, now
            self._exit_now(exc.code)
        self._reply({"id": call_id, "ok": False, "error": self._error(exc)})
