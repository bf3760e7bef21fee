"""The host's end of a worker socket over a real socketpair, for the connection and call tests."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest

from autoglm_runtime.isolation.workers._connection import Connection


@pytest.fixture
def pair() -> Iterator[tuple[Connection, socket.socket]]:
    """A started :class:`Connection` and the worker's end of its socket; a broken stream fails calls with
    ``ConnectionError("<method>: the peer went away")``."""
    host, peer = socket.socketpair()
    conn = Connection("m", 1, host, lambda conn: _gone, logging.getLogger("test"))
    conn.start()
    yield conn, peer
    conn.close(lambda method: ConnectionError(f"{method}: closed"))
    peer.close()


def _gone(method: str) -> BaseException:
    return ConnectionError(f"{method}: the peer went away")
