"""A ``client_factory`` whose clients share one kazoo handler, against a real ZooKeeper: ``KazooClient.stop()``
stops its handler, so the catch-up session's close would stop the config client's own session for good. The
SDK refuses the shared-handler client (E0409 line saying why), closes the gap with a full read, and keeps
following."""

from __future__ import annotations

import logging
import threading

import pytest
from integration.config._helpers import Until, j
from kazoo.client import KazooClient
from kazoo.handlers.threading import SequentialThreadingHandler
from kazoo.protocol.states import KazooState
from kazoo.retry import KazooRetry

from autoglm_runtime import ConfigClient
from autoglm_runtime.testing.zookeeper import FaultProxy


@pytest.mark.zk_container
def test_a_catch_up_client_sharing_the_handler_is_refused_and_the_sync_keeps_following(
    zk_proxy: FaultProxy, zk_root: str, zk_client: KazooClient, until: Until, caplog: pytest.LogCaptureFixture
) -> None:
    for key in ("a", "b"):
        zk_client.create(f"{zk_root}/{key}", j(f"{key} at start"))
    shared = SequentialThreadingHandler()
    made: list[KazooClient] = []
    suspended = threading.Event()

    def factory() -> KazooClient:
        retry = KazooRetry(max_tries=-1, delay=0.1, max_delay=0.5)
        made.append(KazooClient(zk_proxy.hosts, timeout=10.0, connection_retry=retry, handler=shared))
        return made[-1]

    try:
        with ConfigClient(zk_proxy.hosts, zk_root, snapshot_path=None, client_factory=factory) as client:
            made[0].add_listener(lambda state: suspended.set() if state == KazooState.SUSPENDED else None)
            zk_proxy.refuse()
            zk_proxy.cut()
            assert suspended.wait(20)
            zk_client.set(f"{zk_root}/a", j("a while away"))
            with caplog.at_level(logging.WARNING, logger="autoglm_runtime.config"):
                zk_proxy.restore()
                until(lambda: client.health()["resyncs"] == 1, what="the resync after the gap")
            assert client.health()["resync_reasons"] == {"gap": 1}  # no catch-up session: the tree was read
            assert client.get("a") == "a while away"
            [record] = [r for r in caplog.records if "second, short ZooKeeper session" in r.getMessage()]
            assert record.error_code == "E0409"  # type: ignore[attr-defined]
            assert (
                "did not give one (E0001: client_factory returned a KazooClient sharing its handler "
                f"(SequentialThreadingHandler at {id(shared):#x}) with the config client's own session"
            ) in record.getMessage()
            assert len(made) == 2  # the refused client was never started
            assert not made[1].connected
            # The config client's own session still runs on the handler: a later change still arrives.
            zk_client.set(f"{zk_root}/b", j("b after"))
            until(lambda: client.get("b") == "b after", what="a change after the gap")
    finally:
        for kazoo in made:
            kazoo.close()
