"""Calls and streams on one worker, blocking or async: request out, replies routed back by id. Calls are here,
streams in ``streams.py`` (which builds on the helpers here).

Promises (for every kind):

* ``timeout`` (s; ``None`` waits for ever) bounds the wait for the worker to be ready, the writing of the
  request and the wait for the answer; for a stream it is the idle bound, before the first chunk and between
  two chunks. Past it the call raises :class:`ModelTimeoutError` (E0305) and the worker is killed and restarted
  (its other calls fail with E0103) -- unless none of the request went out yet: then the worker is left alone;
* a blocking call reads its own reply from the socket while no other thread does (see ``_routing.py``);
* a stream yields each chunk as soon as the model yielded it; closing it early (``close()``, leaving a ``with``
  block, dropping it) returns at once and has the worker close the generator, which it can do only once the
  model's current step returns: the stream keeps its place (``on_done``) until the worker says the generator
  ended (or dies), within the stream's idle ``timeout`` -- past it the worker is killed and restarted, as for a
  stream waiting that long;
* a stream belongs to the process that opened it: a forked child's copy does nothing when closed or dropped (the
  call, its connection and its worker's slot are the parent's: a cancel from the child would stop the parent's
  stream) and refuses to be read (E0001);
* async calls wait on futures and queues of the caller's loop: no thread per call in flight. Only a worker
  that must be (re)started first is waited for on the loop's default executor.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from json.encoder import encode_basestring as _json_string  # what encode writes for a str
from typing import TYPE_CHECKING, Any

from autoglm_runtime.errors import UsageError
from autoglm_runtime.isolation._scripts import protocol as _protocol
from autoglm_runtime.isolation.workers import _replies
from autoglm_runtime.isolation.workers._calls import AbandonedSink, AsyncCallSink
from autoglm_runtime.isolation.workers._connection import Connection, PeerGone, SendTimeout
from autoglm_runtime.observability._tracing import traceparent

if TYPE_CHECKING:
    from autoglm_runtime.isolation.workers.process import WorkerProcess

__all__ = ["acall", "call", "check_timeout", "request_frame", "seconds"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # a method name JSON writes as it is


def seconds(timeout: float | None) -> str:
    """A timeout as messages say it: ``"5 s"`` or ``"no time limit"``."""
    return "no time limit" if timeout is None else f"{timeout:g} s"


def check_timeout(name: str, method: str, timeout: float | None) -> None:
    """Raise :class:`UsageError` unless ``timeout`` is ``None`` or a positive number of seconds a lock wait takes
    (up to ``threading.TIMEOUT_MAX``, about 292 years: ``inf`` would fail deep inside a wait)."""
    if timeout is not None and not 0 < timeout <= threading.TIMEOUT_MAX:
        raise UsageError(
            f"timeout of {name}.{method}() must be a positive number of seconds (at most {threading.TIMEOUT_MAX:g}; "
            f"None waits for ever), got {timeout!r}"
        )


def _deadline(worker: WorkerProcess, method: str, timeout: float | None, given: float | None = None) -> float | None:
    check_timeout(worker.spec.name, method, timeout)
    if given is not None:
        return given
    return None if timeout is None else worker._timer() + timeout


def _request(
    worker: WorkerProcess, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], stream: bool
) -> tuple[int, _protocol.Frame]:
    call_id = worker.next_id()
    try:
        return call_id, request_frame(call_id, method, args, kwargs, stream, traceparent())
    except (TypeError, ValueError, _protocol.FrameError) as exc:
        raise UsageError(f"arguments of {worker.spec.name}.{method}() cannot be sent to its worker: {exc}") from exc


def request_frame(  # noqa: PLR0917
    call_id: int, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], stream: bool, parent: str | None
) -> _protocol.Frame:
    """The frame of a call: ``{"id", "type": "call", "method", "args", "kwargs", "stream"}``, and ``traceparent``
    when the caller is in a trace (the worker then joins it: its log lines, the model's own spans)."""
    one_blob = len(args) == 1 and type(args[0]) is bytes and not kwargs and not stream and parent is None
    if one_blob and type(method) is str and _IDENTIFIER.fullmatch(method):  # nothing to walk at all
        return _protocol.blob_call(call_id, method, args[0])
    # The commonest shape, formatted around its arguments: the same bytes, with only the arguments walked.
    if not kwargs and type(method) is str and '"$' not in (name := _json_string(method)):
        prefix = f'{{"id":{call_id},"type":"call","method":{name},"args":'
        suffix = ',"kwargs":{},"stream":' + ("true" if stream else "false")
        suffix += "}" if parent is None else f',"traceparent":{_json_string(parent)}}}'
        return _protocol.encode_wrapped(prefix, list(args), suffix)
    message = {"id": call_id, "type": "call", "method": method, "args": list(args), "kwargs": kwargs, "stream": stream}
    if parent is not None:
        message["traceparent"] = parent
    return _protocol.encode(message)


def _left(worker: WorkerProcess, deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - worker._timer(), 0.0)


def _monotonic(worker: WorkerProcess, deadline: float | None) -> float | None:
    """``deadline`` (a ``worker._timer`` instant) as a ``time.monotonic()`` one, for socket waits."""
    if deadline is None or worker._timer is time.monotonic:  # the same clock already (as it nearly always is)
        return deadline
    left = _left(worker, deadline)
    return None if left is None else time.monotonic() + left


async def _aconnection(worker: WorkerProcess, method: str, timeout: float | None, deadline: float | None) -> Connection:
    """The ready connection at once, or -- when the worker must be (re)started -- waited for off the loop."""
    conn = worker.ready_connection()
    if conn is not None:
        return conn
    # (to_thread, unlike run_in_executor, runs it in the caller's context: what it logs carries the call's ids)
    return await asyncio.to_thread(worker.connection, method, timeout, deadline)


def _in_time(worker: WorkerProcess, method: str, timeout: float | None, deadline: float | None) -> None:
    """Fail a call whose time ran out before it was sent (in the queue, or waiting for a restart) without
    touching the worker: only a call the worker ran too long kills it."""
    if deadline is not None and deadline <= worker._timer():
        raise worker.late(method, timeout, "in the queue or waiting for the worker")


def _send(conn: Connection, call_id: int, frame: _protocol.Frame, deadline: float | None) -> str | None:
    """Write a call's request by its deadline: ``None`` once written (or when the socket broke: whoever reads
    it, or close, fails the call), ``"unsent"`` when none of it went out in time, ``"torn"`` when part did."""
    try:
        conn.send(frame, deadline)
    except SendTimeout as exc:
        conn.unregister(call_id)
        return "torn" if exc.partial else "unsent"
    except OSError:
        pass
    return None


def _unsent(worker: WorkerProcess, conn: Connection, method: str, timeout: float | None, how: str) -> BaseException:
    """The error (E0305) of a request not written in time: one that never started going out leaves the worker
    alone; one left half written leaves the stream out of step, so the worker is killed and restarted."""
    if how == "unsent":
        return worker.late(method, timeout, "waiting to write its arguments to the worker")
    return worker.timed_out(conn, method, timeout, " (writing its arguments)")


def _outcome(worker: WorkerProcess, method: str, call_id: int, reply: dict[str, Any]) -> Any:
    if "undecodable" in reply:
        raise _replies.undecodable_reply(worker.spec.name, method, _protocol.DecodeError(reply["undecodable"]))
    result = _replies.result_of(worker.spec.name, method, call_id, reply)
    worker.succeeded()
    return result


def call(  # noqa: PLR0917
    worker: WorkerProcess,
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    timeout: float | None,
    deadline: float | None = None,
) -> Any:
    """``model.<method>(*args, **kwargs)`` in ``worker``; blocks the calling thread. ``deadline`` (a ``timer``
    instant) replaces ``now + timeout`` when the call already waited (in a queue)."""
    if deadline is None:  # (a deadline given comes from a pool, which checked the timeout)
        deadline = _deadline(worker, method, timeout)
    call_id, frame = _request(worker, method, args, kwargs, False)
    # A ready worker is taken at its word (no system call to look at the process): one that died since is found
    # by the request's write failing before any of it reached it, and then restarted like one found dead here.
    conn = worker.ready_connection(look=False) or worker.connection(method, timeout, deadline)
    timer = worker._timer
    if deadline is not None and deadline <= timer():
        _in_time(worker, method, timeout, deadline)
    try:
        try:
            reply = conn.call(
                call_id, method, frame, deadline, deadline if timer is time.monotonic else _monotonic(worker, deadline)
            )
        except PeerGone:  # its worker died (or was stopped) before it had the request: the call never ran
            worker.await_exit(conn, deadline)
            conn = worker.connection(method, timeout, deadline)
            _in_time(worker, method, timeout, deadline)
            reply = conn.call(call_id, method, frame, deadline, _monotonic(worker, deadline), retry=False)
    except SendTimeout as exc:
        raise _unsent(worker, conn, method, timeout, "torn" if exc.partial else "unsent") from None
    if reply is None:
        raise worker.timed_out(conn, method, timeout)
    if reply.get("ok") is True and reply.get("id") == call_id:  # the common answer, without building an error
        worker.succeeded()
        return reply.get("result")
    return _outcome(worker, method, call_id, reply)


async def acall(  # noqa: PLR0917
    worker: WorkerProcess,
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    timeout: float | None,
    deadline: float | None = None,
    on_done: Callable[[], None] | None = None,
) -> Any:
    """:func:`call`, awaited on the running loop. ``on_done`` runs once the call no longer occupies the worker: as
    it returns or raises, or -- when its task is cancelled while the worker runs it -- once the worker answers it
    (or dies, or was killed past the call's timeout): the worker is not free before (a pool's next call would wait
    inside it, where its timeout kills it)."""
    handed_over = False
    try:
        loop = asyncio.get_running_loop()
        deadline = _deadline(worker, method, timeout, deadline)
        call_id, frame = _request(worker, method, args, kwargs, False)
        conn = await _aconnection(worker, method, timeout, deadline)
        _in_time(worker, method, timeout, deadline)
        sink = AsyncCallSink(method, loop)
        conn.register(call_id, sink)
        try:
            unsent = _send(conn, call_id, frame, deadline)
            if unsent is not None:
                raise await asyncio.to_thread(_unsent, worker, conn, method, timeout, unsent)
            try:
                reply = await asyncio.wait_for(sink.future, _left(worker, deadline))
            except asyncio.TimeoutError:
                conn.unregister(call_id)
                raise await asyncio.to_thread(worker.timed_out, conn, method, timeout, "") from None
            except asyncio.CancelledError:
                if on_done is not None:
                    left = _left(worker, deadline)
                    handed_over = _abandon(worker, conn, call_id, method, timeout, left, on_done, "its caller had gone")
                raise
        finally:
            if not handed_over:
                conn.unregister(call_id)
        return _outcome(worker, method, call_id, reply)
    finally:
        if on_done is not None and not handed_over:
            on_done()


def _abandon(  # noqa: PLR0917
    worker: WorkerProcess,
    conn: Connection,
    call_id: int,
    method: str,
    timeout: float | None,
    left: float | None,
    on_done: Callable[[], None],
    after: str,
    on_late: Callable[[], object] | None = None,
) -> bool:
    """Hand the replies still due for a call its caller gave up on (``after`` says how) to an :class:`AbandonedSink`,
    which runs ``on_done`` once the worker is done with the call, or kills the worker (as a timeout does; or runs
    ``on_late``, which does) when it is not done within ``left`` s; False when nothing is due any more (then nothing
    was handed over)."""
    sink = AbandonedSink(method, on_done)
    if not conn.replace(call_id, sink):
        return False
    sink.watch(left, on_late or (lambda: worker.timed_out(conn, method, timeout, f" after {after}")))
    return True
