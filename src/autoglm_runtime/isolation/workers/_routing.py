"""The read side of one worker's socket on the host: which thread reads the next frame, and where each reply goes.

Every call or stream registers a :class:`Sink` under its id before its request is sent; each reply goes to the
sink of its id. A call its caller gave up on (a cancelled async call, a stream closed early) keeps an
:class:`AbandonedSink` registered until its last reply has freed its place: in flight (:attr:`ReadSide.inflight`)
means the worker still works on it. Who reads the socket:

* a thread blocked in :meth:`ReadSide.wait` for its own reply (a blocking call) reads it itself while nobody
  else reads: one call in flight costs no hand-off between host threads; :meth:`Connection.call
  <._connection.Connection.call>` takes the read side as it registers when nothing else is in flight (one lock,
  no sink to signal);
* while another thread reads, it sleeps until its reply is delivered or the read side is handed to it;
* replies no blocked thread reads for (async calls, streams, heartbeat answers) are read by the connection's
  reader thread (``autoglm-worker-<name>-reader-<pid>``), which sleeps otherwise; async sinks resolve futures
  with ``call_soon_threadsafe`` (no thread per call).

The read side changes hands at a frame boundary, under the connection's lock: to the first thread still
waiting, else to the reader thread while a reply still has no reader, else nobody holds it. When the stream
breaks (the worker died, or the supervisor closed the socket) every sink still registered fails with the error
the supervisor names for it.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from autoglm_runtime.errors import ModelCallError
from autoglm_runtime.isolation._scripts import protocol as _protocol
from autoglm_runtime.isolation.workers._calls import AbandonedSink, CallSink, OwnSink, Sink, caller_context

__all__ = ["ReadSide"]


class ReadSide:
    """The sinks registered on one worker's socket and the hand-over of its read side; :class:`Connection
    <._connection.Connection>` adds the writing and the socket's end."""

    def __init__(
        self, name: str, pid: int, reader: _protocol.FrameReader, logger: logging.Logger, timer: Callable[[], float]
    ) -> None:
        self.name = name
        self.pid = pid
        self.reader = reader
        self.last_pong = timer()
        self._logger = logger
        self._timer = timer
        self._lock = threading.Lock()
        self._sinks: dict[int, Sink] = {}
        self._unread = 0  # registered sinks whose thread does not read (async calls, streams)
        self._pongs = 0  # pings sent and not yet answered
        self._reading = False  # somebody holds the read side
        self._waiting: collections.deque[CallSink] = collections.deque()
        self._turn = threading.Condition(self._lock)  # the reader thread sleeps here until it holds the read side
        self._reader_turn = False
        self._closed_with: Callable[[str], BaseException] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the reader thread (after the handshake was read with :attr:`reader`)."""
        self._thread = threading.Thread(target=self._run, name=f"autoglm-worker-{self.name}-reader-{self.pid}")
        self._thread.daemon = True  # a blocked recv must never keep the host from exiting
        self._thread.start()

    @property
    def inflight(self) -> int:
        """Calls and streams registered and not yet answered in full."""
        with self._lock:
            return len(self._sinks)

    def register(self, call_id: int, sink: Sink) -> None:
        """Route replies for ``call_id`` to ``sink``; fails it at once if the connection already broke."""
        with self._lock:
            closed = self._closed_with
            if closed is None:
                self._sinks[call_id] = sink
                if not sink.reads:
                    self._unread += 1
                    self._want_reader()
        if closed is not None:
            sink.fail(closed(sink.method))

    def replace(self, call_id: int, sink: Sink) -> bool:
        """Route the replies still due for ``call_id`` to ``sink`` instead; False when none is due any more (its
        final reply was routed, or the connection broke and failed it)."""
        with self._lock:
            old = self._sinks.get(call_id)
            if old is None:
                return False
            self._sinks[call_id] = sink
            self._unread += (not sink.reads) - (not old.reads)
            if not sink.reads:
                self._want_reader()
        return True

    def unregister(self, call_id: int) -> None:
        with self._lock:
            sink = self._sinks.pop(call_id, None)
            if sink is not None and not sink.reads:
                self._unread -= 1

    def wait(self, sink: CallSink, deadline: float | None) -> bool:
        """Until ``sink`` (registered by the calling thread) has its reply or error: True; False when
        ``deadline`` (a ``time.monotonic()`` instant) passed first.

        After False the caller must stop the worker: this thread may have left the stream in the middle of a
        frame, and keeps the read side so that nobody reads on from there.
        """
        try:
            while True:
                with self._lock:
                    mine = sink.granted or (not self._reading and self._closed_with is None and not sink.settled)
                    if mine:
                        sink.granted = False
                        self._reading = True
                    elif sink.settled:
                        return True
                    elif not sink.queued:
                        sink.queued = True
                        self._waiting.append(sink)
                if mine:
                    return self._read_for(sink, deadline)
                left = None if deadline is None else deadline - time.monotonic()
                if (left is not None and left <= 0) or not sink.sleep(left):
                    self._leave_line(sink)
                    return sink.settled
        except BaseException:  # interrupted (KeyboardInterrupt): out of the line (one reading keeps the read side)
            self._leave_line(sink)
            raise

    def _leave_line(self, sink: CallSink) -> None:
        """``sink``'s thread stops waiting for the read side: out of the line, and a turn just handed to it (at a
        frame boundary) passed on."""
        with self._lock:
            if sink.queued:
                sink.queued = False
                self._waiting.remove(sink)
            if sink.granted:
                sink.granted = False
                self._hand_over()

    def _broken(self) -> Callable[[str], BaseException]:
        """(On the reading thread) the worker's end of the socket broke: the error for each call still registered."""
        raise NotImplementedError

    def _want_reader(self) -> None:
        """(Under the lock) a reply has no thread of its own to read it: wake the reader thread if nobody reads."""
        if not self._reading and self._closed_with is None:
            self._reading = True
            self._reader_turn = True
            self._turn.notify()

    def _hand_over(self) -> None:
        """(Under the lock, by the holder of the read side, at a frame boundary) pass the read side on."""
        while self._waiting:
            waiter = self._waiting.popleft()
            waiter.queued = False
            if not waiter.settled:
                waiter.granted = True
                waiter.poke()
                return
        if (self._unread or self._pongs) and self._closed_with is None:
            self._reader_turn = True
            self._turn.notify()
            return
        self._reading = False

    def _read_for(self, sink: CallSink | OwnSink, deadline: float | None) -> bool:
        """Read (holding the read side) until ``sink`` settles; see :meth:`wait`."""
        try:
            while not sink.settled:
                if not self._read_one(deadline):
                    return True  # the stream broke: every sink failed, and nobody reads any more
        except TimeoutError:
            return False
        with self._lock:
            self._hand_over()
        return True

    def _read_own(self, call_id: int, sink: OwnSink, deadline: float | None) -> bool:
        """:meth:`_read_for` for a call holding the read side since it registered: its own reply is taken here and
        the read side passed on under one lock (nobody else can have routed anything to it meanwhile)."""
        read = self.reader.read
        while not sink.settled:
            try:
                message = read(deadline)
            except TimeoutError:
                return False
            except (_protocol.FrameError, OSError) as exc:  # (a DecodeError is a FrameError)
                if not self._unreadable(exc):
                    return True  # the stream broke: every sink failed, and nobody reads any more
                continue
            if type(message) is dict and message.get("id") == call_id:
                with self._lock:
                    if self._sinks.pop(call_id, None) is not None:  # else a closer failed it meanwhile
                        sink.deliver(message)
                    self._hand_over()
                return True
            if type(message) is dict:
                self._route(message)
        with self._lock:
            self._hand_over()
        return True

    def _read_one(self, deadline: float | None) -> bool:
        """Read one frame and route it; False when the stream broke (every sink failed)."""
        try:
            message = self.reader.read(deadline)
        except TimeoutError:
            raise
        except (_protocol.FrameError, OSError) as exc:
            return self._unreadable(exc)
        if type(message) is dict:
            self._route(message)
        return True

    def _unreadable(self, exc: Exception) -> bool:
        """A frame could not be read: True after an undecodable one (the stream is still in step), False when the
        stream broke (every sink failed with the error the supervisor names)."""
        if isinstance(exc, _protocol.DecodeError):
            self._undecodable(exc)
            return True
        with self._lock:
            closed = self._closed_with is not None
        if not closed:  # the worker's end broke first: it died (or hung up); the supervisor says how (and logs it)
            if threading.current_thread() is self._thread:  # under the trace id of the (oldest) call it failed
                with self._lock:
                    context = caller_context(self._sinks.values())
                self._fail_all(context.run(self._broken))
            else:  # a caller's thread, reading for its own call: its context is that call's
                self._fail_all(self._broken())
        return False

    def _route(self, message: dict[str, Any]) -> None:
        call_id = message.get("id")
        if call_id is None and message.get("type") == "pong":
            self.last_pong = self._timer()
            with self._lock:
                self._pongs = 0
            return
        final = "chunk" not in message  # a result, an error or a stream's end: nothing more comes for the id
        with self._lock:
            sink = self._sinks.get(call_id)  # type: ignore[arg-type]
            # An abandoned call (or closed stream) counts as in flight until its place is freed (by its deliver)
            lingers = final and type(sink) is AbandonedSink
            if sink is not None and (final or sink.reads) and not lingers:  # a blocking call takes any one reply
                del self._sinks[call_id]  # type: ignore[arg-type]
                if not sink.reads:
                    self._unread -= 1
        if sink is not None:
            sink.deliver(message)
        if lingers:
            self.unregister(call_id)  # type: ignore[arg-type]

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._reader_turn and self._closed_with is None:
                    self._turn.wait()
                if not self._reader_turn:
                    return
            while True:
                if not self._read_one(None):
                    return
                with self._lock:
                    if (self._unread or self._pongs) and self._closed_with is None:
                        continue
                    self._reader_turn = False
                    self._hand_over()
                    break

    def _fail_all(self, reason: Callable[[str], BaseException]) -> None:
        with self._lock:
            if self._closed_with is None:
                self._closed_with = reason
            sinks = list(self._sinks.values())
            self._sinks.clear()
            self._unread = 0
            self._turn.notify_all()
        for sink in sinks:
            sink.fail(reason(sink.method))

    def _undecodable(self, exc: _protocol.DecodeError) -> None:
        with self._lock:
            known = exc.call_id is not None and exc.call_id in self._sinks
        if known:  # (a stream's chunk stays a chunk: the stream is not over in the worker, see _StreamState.take)
            kind: dict[str, Any] = {"chunk": None} if exc.chunk else {"ok": False}
            self._route({"id": exc.call_id, **kind, "undecodable": str(exc)})
        else:
            self._logger.warning(  # coded as the reply of a call would be (undecodable_reply)
                "model %s worker (pid %d) sent a frame the host cannot decode: %s",
                self.name,
                self.pid,
                exc,
                extra={"error_code": ModelCallError.code, "model": self.name},
            )
