"""FaultProxy against a plain TCP echo server on loopback: forward, cut, refuse, restore, delay, stop."""

from __future__ import annotations

import re
import socket
import struct
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


# Against the echo server, a request frame comes back as an answer with the same bytes: the request header
# (xid, opcode) and the next eight bytes read as the answer header (xid, zxid, err). So ``_request(xid, opcode,
# err)`` is a request whose echo answers it with error code ``err``, as ZooKeeper's answer would.
def _frame(body: bytes) -> bytes:
    return struct.pack(">i", len(body)) + body


def _request(xid: int, opcode: int, err: int) -> bytes:
    return _frame(struct.pack(">iiii", xid, opcode, 0, err))


_HANDSHAKE = _frame(b"connect")
_CREATE = 1
_GET = 4


def _received_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return received


def test_cut_before_answer_forwards_the_request_and_loses_only_its_done_answer(proxy: FaultProxy) -> None:
    lost = proxy.cut_before_answer("create")
    with _connect(proxy) as sock:
        answered = _HANDSHAKE + _request(1, _GET, 0) + _request(2, _CREATE, -110)
        assert _roundtrip(sock, answered) == answered  # another request, and a create answered with an error
        assert not lost.is_set()

        sock.sendall(_request(3, _CREATE, 0) + _request(4, _GET, 0))

        assert _received_until_closed(sock) == b""  # nothing of the answer, nor of what came after it
        assert lost.is_set()
        assert proxy.connections == 0
    with _connect(proxy) as again:  # once only, and new connections are accepted
        stream = _HANDSHAKE + _request(5, _CREATE, 0)
        assert _roundtrip(again, stream) == stream


def test_answers_before_the_lost_one_in_the_same_chunk_are_passed_on(proxy: FaultProxy) -> None:
    lost = proxy.cut_before_answer("set")
    with _connect(proxy) as sock:
        sock.sendall(_HANDSHAKE + _request(1, _GET, 0) + _request(2, 5, 0))
        received = _received_until_closed(sock)
    # the echo may come back in one chunk or several: what precedes the set's answer always arrives whole
    assert received == _HANDSHAKE + _request(1, _GET, 0)
    assert lost.is_set()


def test_cut_before_answer_with_refuse_refuses_new_connections_until_restore(proxy: FaultProxy) -> None:
    lost = proxy.cut_before_answer("create", refuse=True)
    with _connect(proxy) as sock:
        sock.sendall(_HANDSHAKE + _request(1, _CREATE, 0))
        assert _received_until_closed(sock) == _HANDSHAKE
    assert lost.is_set()
    assert _is_refused(proxy)
    proxy.restore()
    with _connect(proxy) as again:
        assert _roundtrip(again, b"back") == b"back"


def test_restore_disarms_a_cut_before_answer_that_did_not_happen(proxy: FaultProxy) -> None:
    lost = proxy.cut_before_answer("create")
    proxy.restore()
    with _connect(proxy) as sock:
        stream = _HANDSHAKE + _request(1, _CREATE, 0)
        assert _roundtrip(sock, stream) == stream
    assert not lost.is_set()


def test_an_unknown_request_is_refused_with_the_known_ones(proxy: FaultProxy) -> None:
    said = (
        "The fault proxy knows no ZooKeeper request 'create_node': name one of create, delete, exists, get, set, "
        "get_acls, set_acls, get_children, sync, transaction."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(said)}$"):
        proxy.cut_before_answer("create_node")
