"""Fixtures for the harness unit tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from tests.testing._helpers import serve_loopback


@pytest.fixture
def srvr_port() -> Iterator[int]:
    """A loopback stand-in for ZooKeeper's client port that answers every connection's ``srvr`` with
    ``Zookeeper version: test\\nMode: standalone\\n``; the test fails unless every request it read was ``srvr``."""
    requests: list[bytes] = []

    def answer(conn: socket.socket) -> None:
        with conn:
            requests.append(conn.recv(4))
            conn.sendall(b"Zookeeper version: test\nMode: standalone\n")

    with serve_loopback(answer, name="srvr-stub") as port:
        yield port
    assert set(requests) == {b"srvr"}
