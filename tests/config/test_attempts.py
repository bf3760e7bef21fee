"""What a KazooClient's connection attempts met: a server that took the TCP connection, or nothing at all."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator

import pytest
from kazoo.client import KazooClient
from kazoo.handlers.threading import SequentialThreadingHandler
from kazoo.protocol.states import KeeperState
from kazoo.retry import KazooRetry

from autoglm_runtime.config._attempts import ConnectAttempts, observed
from autoglm_runtime.testing import wait_until


@pytest.mark.parametrize(
    ("accepted", "failed", "last_error", "expected"),
    [
        (
            3,
            0,
            None,
            "servers took 3 of its 3 connection attempts but the session resumed on none: ZooKeeper closes such "
            "a connection at once when restored from a backup, for a session that saw newer zxids (it logs 'client "
            "must try another server'), and while it has no quorum (it logs 'ZooKeeperServer not running', and takes "
            "sessions again once its quorum is back); opening a new session",
        ),
        (
            1,
            4,
            "timed out",
            "servers took 1 of its 5 connection attempts but the session resumed on none: ZooKeeper closes such "
            "a connection at once when restored from a backup, for a session that saw newer zxids (it logs 'client "
            "must try another server'), and while it has no quorum (it logs 'ZooKeeperServer not running', and takes "
            "sessions again once its quorum is back); opening a new session",
        ),
        (
            0,
            7,
            "[Errno 111] Connection refused",
            "none of its 7 connection attempts reached a server (last: [Errno 111] Connection refused): a network "
            "partition, the ensemble down or a wrong address; a new session is opened as soon as a server answers",
        ),
        (
            0,
            0,
            None,
            "it could not try a single connection, none of the host names resolved; a new session is opened as soon "
            "as a server answers",
        ),
    ],
)
def test_the_give_up_line_says_what_the_attempts_met(
    accepted: int, failed: int, last_error: str | None, expected: str
) -> None:
    assert observed(accepted, failed, last_error) == expected


@pytest.fixture
def closing_server() -> Iterator[int]:
    """A port whose listener takes each TCP connection and closes it at once, as a server restored from a backup
    does to a session that saw newer zxids, and a server without a quorum to any."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connection.close()

    thread = threading.Thread(target=serve, name="closing-server", daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    done.set()
    thread.join(5)
    listener.close()


def free_port() -> int:
    """A loopback port nothing listens on (the kernel refuses connections to it)."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return int(sock.getsockname()[1])


def attempts_on(port: int, needed: int = 2) -> tuple[int, int, str | None]:
    client = KazooClient(
        hosts=f"127.0.0.1:{port}", timeout=1.0, connection_retry=KazooRetry(max_tries=-1, delay=0.05, max_delay=0.1)
    )
    attempts = ConnectAttempts()
    attempts.watch(client)
    client.start_async()
    try:
        wait_until(lambda: sum(attempts.counts()[:2]) >= needed, timeout=20, what=f"{needed} connection attempts")
    finally:
        client.stop()
        client.close()
    return attempts.counts()


def test_attempts_a_server_takes_and_closes_are_counted_as_accepted(closing_server: int) -> None:
    accepted, failed, last_error = attempts_on(closing_server)
    assert (accepted >= 2, failed, last_error) == (True, 0, None)


def test_attempts_nothing_takes_are_counted_as_failed_with_the_last_error() -> None:
    accepted, failed, last_error = attempts_on(free_port())
    assert (accepted, failed >= 2, last_error) == (0, True, "[Errno 111] Connection refused")


def test_reset_forgets_the_attempts_so_far() -> None:
    attempts = ConnectAttempts()
    attempts.note(OSError("no"))
    attempts.note(None)
    assert attempts.counts() == (1, 1, "no")
    attempts.reset()
    assert attempts.counts() == (0, 0, None)


def test_clients_sharing_one_handler_count_only_their_own_attempts(closing_server: int) -> None:
    """A ``client_factory`` may give all its clients one handler. The counting wrapped the handler's
    ``create_connection`` in place, once per client watched: the wrappers stacked, and each client's attempts were
    counted by every client's counter (a partitioned client was told servers took its connections)."""
    handler = SequentialThreadingHandler()
    retry = KazooRetry(max_tries=-1, delay=0.05, max_delay=0.1)
    taking = KazooClient(hosts=f"127.0.0.1:{closing_server}", timeout=1.0, handler=handler, connection_retry=retry)
    refusing = KazooClient(hosts=f"127.0.0.1:{free_port()}", timeout=1.0, handler=handler, connection_retry=retry)
    took, refused = ConnectAttempts(), ConnectAttempts()
    took.watch(taking)
    refused.watch(refusing)
    taking.start_async()
    refusing.start_async()
    try:
        wait_until(
            lambda: took.counts()[0] >= 2 and refused.counts()[1] >= 2, timeout=20, what="2 attempts of each client"
        )
    finally:
        for client in (taking, refusing):
            client.stop()
            client.close()
    assert (took.counts()[1:], refused.counts()[0], refused.counts()[2]) == (
        (0, None),
        0,
        "[Errno 111] Connection refused",
    )
    assert "create_connection" not in vars(handler)  # the shared handler is left as it is


def test_a_client_watched_again_is_counted_once_by_the_last_watcher(closing_server: int) -> None:
    client = KazooClient(
        hosts=f"127.0.0.1:{closing_server}",
        timeout=1.0,
        connection_retry=KazooRetry(max_tries=-1, delay=0.05, max_delay=0.1),
    )
    first, last = ConnectAttempts(), ConnectAttempts()
    first.watch(client)
    last.watch(client)
    client.start_async()
    try:
        wait_until(lambda: last.counts()[0] >= 3, timeout=20, what="3 attempts")
    finally:
        client.stop()
        client.close()
    # Stacked wrappers counted each attempt in both (and twice in one watched twice the same way).
    assert (first.counts(), last.counts()[1:]) == ((0, 0, None), (0, None))


def test_the_session_timeout_is_the_one_the_client_asks_for_until_a_server_grants_one() -> None:
    """The give-up delay took the ConfigClient's ``session_timeout`` option (10 s by default) even for a
    ``client_factory``'s client asking for another; the server's grant replaces it (integration/config)."""
    attempts = ConnectAttempts()
    assert attempts.session_timeout() == 10.0
    attempts.watch(KazooClient(hosts="127.0.0.1:1", timeout=2.5))
    assert attempts.session_timeout() == 2.5
    attempts.grant(4.0)
    assert attempts.session_timeout() == 4.0


def test_a_kazoo_without_the_internals_followed_is_not_counted_and_the_line_says_so() -> None:
    """A client whose ``_connection`` lacks what :meth:`ConnectAttempts.watch` wraps (a kazoo other than the
    versions followed) raised AttributeError in the sync's start; it is now not counted, and the E0409 line does
    not read "no attempt" as "no host resolved"."""

    class Bare:
        _session_timeout = 4000
        _connection = object()

    attempts = ConnectAttempts()
    attempts.watch(Bare())  # type: ignore[arg-type]
    assert (attempts.followed, attempts.session_timeout(), attempts.counts()) == (False, 4.0, (0, 0, None))
    assert observed(0, 0, None, followed=attempts.followed) == (
        "what its connection attempts met is unknown (this kazoo's connection internals differ from the versions "
        "this SDK follows); opening a new session"
    )


@pytest.fixture
def read_only_server() -> Iterator[tuple[int, list[int]]]:
    """A port speaking just enough ZooKeeper to be a read-only server: it grants a read-only session, answers its
    pings, and answers ``isro`` probes with ``ro``; and how many probes it answered so far (a list of one)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    done = threading.Event()
    probes = [0]

    def read(connection: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = connection.recv(size - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def session(connection: socket.socket) -> None:
        with connection, contextlib.suppress(OSError):
            head = read(connection, 4)
            if head == b"isro":  # kazoo's RWPinger, looking for a read-write server
                probes[0] += 1
                connection.sendall(b"ro")
                return
            read(connection, struct.unpack("!i", head)[0])  # the ConnectRequest
            # protocol version, session timeout (ms), session id, password, read-only
            reply = struct.pack("!iiqi16s?", 0, 1000, 42, 16, b"\0" * 16, True)
            connection.sendall(struct.pack("!i", len(reply)) + reply)
            while not done.is_set():
                request = read(connection, struct.unpack("!i", read(connection, 4))[0])
                xid = struct.unpack_from("!i", request)[0]
                header = struct.pack("!iqi", xid, 0, 0)  # a ping's answer: xid -2, zxid, no error
                connection.sendall(struct.pack("!i", len(header)) + header)

    def serve() -> None:
        while not done.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=session, args=(connection,), name="read-only-session", daemon=True).start()

    thread = threading.Thread(target=serve, name="read-only-server", daemon=True)
    thread.start()
    yield listener.getsockname()[1], probes
    done.set()
    thread.join(5)
    listener.close()


def test_a_read_only_clients_probes_for_a_read_write_server_are_not_counted(
    read_only_server: tuple[int, list[int]],
) -> None:
    """A ``read_only=True`` client on a read-only server probes every host for a read-write one between its pings,
    through the same handler's ``create_connection``: each probe was counted as a connection attempt a server
    took, so an outage's E0409 line told of attempts the session never made."""
    port, probes = read_only_server
    client = KazooClient(hosts=f"127.0.0.1:{port}", timeout=1.0, read_only=True)
    attempts = ConnectAttempts()
    attempts.watch(client)
    client.start(timeout=10)
    try:
        assert client.client_state == KeeperState.CONNECTED_RO
        wait_until(lambda: probes[0] >= 2, timeout=20, what="2 probes for a read-write server")
    finally:
        client.stop()
        client.close()
    assert attempts.counts() == (1, 0, None)
