"""One worker's socket on the host: frames out under a lock, frames in by whoever holds the read side (see
``_routing.py``, which this builds on: the sinks, and which thread reads).

A blocking call (:meth:`Connection.call`) registers, writes its request and reads its own reply while nobody else
reads. Writes go out one frame at a time under a lock; :meth:`Connection.send` with a deadline never waits past it,
and a frame left half written makes every later send fail (the stream is out of step: the worker must go).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from autoglm_runtime.isolation._scripts import protocol as _protocol
from autoglm_runtime.isolation.workers._calls import CallSink, OwnSink, PeerGone, SendTimeout, Sink
from autoglm_runtime.isolation.workers._routing import ReadSide

__all__ = ["Connection", "PeerGone", "SendTimeout", "Sink"]


#: Given the method of a call the stream broke under, the error that call fails with.
BrokenHandler = Callable[["Connection"], Callable[[str], BaseException]]


class Connection(ReadSide):
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
        sock.settimeout(None)  # blocking for good: deadlines are kept by polling (a timeout would be shared)
        super().__init__(name, pid, _protocol.FrameReader(sock), logger, timer)
        self._sock = sock
        self._on_broken = on_broken
        self._send_lock = threading.Lock()
        self._torn = False  # a frame was left half written: nothing more may be sent

    def call(  # noqa: PLR0917
        self,
        call_id: int,
        method: str,
        frame: _protocol.Frame,
        deadline: float | None,
        read_deadline: float | None,
        retry: bool = True,
    ) -> dict[str, Any] | None:
        """A blocking call: register it, write its request by ``deadline`` (a ``timer`` instant), wait for its reply
        until ``read_deadline`` (a ``time.monotonic()`` one); the reply, or ``None`` when it did not come in time
        (then the caller must stop the worker, as after :meth:`wait`).

        With nothing else in flight and nobody reading, the calling thread holds the read side from the moment it
        registers: the worker has nothing else to send that could fill the socket while the request goes out.
        Raises :class:`SendTimeout` (the call is unregistered) or the error the call failed with; with ``retry``,
        :class:`PeerGone` when none of the request can have run: the connection broke before the call registered, or
        the worker's end of the socket is closed as the request is written (it is unregistered).
        """
        with self._lock:
            closed = self._closed_with
            alone = closed is None and not self._reading and not self._sinks
            sink: OwnSink | CallSink = OwnSink(method) if alone else CallSink(method)
            if closed is None:
                self._sinks[call_id] = sink
                if alone:
                    self._reading = True
        if closed is not None:
            if retry:
                raise PeerGone
            raise closed(method)
        self._send_call(call_id, frame, deadline, alone, retry)
        try:
            if isinstance(sink, OwnSink):
                answered = self._read_own(call_id, sink, read_deadline)
            else:
                answered = self.wait(sink, read_deadline)
        except BaseException:
            # Interrupted (KeyboardInterrupt): a thread that was reading keeps the read side, as after a timeout (it
            # may have left the stream mid-frame); the heartbeat, or a later call's timeout, restarts the worker.
            self.unregister(call_id)
            raise
        if not answered:
            self.unregister(call_id)
            return None
        if not sink.settled:  # a closer took the sink and is failing it right now (outside the lock): as it will
            with self._lock:
                closed = self._closed_with
            assert closed is not None
            sink.fail(closed(method))
        if sink.error is not None:
            raise sink.error
        return sink.reply

    def _send_call(
        self, call_id: int, frame: _protocol.Frame, deadline: float | None, alone: bool, retry: bool
    ) -> None:
        """Write the request of a blocking call registered under ``call_id``; see :meth:`call`."""
        try:
            self.send(frame, deadline)
        except OSError:
            if not retry:
                return  # the stream broke: reading it fails the call with the error the supervisor names
            # The worker's end is closed (it died, idle or during other calls), or this end was (the worker is being
            # stopped): the worker never had all of this request, so it cannot have run it. Nothing was read here.
            with self._lock:
                self._sinks.pop(call_id, None)
                if alone:
                    self._hand_over()
            raise PeerGone from None
        except BaseException:  # SendTimeout, or interrupted (KeyboardInterrupt): nothing was read yet
            with self._lock:
                self._sinks.pop(call_id, None)
                if alone:
                    self._hand_over()
            raise

    def send(self, frame: _protocol.Frame, deadline: float | None = None) -> None:
        """Write one frame, not waiting past ``deadline`` (a ``timer`` instant; ``None``: as long as it takes).

        Raises :class:`SendTimeout` past the deadline, ``OSError`` when the socket is closed or broken.
        """
        if deadline is None:
            with self._send_lock:
                self._check_intact()
                _protocol.send(self._sock, frame)
            return
        lock = self._send_lock
        if not lock.acquire(False) and not lock.acquire(timeout=max(deadline - self._timer(), 0.0)):
            raise SendTimeout(partial=False)
        try:
            self._check_intact()

            def blocked(started: bool) -> None:
                if not _protocol.wait_writable(self._sock, deadline - self._timer()):
                    self._torn = self._torn or started
                    raise SendTimeout(partial=started)

            _protocol.send(self._sock, frame, blocked)
        finally:
            self._send_lock.release()

    def send_message(self, message: dict[str, Any]) -> bool:
        """Send a small control message (more, cancel); False if the socket is gone."""
        try:
            self.send(_protocol.encode(message))
        except OSError:
            return False
        return True

    def ping(self, seq: int) -> bool:
        """Send a heartbeat; its answer updates :attr:`last_pong`. False if the socket is gone."""
        with self._lock:
            self._pongs += 1
            self._want_reader()
        return self.send_message({"type": "ping", "seq": seq})

    def close(self, reason: Callable[[str], BaseException]) -> None:
        """Fail every registered sink with ``reason(method)``, close the socket, stop the reader thread."""
        self._fail_all(reason)
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes whoever is blocked reading
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(10)
        self._sock.close()

    def forget_parent(self) -> None:
        """(In a forked child) close the child's copy of the socket only: a shutdown would end the parent's too."""
        self._sock.close()

    def _check_intact(self) -> None:
        if self._torn:
            raise OSError("a frame was left half written on this connection")

    def _broken(self) -> Callable[[str], BaseException]:
        return self._on_broken(self)
