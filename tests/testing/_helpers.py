"""Helpers shared by the harness unit tests: loopback TCP servers that stand in for ZooKeeper or an upstream."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def serve_loopback(handle: Callable[[socket.socket], None], *, name: str) -> Iterator[int]:
    """Listen on a free loopback port and yield it; every connection goes to ``handle`` on a thread of its own.

    ``handle`` owns the connection it is given and closes it. On exit the listener is shut down and the
    accepting thread (``<name>-accept``) and every handler thread (``<name>``) are joined, 5 s each.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    handlers: list[threading.Thread] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            handler = threading.Thread(target=handle, args=(conn,), name=name, daemon=True)
            handlers.append(handler)
            handler.start()

    acceptor = threading.Thread(target=accept, name=f"{name}-accept", daemon=True)
    acceptor.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        acceptor.join(5)
        for handler in handlers:
            handler.join(5)
