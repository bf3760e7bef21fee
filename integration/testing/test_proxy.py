"""The fault proxy in front of a real server: a cut suspends a kazoo client, restore reconnects it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from integration._helpers import kazoo_session
from kazoo.client import KazooClient
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
