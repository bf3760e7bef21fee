"""Regressions found by review against a real ZooKeeper: each test failed before its fix."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from integration._helpers import kazoo_session
from integration.config._helpers import Factory, SwitchingProxy, Until, j, kazoo_of
from kazoo.client import KazooClient
from kazoo.security import make_digest_acl

from autoglm_runtime import ConfigChange
from autoglm_runtime.config import SnapshotEntry, write_snapshot
from autoglm_runtime.testing.zookeeper import FaultProxy, ZooKeeperServer, expire_session


def coded(caplog: pytest.LogCaptureFixture, start: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith(start) and getattr(r, "error_code", "") == "E0409"]


def test_node_recreated_in_one_transaction_keeps_its_child_watch(
    zk_hosts: str, zk_root: str, zk_client: KazooClient, make_client: Factory, until: Until
) -> None:
    zk_client.create(f"{zk_root}/a/old", j(1), makepath=True)
    client = make_client(zk_hosts, zk_root)  # the fake clock never expires a TTL: only watches can help
    client.start(timeout=10)
    zk_client.delete(f"{zk_root}/a/old")
    until(lambda: "a/old" not in client.snapshot())
    tx = zk_client.transaction()
    tx.delete(f"{zk_root}/a")
    tx.create(f"{zk_root}/a", j("v2"))
    tx.commit()
    until(lambda: client.get("a") == "v2", what="the recreated value")
    zk_client.create(f"{zk_root}/a/new", j(2))
    until(lambda: client.get("a/new") == 2, what="a child of the recreated node")
    zk_client.set(f"{zk_root}/a", j("v3"))
    until(lambda: client.get("a") == "v3", what="the data watch of the recreated node")
    assert client.health()["drift_corrected"] == 0


def test_node_deleted_and_recreated_by_an_operator_script_keeps_following(
    zk_hosts: str, zk_root: str, zk_client: KazooClient, make_client: Factory, until: Until
) -> None:
    zk_client.create(f"{zk_root}/svc/v0", j(0), makepath=True)
    client = make_client(zk_hosts, zk_root)
    client.start(timeout=10)
    for i in range(1, 11):
        zk_client.delete(f"{zk_root}/svc", recursive=True)
        zk_client.create(f"{zk_root}/svc/v{i}", j(i), makepath=True)
        until(lambda i=i: client.get(f"svc/v{i}") == i, timeout=10, what=f"svc/v{i} of round {i}")
    until(lambda: sorted(client.snapshot()) == ["svc", "svc/v10"])
    assert client.health()["drift_corrected"] == 0


def test_deeply_nested_json_is_a_rejection_and_the_sync_goes_on(
    zk_hosts: str,
    zk_root: str,
    zk_client: KazooClient,
    make_client: Factory,
    until: Until,
    caplog: pytest.LogCaptureFixture,
) -> None:
    zk_client.create(f"{zk_root}/good", j(1))
    client = make_client(zk_hosts, zk_root)
    client.start(timeout=10)
    with caplog.at_level(logging.WARNING, logger="autoglm_runtime.config"):
        zk_client.create(f"{zk_root}/evil", b"[" * 100_000)  # RecursionError in json, not ValueError
        zk_client.set(f"{zk_root}/good", j(2))
        until(lambda: client.get("good") == 2 and client.health()["rejected"] == 1)
    assert "evil" not in client.snapshot()
    health = client.health()
    assert (health["stale_seconds"], health["connected"]) == (0.0, True)
    [record] = coded(caplog, "config update for 'evil' rejected")
    assert record.getMessage().startswith(
        "config update for 'evil' rejected, keeping the last good value: the json codec cannot decode it: "
        "RecursionError: "
    )
    assert not coded(caplog, "config sync failed")
    fresh = make_client(zk_hosts, zk_root)
    fresh.start(timeout=10)
    assert dict(fresh.snapshot()) == {"good": 2}


def test_snapshot_with_higher_zxids_loses_to_zookeeper(
    zk_root: str, zk_client: KazooClient, zk_proxy: FaultProxy, make_client: Factory, until: Until, tmp_path: Path
) -> None:
    zk_client.create(f"{zk_root}/model", j("from-zookeeper"))
    high = (5 << 32) | 100  # written against an old ensemble, further along than this one
    snap = tmp_path / "old.snapshot"
    entries = {"model": SnapshotEntry(j("from-snapshot"), high, high), "gone": SnapshotEntry(j(1), high, high)}
    write_snapshot(snap, hosts=zk_proxy.hosts, root=zk_root, entries=entries)
    zk_proxy.refuse()
    client = make_client(zk_proxy.hosts, zk_root, snapshot_path=snap)
    client.start(timeout=1.0)
    assert dict(client.snapshot()) == {"model": "from-snapshot", "gone": 1}
    zk_proxy.restore()
    until(lambda: client.health()["source"] == "zookeeper" and client.health()["stale_seconds"] == 0.0)
    until(lambda: dict(client.snapshot()) == {"model": "from-zookeeper"})
    zk_client.set(f"{zk_root}/model", j("newer"))
    until(lambda: client.get("model") == "newer")
    assert client.version("model") == zk_client.exists(f"{zk_root}/model").mzxid


def test_root_missing_at_start_is_followed_after_a_reconnect(
    zk_root: str, zk_client: KazooClient, zk_proxy: FaultProxy, make_client: Factory, until: Until
) -> None:
    root = f"{zk_root}/later"
    client = make_client(zk_proxy.hosts, root)
    client.start(timeout=10)
    assert dict(client.snapshot()) == {}
    zk_proxy.cut()
    until(lambda: client.health()["resyncs"] == 1 and client.health()["connected"], what="the resync")
    zk_client.create(f"{root}/k", j(1), makepath=True)
    until(lambda: client.get("k") == 1, what="a key under a root created after the reconnect")


def test_long_paths_are_loaded_in_requests_under_the_packet_limit(
    zk_hosts: str, zk_root: str, zk_client: KazooClient, make_client: Factory
) -> None:
    base = f"{zk_root}/k/{'d' * 400}/{'e' * 400}"
    zk_client.create(base, b"", makepath=True)
    for pending in [zk_client.create_async(f"{base}/{i:04d}{'n' * 300}", j(i)) for i in range(600)]:
        pending.get(timeout=30)
    client = make_client(zk_hosts, zk_root)
    client.start(timeout=20)  # before the fix: one 1.3 MB multiRead, dropped by the server, forever
    assert len(client.snapshot()) == 603
    health = client.health()
    assert health["requests"] < 100  # still multiRead, not one request per read
    assert health["resyncs"] == 0


def test_denied_subtree_keeps_its_last_known_values_through_a_full_resync(
    zk_hosts: str, zk_root: str, make_client: Factory, until: Until, caplog: pytest.LogCaptureFixture
) -> None:
    acl = [make_digest_acl("svc", "pw", all=True), make_digest_acl("adm", "pw", all=True)]
    with kazoo_session(zk_hosts, auth_data=[("digest", "adm:pw")]) as admin:
        admin.create(f"{zk_root}/models", b"", acl=acl)
        for i in range(20):  # >= 16 children: the level is read with multiRead
            admin.create(f"{zk_root}/models/m{i:02d}", j(i), acl=acl)
        admin.create(f"{zk_root}/other", j(1))
        client = make_client(zk_hosts, zk_root, auth=("digest", "svc:pw"))
        events: list[ConfigChange] = []
        client.subscribe("", events.append)
        client.start(timeout=10)
        loaded = dict(client.snapshot())
        assert len(loaded) == 22
        assert client.wait_listeners(10)
        events.clear()
        with caplog.at_level(logging.WARNING, logger="autoglm_runtime.config"):
            admin.set_acls(f"{zk_root}/models", [make_digest_acl("adm", "pw", all=True)])
            # A full re-read, as after a load a drop interrupted (how the reviewer reproduced it).
            client._source.request_full_read()  # type: ignore[union-attr]
            until(lambda: client.health()["resyncs"] == 1, what="the full resync")
        assert dict(client.snapshot()) == loaded
        assert client.wait_listeners(10)
        assert events == []
        assert coded(caplog, f"ZooKeeper denied reading {zk_root}/models; keeping the last known values")
        client.stop()
        admin.delete(f"{zk_root}/models", recursive=True)  # the fixture's client could not


def test_new_session_on_a_server_behind_the_cache_defers_removals_then_rebuilds(
    zk_root: str,
    zk_hosts: str,
    zk_server: ZooKeeperServer,
    zk_client: KazooClient,
    zk_restartable: ZooKeeperServer,
    make_client: Factory,
    until: Until,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After an expiry the new session lands on a server that has not seen ``b`` (a second server, with
    smaller zxids). First: a lagging follower's "missing" must not make ``b`` go away. When the server stays
    behind even after ``sync`` and three re-checks, it is a rebuilt ensemble: its tree wins."""
    zk_client.create(f"{zk_root}/a", j(1))
    zk_client.create(f"{zk_root}/b", j(2))
    with kazoo_session(zk_restartable.hosts) as lagging:
        lagging.create(f"{zk_root}/a", j(1), makepath=True)
    proxy = SwitchingProxy(zk_server.host, zk_server.port).start()
    try:
        client = make_client(proxy.hosts, zk_root)
        events: list[ConfigChange] = []
        client.subscribe("", events.append)
        client.start(timeout=10)
        assert client.wait_listeners(10)
        events.clear()
        old, behind = (zk_server.host, zk_server.port), (zk_restartable.host, zk_restartable.port)
        proxy.then(old, behind)  # the old session's reconnect learns it expired; the new one lands behind
        with caplog.at_level(logging.WARNING, logger="autoglm_runtime.config"):
            expire_session(kazoo_of(client), hosts=zk_hosts)
            until(lambda: client.health()["resyncs"] == 1, what="the resync on the server behind")
            assert client.wait_listeners(10)
            assert dict(client.snapshot()) == {"a": 1, "b": 2}
            assert [(e.key, e.kind) for e in events] == []
            assert coded(caplog, "ZooKeeper server is behind the cache")
            until(lambda: dict(client.snapshot()) == {"a": 1}, what="the rebuilt ensemble's tree")
            assert coded(caplog, "zxid regression: ZooKeeper at")
        assert client.wait_listeners(10)
        assert sorted((e.key, e.kind) for e in events) == [("a", "updated"), ("b", "deleted")]
        client.stop()
    finally:
        proxy.stop()


