"""A TCP fault proxy on loopback, for partition tests: put it between a client and a server, then break things.

::

    with FaultProxy("127.0.0.1", server.port) as proxy:
        client = KazooClient(hosts=proxy.hosts)
        client.start()
        proxy.refuse()     # new connections are reset at once
        proxy.cut()        # live connections are closed: the client goes SUSPENDED
        proxy.restore()    # connections are accepted again: the client reconnects
        proxy.set_delay(0.2)  # every forwarded chunk waits 0.2 s

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
from types import TracebackType

from autoglm_runtime.testing._common import ZooKeeperHarnessError, format_hosts

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


class _Link:
    """One proxied connection: the client's socket, the upstream socket and their two pump threads."""

    def __init__(self, proxy: FaultProxy, number: int, downstream: socket.socket, upstream: socket.socket) -> None:
        self.proxy = proxy
        self.downstream = downstream
        self.upstream = upstream
        self._closed = threading.Event()
        self.threads = [
            threading.Thread(
                target=self._pump, args=(downstream, upstream), name=f"FaultProxy-{proxy.port}-{number}-up", daemon=True
            ),
            threading.Thread(
                target=self._pump,
                args=(upstream, downstream),
                name=f"FaultProxy-{proxy.port}-{number}-down",
                daemon=True,
            ),
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
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
                target.sendall(data)
        except OSError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        _close(self.downstream)
        _close(self.upstream)
        self.proxy._forget(self)

    def join(self, timeout: float) -> None:
        for thread in self.threads:
            if thread is not threading.current_thread():
                thread.join(timeout)


class FaultProxy:
    """A threaded TCP proxy from a free loopback port to ``host:port`` that can cut, refuse and delay.

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

    def refuse(self) -> None:
        """Reset every new connection as soon as it is accepted; live ones are left alone (see ``cut()``)."""
        with self._lock:
            self._refusing = True

    def restore(self) -> None:
        """Accept and forward new connections again, with no delay."""
        with self._lock:
            self._refusing = False
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
