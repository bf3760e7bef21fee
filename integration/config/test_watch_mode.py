"""Watch modes: one persistent recursive watch per client (ZooKeeper 3.6+), its catch-up after a gap, and the
per-node watches it replaces."""

from __future__ import annotations

import logging
import threading

import pytest
from integration.config._helpers import Factory, Until, j, kazoo_of, persistent_events_lost, server_watches
from kazoo.client import KazooClient
from kazoo.protocol.states import KazooState

from autoglm_runtime import ConfigClient
from autoglm_runtime.config import ZooKeeperConnection
from autoglm_runtime.testing.zookeeper import FaultProxy, ZooKeeperServer

from .conftest import FakeClock


def session_of(client: ConfigClient) -> str:
    return f"0x{kazoo_of(client).client_id[0]:x}"


def build_tree(zk_client: KazooClient, root: str, parents: int, children: int) -> dict[str, int]:
    expected: dict[str, int] = {}
    for p in range(parents):
        zk_client.create(f"{root}/p{p}", j(p))
        expected[f"p{p}"] = p
    pending = []
    for p in range(parents):
        for c in range(children):
            pending.append(zk_client.create_async(f"{root}/p{p}/c{c}", j(c)))
            expected[f"p{p}/c{c}"] = c
    for item in pending:
        item.get(timeout=30)
    return expected


@pytest.mark.zk_container
def test_one_server_watch_per_client_whatever_the_tree(
    zk_server: ZooKeeperServer, zk_hosts: str, zk_root: str, zk_client: KazooClient, make_client: Factory, until: Until
) -> None:
    expected = build_tree(zk_client, zk_root, parents=30, children=10)
    persistent = make_client(zk_hosts, zk_root)
    per_node = make_client(zk_hosts, zk_root, watch_mode="per_node")
    persistent.start(timeout=10)
    per_node.start(timeout=10)
    assert persistent.health()["watch_mode"] == "persistent"
    assert per_node.health()["watch_mode"] == "per_node"
    watches = server_watches(zk_server)
    assert watches[session_of(persistent)] == {zk_root}
    assert len(watches[session_of(per_node)]) >= len(expected)  # every znode (wchc lists a path once)

    # Creations, changes and deletions at every depth reach both, and no one-shot watch creeps in.
    zk_client.create(f"{zk_root}/p0/new/deeper", j("deep"), makepath=True)
    zk_client.set(f"{zk_root}/p1/c1", j("changed"))
    zk_client.delete(f"{zk_root}/p2/c2")
    zk_client.delete(f"{zk_root}/p3", recursive=True)
    zk_client.create(f"{zk_root}/top", j("top"))
    expected.update({"p0/new": None, "p0/new/deeper": "deep", "p1/c1": "changed", "top": "top"})
    for key in ["p2/c2", "p3", *(f"p3/c{c}" for c in range(10))]:
        del expected[key]
    for client in (persistent, per_node):
        until(lambda client=client: dict(client.snapshot()) == expected, what="the changed tree")  # type: ignore[misc]
        assert client.health()["drift_corrected"] == 0
    assert server_watches(zk_server)[session_of(persistent)] == {zk_root}


@pytest.mark.zk_container
def test_a_gap_is_caught_up_by_a_short_second_session(
    zk_server: ZooKeeperServer,
    zk_proxy: FaultProxy,
    zk_root: str,
    zk_client: KazooClient,
    make_client: Factory,
    until: Until,
) -> None:
    expected = build_tree(zk_client, zk_root, parents=20, children=10)
    client = make_client(zk_proxy.hosts, zk_root, session_timeout=10.0)
    client.start(timeout=10)
    suspended = threading.Event()
    kazoo_of(client).add_listener(lambda state: suspended.set() if state == KazooState.SUSPENDED else None)
    zk_proxy.refuse()
    zk_proxy.cut()
    assert suspended.wait(20)
    zk_client.set(f"{zk_root}/p4/c4", j("while away"))
    zk_client.create(f"{zk_root}/p5/c99", j(99))
    zk_client.delete(f"{zk_root}/p6/c6")
    expected.update({"p4/c4": "while away", "p5/c99": 99})
    del expected["p6/c6"]
    reads = client.health()["reads"]
    zk_proxy.restore()
    until(lambda: client.health()["resyncs"] == 1, what="the resync after the gap")
    assert dict(client.snapshot()) == expected
    assert client.health()["reads"] - reads < 20  # what changed, not the 420 reads of the whole tree
    assert client.health()["resync_reasons"] == {"reconnect": 1}
    # The catch-up session is closed: the server holds one watch for this client again, and it reports.
    until(lambda: server_watches(zk_server).get(session_of(client)) == {zk_root}, what="one watch again")
    assert len([s for s, paths in server_watches(zk_server).items() if any(p.startswith(zk_root) for p in paths)]) == 1
    zk_client.set(f"{zk_root}/p7/c7", j("after"))
    until(lambda: client.get("p7/c7") == "after")
    assert client.health()["drift_corrected"] == 0


