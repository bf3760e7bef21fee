"""One worker's socket on the host: frames out under a lock, frames in on one reader thread, routed by id.

Every call or stream registers a :class:`Sink` under its id before its request is sent; the reader thread
(``autoglm-worker-<name>-reader``) hands each reply to the sink of its id -- a thread waiting on an event, a
queue, or an asyncio future resolved with ``call_soon_threadsafe`` (no thread per call). Heartbeat answers
update :attr:`Connection.last_pong`. When the stream breaks (the worker died, or the supervisor closed the
socket) every sink still registered fails with the error the supervisor names for it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from autoglm_runtime.isolation._scripts import protocol as _protocol

__all__ = ["Connection", "Sink"]


class Sink(Protocol):
    """Where the replies to one call go; both methods are called on the reader thread (or by a closer)."""

    method: str

    def deliver(self, message: dict[str, Any]) -> None: ...

    def fail(self, error: BaseException) -> None: ...


#: Given the method of a call the stream broke under, the error that call fails with.
BrokenHandler = Callable[["Connection"], Callable[[str], BaseException]]


class Connection:
    """The host's end of one worker's socket; :meth:`start` it after the handshake, :meth:`close` it once."""

    def __init__(
        self,
        name: str,
        pid: int,
        sock: socket.socket,
        on_broken: BrokenHandler,
        logger: logging.Logger,
        *,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.pid = pid
        self.reader = _protocol.FrameReader(sock)
        self.last_pong = timer()
        self._sock = sock
        self._on_broken = on_broken
        self._logger = logger
        self._timer = timer
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._sinks: dict[int, Sink] = {}
        self._closed_with: Callable[[str], BaseException] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start routing replies (after the handshake was read with :attr:`reader`)."""
        self._sock.settimeout(None)
        self._thread = threading.Thread(target=self._run, name=f"autoglm-worker-{self.name}-reader-{self.pid}")
        self._thread.daemon = True  # a blocked recv must never keep the host from exiting
        self._thread.start()

    @property
    def inflight(self) -> int:
        """Calls and streams registered and not yet finished."""
        with self._lock:
            return len(self._sinks)

    def register(self, call_id: int, sink: Sink) -> None:
        """Route replies for ``call_id`` to ``sink``; fails it at once if the connection already broke."""
        with self._lock:
            closed = self._closed_with
            if closed is None:
                self._sinks[call_id] = sink
        if closed is not None:
            sink.fail(closed(sink.method))

    def unregister(self, call_id: int) -> None:
        with self._lock:
            self._sinks.pop(call_id, None)

    def send(self, frame: _protocol.Frame) -> None:
        """Write one frame; raises ``OSError`` when the socket is closed or broken."""
        with self._send_lock:
            _protocol.send(self._sock, frame)

    def send_message(self, message: dict[str, Any]) -> bool:
        """Send a small control message (ping, more, cancel); False if the socket is gone."""
        try:
            self.send(_protocol.encode(message))
        except OSError:
            return False
        return True

    def close(self, reason: Callable[[str], BaseException]) -> None:
        """Fail every registered sink with ``reason(method)``, close the socket, stop the reader thread."""
        self._fail_all(reason)
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the reader blocked in recv
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(10)
        self._sock.close()

    def _fail_all(self, reason: Callable[[str], BaseException]) -> None:
        with self._lock:
            if self._closed_with is None:
                self._closed_with = reason
            sinks = list(self._sinks.values())
            self._sinks.clear()
        for sink in sinks:
            sink.fail(reason(sink.method))

    def _run(self) -> None:
        while True:
            try:
                message = self.reader.read()
            except _protocol.DecodeError as exc:
                self._undecodable(exc)
                continue
            except (_protocol.FrameError, OSError):
                break
            if not isinstance(message, dict):
                continue
            if message.get("type") == "pong":
                self.last_pong = self._timer()
                continue
            with self._lock:
                sink = self._sinks.get(message.get("id"))  # type: ignore[arg-type]
            if sink is not None:
                sink.deliver(message)
        with self._lock:
            closed = self._closed_with is not None
        if not closed:  # the worker's end broke first: it died (or hung up); the supervisor says how
            self._fail_all(self._on_broken(self))

    def _undecodable(self, exc: _protocol.DecodeError) -> None:
        with self._lock:
            sink = self._sinks.get(exc.call_id) if exc.call_id is not None else None
        if sink is not None:
            sink.deliver({"id": exc.call_id, "ok": False, "undecodable": str(exc)})
        else:
            self._logger.warning(
                "model %s worker (pid %d) sent a frame the host cannot decode: %s", self.name, self.pid, exc
            )
