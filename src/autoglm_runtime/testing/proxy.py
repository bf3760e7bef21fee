"""A TCP fault proxy on loopback, for partition tests: put it between a client and a server, then break things.

::

    with FaultProxy("127.0.0.1", server.port) as proxy:
        client = KazooClient(hosts=proxy.hosts)
        client.start()
        proxy.refuse()     # new connections are reset at once
        proxy.cut()        # live connections are closed: the client goes SUSPENDED
        proxy.restore()    # connections are accepted again: the client reconnects
        proxy.set_delay(0.2)  # every forwarded chunk waits 0.2 s
        lost = proxy.cut_before_answer("create")  # the next create is done, but its answer is lost

Each accepted connection is served by two named threads (one per direction); ``stop()`` closes every
socket and joins every thread, so nothing outlives the proxy.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from autoglm_runtime.testing._common import ZooKeeperHarnessError, format_hosts
from autoglm_runtime.testing._zkframes import (
    MULTI_HEADER,
    MULTI_OPCODE,
    REPLY_HEADER,
    REQUEST_HEADER,
    REQUESTS,
    FrameScanner,
    multi_failed,
)

__all__ = ["FaultProxy"]

log = logging.getLogger(__name__)

_CHUNK = 65536
_JOIN_TIMEOUT = 5.0


def _close(sock: socket.socket) -> None:
    # shutdown wakes a thread blocked in recv() on this socket; close alone does not
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def _reset(sock: socket.socket) -> None:
    # linger 0 makes close send RST, so the peer sees "connection reset" rather than a clean EOF
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@dataclass
class _AnswerCut:
    """An armed :meth:`FaultProxy.cut_before_answer`: the request it waits for, its opcodes, whether new
    connections are refused after it, and the event set once it happened."""

    request: str
    opcodes: frozenset[int]
    refuse: bool
    happened: threading.Event = field(default_factory=threading.Event)


_Frames = list[tuple[int, tuple[Any, ...]]]  # (start, header fields): see FrameScanner.scan


class _Link:
    """One proxied connection: the client's socket, the upstream socket and their two pump threads.

    Both pumps follow ZooKeeper's frames (``_zkframes``), so an armed :meth:`FaultProxy.cut_before_answer`
    can note the xids of the requests it waits for on the way up and find their answers on the way down."""

    def __init__(self, proxy: FaultProxy, number: int, downstream: socket.socket, upstream: socket.socket) -> None:
        self.proxy = proxy
        self.downstream = downstream
        self.upstream = upstream
        self._closed = threading.Event()
        self._waited: dict[int, int] = {}  # xid -> opcode of forwarded requests whose answer an armed cut waits for
        self._waited_lock = threading.Lock()
        self.threads = [
            threading.Thread(
                target=self._pump,
                args=(downstream, upstream, FrameScanner(REQUEST_HEADER), self._requests),
                name=f"FaultProxy-{proxy.port}-{number}-up",
                daemon=True,
            ),
            threading.Thread(
                target=self._pump,
                args=(upstream, downstream, FrameScanner(REPLY_HEADER, MULTI_HEADER.size), self._answers),
                name=f"FaultProxy-{proxy.port}-{number}-down",
                daemon=True,
            ),
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _requests(self, frames: _Frames) -> tuple[int, _AnswerCut | None]:
        # Noted before the chunk that completes the request is forwarded, so before its answer can come back.
        armed = self.proxy._armed_cut()
        if armed is not None:
            with self._waited_lock:
                self._waited.update((xid, opcode) for _, (xid, opcode) in frames if opcode in armed.opcodes)
        return 0, None

    def _answers(self, frames: _Frames) -> tuple[int, _AnswerCut | None]:
        for start, (xid, _zxid, err, body) in frames:
            with self._waited_lock:
                opcode = self._waited.pop(xid, None)
            if opcode is None:
                continue
            # A multi whose operations failed is answered with err 0 too, its errors inside: nothing was done.
            done = err == 0 and not (opcode == MULTI_OPCODE and multi_failed(body))
            if done:  # the server did the request: this is the answer to lose (an error answer goes on)
                cut = self.proxy._claim_cut()
                if cut is not None:
                    return start, cut
        return 0, None

    def _pump(
        self,
        source: socket.socket,
        target: socket.socket,
        scanner: FrameScanner,
        inspect: Callable[[_Frames], tuple[int, _AnswerCut | None]],
    ) -> None:
        cut: _AnswerCut | None = None
        try:
            while not self._closed.is_set():
                data = source.recv(_CHUNK)
                if not data:
                    break
                delay = self.proxy.delay
                if delay > 0:
                    self._closed.wait(delay)  # the injected latency; cut() interrupts it
                    if self._closed.is_set():
                        break
                    self.proxy._count_delayed()
                start, cut = inspect(scanner.scan(data))
                if cut is not None:
                    # What came before the lost answer's frame; none of it, should its start have gone already
                    # (a client never takes a frame cut short for an answer).
                    target.sendall(data[: max(start, 0)])
                    break
                target.sendall(data)
        except OSError:
            pass
        finally:
            if cut is not None:
                # Set before the close: whoever sees the connection gone finds the cut happened.
                log.debug("fault proxy %s lost the answer to a %s and cut its connection", self.proxy.port, cut.request)
                cut.happened.set()
            self.close()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self.proxy._forget(self)  # first, so a client that sees its connection closed finds it gone from the count
        _close(self.downstream)
        _close(self.upstream)

    def join(self, timeout: float) -> None:
        for thread in self.threads:
            if thread is not threading.current_thread():
                thread.join(timeout)


class FaultProxy:
    """A threaded TCP proxy from a free loopback port to ``host:port`` that can cut, refuse and delay, and lose
    the answer to one ZooKeeper request (:meth:`cut_before_answer`).

    ``start()`` begins listening (``hosts`` is then the connect string to give clients); ``stop()``
    closes all connections and joins all threads. Also a context manager.
    """

    def __init__(self, host: str, port: int, *, listen_host: str = "127.0.0.1") -> None:
        self.target = (host, port)
        self.listen_host = listen_host
        self.port = 0
        self.delay = 0.0
        self._delayed = 0
        self._refusing = False
        self._answer_cut: _AnswerCut | None = None
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._finished: list[_Link] = []
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._numbers = itertools.count(1)

    @property
    def hosts(self) -> str:
        """The connect string of the proxy, ``"127.0.0.1:PORT"`` (valid after ``start()``)."""
        if not self.port:
            raise ZooKeeperHarnessError("The fault proxy has no address until it is started.")
        return format_hosts([(self.listen_host, self.port)])

    @property
    def delayed_chunks(self) -> int:
        """How many chunks (either direction) were held back by :meth:`set_delay` and then passed on."""
        with self._lock:
            return self._delayed

    def _count_delayed(self) -> None:
        with self._lock:
            self._delayed += 1

    @property
    def connections(self) -> int:
        """How many proxied connections are open now."""
        with self._lock:
            return len(self._links)

    def start(self) -> FaultProxy:
        """Listen on a free port and forward every accepted connection; returns self."""
        if self._listener is not None:
            return self
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.listen_host, self.port))  # port 0 first, the same port again after stop()
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"FaultProxy-{self.port}-accept", daemon=True)
        self._acceptor.start()
        return self

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while True:
            try:
                downstream, _ = listener.accept()
            except OSError:
                return  # the listener was shut down by stop()
            with self._lock:
                refusing = self._refusing
            if refusing:
                _reset(downstream)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5.0)
                upstream.settimeout(None)
            except OSError:
                _reset(downstream)
                continue
            for sock in (downstream, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(self, next(self._numbers), downstream, upstream)
            with self._lock:
                if self._listener is None or self._refusing:
                    _reset(downstream)
                    _close(upstream)
                    continue
                self._links.add(link)
            link.start()

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)
            # keep only links whose threads may still run, so stop() can join them; drop the rest
            self._finished = [f for f in self._finished if any(t.is_alive() for t in f.threads)]
            self._finished.append(link)

    def cut(self) -> None:
        """Close every live connection now (both sides); new connections are still accepted unless refused."""
        with self._lock:
            links = list(self._links)
        for link in links:
            link.close()
        log.debug("fault proxy %s cut %d connections", self.port, len(links))

    def cut_before_answer(self, request: str, *, refuse: bool = False) -> threading.Event:
        """Lose the answer to the next ``request`` the server does, and cut that connection: a fault at a point
        of the client's own traffic, where a timed :meth:`cut` may come too early or too late.

        ``request`` names a kazoo request method (``"create"``, ``"set"``, ``"delete"``, ``"transaction"``,
        ``"get"``, ``"exists"``, ``"get_children"``, ``"get_acls"``, ``"set_acls"``, ``"sync"``). The proxy
        follows ZooKeeper's length-prefixed frames: it forwards such a request and, when the server's answer
        says the request was done (error code 0), passes on nothing of that answer, closes that connection
        (others stay) and, with ``refuse``, refuses new ones from then on, as :meth:`refuse` does. The client
        sees a connection loss for a request the server did. An error answer (a create of a node that
        exists, a transaction whose operations failed, which ZooKeeper answers with code 0 and the errors
        inside) goes through, and the next request is waited for. It happens once: arm it again for another.
        Returns an event that is set as the cut happens, before the client can see its connection closed;
        :meth:`restore` disarms a cut that did not happen yet.

        ::

            lost = proxy.cut_before_answer("create", refuse=True)
            client.create("/a", b"1")   # raises ConnectionLoss, yet /a exists with b"1"
            assert lost.is_set()
        """
        opcodes = REQUESTS.get(request)
        if opcodes is None:
            raise ValueError(
                f"The fault proxy knows no ZooKeeper request {request!r}: name one of {', '.join(REQUESTS)}."
            )
        cut = _AnswerCut(request, opcodes, refuse)
        with self._lock:
            self._answer_cut = cut
        return cut.happened

    def _armed_cut(self) -> _AnswerCut | None:
        with self._lock:
            return self._answer_cut

    def _claim_cut(self) -> _AnswerCut | None:
        # One answer wins, even when two connections' answers come at once; refusing starts before the close,
        # so the client cannot reconnect in between.
        with self._lock:
            cut, self._answer_cut = self._answer_cut, None
            if cut is not None and cut.refuse:
                self._refusing = True
            return cut

    def refuse(self) -> None:
        """Reset every new connection as soon as it is accepted; live ones are left alone (see ``cut()``)."""
        with self._lock:
            self._refusing = True

    def restore(self) -> None:
        """Accept and forward new connections again, with no delay and no armed :meth:`cut_before_answer`."""
        with self._lock:
            self._refusing = False
            self._answer_cut = None
        self.delay = 0.0

    def set_delay(self, seconds: float) -> None:
        """Hold every forwarded chunk ``seconds`` before passing it on (0 removes the delay)."""
        if seconds < 0:
            raise ValueError(f"The proxy delay must be zero or more seconds, not {seconds!r}.")
        self.delay = float(seconds)

    def stop(self) -> None:
        """Stop listening, close every connection and join every thread the proxy started."""
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            _close(listener)
        if self._acceptor is not None:
            self._acceptor.join(_JOIN_TIMEOUT)
            self._acceptor = None
        self.cut()
        with self._lock:
            finished, self._finished = self._finished, []
        deadline = time.monotonic() + _JOIN_TIMEOUT
        for link in finished:
            link.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
