"""FaultProxy against a plain TCP echo server on loopback: forward, cut, refuse, restore, delay, stop."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from tests.testing._helpers import serve_loopback

from autoglm_runtime.testing.proxy import FaultProxy
from autoglm_runtime.testing.zookeeper import ZooKeeperHarnessError


def _echo(conn: socket.socket) -> None:
    with conn:
        try:
            while data := conn.recv(4096):
                conn.sendall(data)
        except OSError:
            pass


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A plain TCP echo server on loopback, one thread a connection."""
    with serve_loopback(_echo, name="echo") as port:
        yield port


@pytest.fixture
def proxy(echo_port: int) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", echo_port) as running:
        yield running


def _connect(proxy: FaultProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=10)


def _roundtrip(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    received = b""
    while len(received) < len(payload):
        chunk = sock.recv(4096)
        if not chunk:
            break
        received += chunk
    return received


def _is_closed(sock: socket.socket) -> bool:
    """True when the peer closed or reset the connection (a read gives EOF or an error)."""
    try:
        sock.sendall(b"x")
        return sock.recv(1) == b""
    except OSError:
        return True


def _is_refused(proxy: FaultProxy) -> bool:
    """True when a new connection is reset: the reset may even come before connect() returns."""
    try:
        sock = _connect(proxy)
    except ConnectionResetError:
        return True
    with sock:
        return _is_closed(sock)


def test_forwards_both_ways(proxy: FaultProxy) -> None:
    assert proxy.hosts == f"127.0.0.1:{proxy.port}"
    with _connect(proxy) as sock:
        assert _roundtrip(sock, b"hello" * 1000) == b"hello" * 1000


def test_cut_closes_live_connections_but_accepts_new_ones(proxy: FaultProxy) -> None:
    with _connect(proxy) as first:
        assert _roundtrip(first, b"a") == b"a"
        assert proxy.connections == 1

        proxy.cut()

        assert proxy.connections == 0
        assert _is_closed(first)
    with _connect(proxy) as second:
        assert _roundtrip(second, b"b") == b"b"


def test_refuse_resets_new_connections_until_restore(proxy: FaultProxy) -> None:
    with _connect(proxy) as live:
        assert _roundtrip(live, b"up") == b"up"  # accepted and forwarded before refuse()
        proxy.refuse()
        assert _is_refused(proxy)
        assert _roundtrip(live, b"still") == b"still"  # refuse leaves live connections alone

    proxy.restore()
    with _connect(proxy) as again:
        assert _roundtrip(again, b"back") == b"back"


def test_delay_holds_data_but_delivers_it(proxy: FaultProxy) -> None:
    proxy.set_delay(0.01)
    with _connect(proxy) as sock:
        assert _roundtrip(sock, b"late") == b"late"
    proxy.restore()
    assert proxy.delay == 0.0


def test_negative_delay_is_refused(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match=r"^The proxy delay must be zero or more seconds, not -1\.$"):
        proxy.set_delay(-1)


def test_upstream_down_resets_the_client() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        dead_port = placeholder.getsockname()[1]
    with FaultProxy("127.0.0.1", dead_port) as proxy:
        assert _is_refused(proxy)


def test_hosts_before_start_is_an_error() -> None:
    with pytest.raises(ZooKeeperHarnessError) as info:
        _ = FaultProxy("127.0.0.1", 1).hosts
    assert info.value.message == "The fault proxy has no address until it is started."


def test_stop_leaves_no_thread_and_no_listener(echo_port: int) -> None:
    proxy = FaultProxy("127.0.0.1", echo_port).start()
    socks = [_connect(proxy) for _ in range(3)]
    for sock in socks:
        assert _roundtrip(sock, b"x") == b"x"
    assert any(t.name.startswith(f"FaultProxy-{proxy.port}-") for t in threading.enumerate())

    proxy.stop()

    assert not [t.name for t in threading.enumerate() if t.name.startswith("FaultProxy-")]
    assert all(_is_closed(sock) for sock in socks)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    for sock in socks:
        sock.close()