def test_resync_after_an_outage_longer_than_ttl_does_not_reread_the_tree(
    zk_root: str, zk_client: KazooClient, zk_proxy: FaultProxy, make_client: Factory, until: Until, clock: Any
) -> None:
    """setWatches confirmed the unchanged keys: their deadlines are renewed, so the reconciler has nothing to
    do after the resync (before the fix every key was expired and the whole tree was re-read)."""
    for pending in [zk_client.create_async(f"{zk_root}/k{i:03d}", j(1)) for i in range(200)]:
        pending.get(timeout=30)
    client = make_client(zk_proxy.hosts, zk_root, ttl=30.0)
    client.start(timeout=10)
    zk_proxy.refuse()
    zk_proxy.cut()
    until(lambda: not client.health()["connected"], what="the suspension")
    clock.advance(40)  # the outage outlasts every entry's TTL (at most ttl * 1.1)
    zk_client.set(f"{zk_root}/k001", j(2))
    reads = client.health()["reads"]
    zk_proxy.restore()
    until(lambda: client.health()["resyncs"] == 1, what="the resync")
    assert client.get("k001") == 2
    assert client._cache.expired(limit=10) == []  # type: ignore[attr-defined]
    assert client.health()["reads"] - reads < 20  # the changed key, not 400 reads of the whole tree
    assert client.health()["drift_corrected"] == 0


def test_large_values_are_loaded_in_answers_the_server_can_build(
    zk_restartable: ZooKeeperServer, make_client: Factory
) -> None:
    """The server builds a multiRead's whole answer in memory (and copies it) before sending it: one answer
    of 40 values of 1 MB exhausted the harness server's 256 MB heap, and the server exited (kazoo's TreeCache,
    one read per znode, loads the same tree). Reads of znodes of unknown size now share answers of 16 MB."""
    value = j("x" * 1_000_000)
    with kazoo_session(zk_restartable.hosts) as admin:
        admin.ensure_path("/big")
        for pending in [admin.create_async(f"/big/k{i:02d}", value) for i in range(40)]:
            pending.get(timeout=60)
    client = make_client(zk_restartable.hosts, "/big")
    client.start(timeout=30)
    assert len(client.snapshot()) == 40
    assert client.health()["requests"] < client.health()["reads"]  # still multiRead
    assert zk_restartable.mode() == "standalone"
