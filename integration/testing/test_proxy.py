"""The fault proxy in front of a real server: a cut suspends a kazoo client, restore reconnects it; a cut before
an answer loses the answer to a request the server did."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from integration._helpers import kazoo_session
from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionLoss, NodeExistsError, RolledBackError
from kazoo.protocol.states import KazooState
from kazoo.retry import KazooRetry

from autoglm_runtime.testing.proxy import FaultProxy
from autoglm_runtime.testing.session import StateWatcher


@pytest.fixture
def proxied_client(zk_proxy: FaultProxy) -> Iterator[KazooClient]:
    # reconnect attempts capped at 0.5 s apart, so a restored proxy is noticed quickly
    retry = KazooRetry(max_tries=-1, delay=0.05, max_delay=0.5)
    with kazoo_session(zk_proxy.hosts, timeout=15.0, connection_retry=retry) as client:
        yield client


@pytest.mark.zk_container
def test_cut_suspends_and_restore_reconnects_same_session(
    zk_proxy: FaultProxy, proxied_client: KazooClient, zk_root: str
) -> None:
    proxied_client.create(f"{zk_root}/before", b"1")
    session_id = proxied_client.client_id[0]
    assert zk_proxy.connections == 1

    with StateWatcher(proxied_client) as states:
        zk_proxy.refuse()
        zk_proxy.cut()
        states.wait_for(KazooState.SUSPENDED)
        assert zk_proxy.connections == 0
        zk_proxy.restore()
        states.wait_for(KazooState.CONNECTED, timeout=15)

    assert proxied_client.client_id[0] == session_id
    assert proxied_client.get(f"{zk_root}/before")[0] == b"1"


def test_delay_slows_but_keeps_the_connection(zk_proxy: FaultProxy, proxied_client: KazooClient, zk_root: str) -> None:
    zk_proxy.set_delay(0.05)
    proxied_client.create(f"{zk_root}/delayed", b"late")
    before = zk_proxy.delayed_chunks
    assert proxied_client.get(f"{zk_root}/delayed")[0] == b"late"
    assert zk_proxy.delayed_chunks >= before + 2  # the request and its reply were both held back
    assert proxied_client.state == KazooState.CONNECTED


def _refused(proxy: FaultProxy) -> bool:
    """True when a new connection to the proxy is reset or closed at once (ZooKeeper itself would wait for the
    handshake: no answer within the timeout)."""
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


@pytest.mark.parametrize("refuse", [False, True], ids=["back", "refused"])
def test_cut_before_answer_loses_the_answer_to_a_create_the_server_did(
    zk_proxy: FaultProxy, proxied_client: KazooClient, zk_client: KazooClient, zk_root: str, refuse: bool
) -> None:
    proxied_client.create(f"{zk_root}/there", b"0")
    session_id = proxied_client.client_id[0]
    lost = zk_proxy.cut_before_answer("create", refuse=refuse)
    with pytest.raises(NodeExistsError):  # an error answer is no request done: it goes through
        proxied_client.create(f"{zk_root}/there", b"0")
    assert proxied_client.get(f"{zk_root}/there")[0] == b"0"  # so does the answer to another request
    assert not lost.is_set()

    with StateWatcher(proxied_client) as states:
        with pytest.raises(ConnectionLoss):
            proxied_client.create(f"{zk_root}/done", b"1")
        assert lost.is_set()
        assert zk_client.get(f"{zk_root}/done")[0] == b"1"  # the server did the create whose answer was lost
        states.wait_for(KazooState.SUSPENDED)
        if refuse:
            assert _refused(zk_proxy)
            zk_proxy.restore()
        states.wait_for(KazooState.CONNECTED, timeout=15)

    assert proxied_client.client_id[0] == session_id
    proxied_client.create(f"{zk_root}/after", b"2")  # once only: the next create is answered
    assert zk_proxy.connections == 1


def test_cut_before_answer_lets_a_failed_transaction_through_and_loses_a_done_ones_answer(
    zk_proxy: FaultProxy, proxied_client: KazooClient, zk_client: KazooClient, zk_root: str
) -> None:
    # ZooKeeper answers a transaction whose operations failed with error code 0, the errors inside: the proxy took
    # that for a transaction done and cut the connection, so the client saw ConnectionLoss for nothing done.
    proxied_client.create(f"{zk_root}/there", b"0")
    lost = zk_proxy.cut_before_answer("transaction")
    failing = proxied_client.transaction()
    failing.create(f"{zk_root}/new", b"1")
    failing.create(f"{zk_root}/there", b"1")
    assert [type(result) for result in failing.commit()] == [RolledBackError, NodeExistsError]
    assert not lost.is_set()
    assert zk_client.exists(f"{zk_root}/new") is None

    done = proxied_client.transaction()
    done.create(f"{zk_root}/new", b"1")
    with pytest.raises(ConnectionLoss):
        done.commit()
    assert lost.is_set()
    assert zk_client.get(f"{zk_root}/new")[0] == b"1"