@pytest.mark.zk_container
def test_a_factory_without_a_second_session_reads_the_tree_after_a_gap(
    zk_proxy: FaultProxy, zk_root: str, zk_client: KazooClient, until: Until, caplog: pytest.LogCaptureFixture
) -> None:
    expected = build_tree(zk_client, zk_root, parents=5, children=4)
    kazoo = ZooKeeperConnection(session_timeout=10.0, reconnect_max_delay=0.5).kazoo_client(zk_proxy.hosts)
    suspended = threading.Event()
    kazoo.add_listener(lambda state: suspended.set() if state == KazooState.SUSPENDED else None)
    with ConfigClient(zk_proxy.hosts, zk_root, snapshot_path=None, client_factory=lambda: kazoo) as client:
        zk_proxy.refuse()
        zk_proxy.cut()
        assert suspended.wait(20)
        zk_client.set(f"{zk_root}/p1/c1", j("while away"))
        expected["p1/c1"] = "while away"
        with caplog.at_level(logging.WARNING, logger="autoglm_runtime.config"):
            zk_proxy.restore()
            until(lambda: client.health()["resyncs"] == 1, what="the resync after the gap")
        assert dict(client.snapshot()) == expected
        assert client.health()["resync_reasons"] == {"gap": 1}  # the whole tree was read to close the gap
        [record] = [r for r in caplog.records if "second, short ZooKeeper session" in r.getMessage()]
        assert record.error_code == "E0409"  # type: ignore[attr-defined]
        assert client.health()["watch_mode"] == "persistent"
        zk_client.set(f"{zk_root}/p2/c2", j("after"))
        until(lambda: client.get("p2/c2") == "after")


@pytest.mark.zk_container
def test_znodes_deleted_while_away_leave_no_size_behind_after_the_full_read(
    zk_proxy: FaultProxy, zk_root: str, zk_client: KazooClient, until: Until
) -> None:
    build_tree(zk_client, zk_root, parents=5, children=4)
    kazoo = ZooKeeperConnection(session_timeout=10.0, reconnect_max_delay=0.5).kazoo_client(zk_proxy.hosts)
    suspended = threading.Event()
    kazoo.add_listener(lambda state: suspended.set() if state == KazooState.SUSPENDED else None)
    # One session only: the gap is closed by a full read, which never reads what was deleted meanwhile.
    with ConfigClient(zk_proxy.hosts, zk_root, snapshot_path=None, client_factory=lambda: kazoo) as client:
        sizes = client._source._reader._sizes  # type: ignore[union-attr]  # the multiRead planner's memory
        assert f"{zk_root}/p1/c3" in sizes
        zk_proxy.refuse()
        zk_proxy.cut()
        assert suspended.wait(20)
        zk_client.delete(f"{zk_root}/p1", recursive=True)
        zk_proxy.restore()
        until(lambda: client.health()["resyncs"] == 1, what="the resync after the gap")
        assert client.health()["resync_reasons"] == {"gap": 1}
        assert "p1" not in client.snapshot()
        assert sorted(p for p in sizes if p.startswith(f"{zk_root}/p1")) == []
        assert f"{zk_root}/p2/c3" in sizes


def test_verification_under_a_persistent_watch_reads_stats_not_values(
    zk_hosts: str, zk_root: str, zk_client: KazooClient, make_client: Factory, until: Until, clock: FakeClock
) -> None:
    build_tree(zk_client, zk_root, parents=5, children=9)  # 50 keys
    client = make_client(zk_hosts, zk_root, ttl=30.0, reconcile_rate=1000.0)  # the fake clock refills no budget
    client.start(timeout=10)
    before = client.health()
    clock.advance(34)  # every entry (and the root's child list) is due
    until(lambda: all(client._cache.deadline(k) > clock() for k in client.snapshot()), what="every key confirmed")  # type: ignore[attr-defined,operator]
    after = client.health()
    # One exists per key and one for the root, nothing read again, no drift.
    assert after["reads"] - before["reads"] == 51
    assert after["requests"] - before["requests"] == 51
    assert after["drift_corrected"] == 0


def test_verification_finds_a_creation_whose_event_was_lost(
    zk_hosts: str,
    zk_root: str,
    zk_client: KazooClient,
    make_client: Factory,
    until: Until,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    build_tree(zk_client, zk_root, parents=2, children=2)
    client = make_client(zk_hosts, zk_root, ttl=30.0)
    client.start(timeout=10)
    kazoo = kazoo_of(client)
    lost = f"{zk_root}/p1/lost"
    with persistent_events_lost(kazoo, lost):  # kazoo drops the creation event
        zk_client.create(lost, j("found"))
    zk_client.create(f"{zk_root}/marker", b"")  # reported after the lost event
    until(lambda: "marker" in client.snapshot())
    assert "p1/lost" not in client.snapshot()
    with caplog.at_level(logging.WARNING, logger="autoglm_runtime.config"):
        clock.advance(34)
        until(lambda: client.get("p1/lost") == "found", what="the lost creation found by verification")
    assert client.health()["drift_corrected"] == 1
    assert "drift corrected: 'p1' differed from ZooKeeper" in caplog.text
