"""Snapshots against a real server (down at start, corrupt, foreign) and ACL-protected trees."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration._helpers import kazoo_session
from integration.config._helpers import Factory, Until, j, kazoo_of
from kazoo.client import KazooClient
from kazoo.protocol.states import KazooState
from kazoo.security import make_digest_acl
from prometheus_client import CollectorRegistry

from autoglm_runtime import ConfigChange
from autoglm_runtime.config import ConfigHealth, read_snapshot
from autoglm_runtime.errors import ConfigAccessError, ConfigUnavailableError, SnapshotError
from autoglm_runtime.observability import ConfigMetrics
from autoglm_runtime.testing.proxy import FaultProxy
from autoglm_runtime.testing.zookeeper import ZooKeeperServer

from .conftest import FakeClock


def snapshot_keys(path: Path, hosts: str, root: str) -> dict[str, bytes]:
    try:
        return {k: e.data for k, e in read_snapshot(path, hosts=hosts, root=root).entries.items()}
    except SnapshotError:
        return {}


@pytest.mark.zk_container
def test_zookeeper_down_at_start_serves_the_snapshot_then_converges(
    zk_restartable: ZooKeeperServer, tmp_path: Path, make_client: Factory, until: Until, clock: FakeClock
) -> None:
    hosts, path = zk_restartable.hosts, tmp_path / "cfg.snapshot"
    with kazoo_session(hosts, start_timeout=10) as admin:
        admin.create("/cfg/a", j(1), makepath=True)
        admin.create("/cfg/b", j(2))
        first = make_client(hosts, "/cfg", snapshot_path=path, snapshot_debounce=0.05)
        first.start(timeout=10)
        until(lambda: snapshot_keys(path, hosts, "/cfg") == {"a": j(1), "b": j(2)}, what="snapshot written")
        first.stop()
        admin.set("/cfg/a", j(10))
        admin.delete("/cfg/b")
        admin.create("/cfg/c", j(3))
    zk_restartable.stop()

    client = make_client(hosts, "/cfg", snapshot_path=path, snapshot_debounce=0.05)
    client.start(timeout=1.0)
    events: list[ConfigChange] = []
    client.subscribe("", events.append)
    assert dict(client.snapshot()) == {"a": 1, "b": 2}
    clock.advance(42)
    health = client.health()
    assert (health["source"], health["connected"]) == ("snapshot", False)
    assert 42.0 < health["stale_seconds"] < 42.0 + 60  # since the snapshot was written, moments before the start

    zk_restartable.start()
    until(lambda: client.health()["source"] == "zookeeper", what="convergence once ZooKeeper is up")
    assert dict(client.snapshot()) == {"a": 10, "c": 3}
    assert client.health()["stale_seconds"] == 0.0
    assert client.wait_listeners(10)
    assert sorted((e.key, e.kind, e.old, e.new) for e in events) == [
        ("a", "updated", 1, 10),
        ("b", "deleted", 2, None),
        ("c", "added", None, 3),
    ]
    until(lambda: snapshot_keys(path, hosts, "/cfg") == {"a": j(10), "c": j(3)}, what="snapshot rewritten")


def test_zookeeper_down_at_start_without_snapshot(zk_restartable: ZooKeeperServer, make_client: Factory) -> None:
    hosts = zk_restartable.hosts
    zk_restartable.stop()
    client = make_client(hosts, "/cfg", snapshot_path="/nonexistent/cfg.snapshot")
    with pytest.raises(ConfigUnavailableError) as info:
        client.start(timeout=0.5)
    assert info.value.message == (
        f"ZooKeeper at {hosts} could not be reached (or root /cfg loaded) within 0.5 s and no snapshot exists at "
        "/nonexistent/cfg.snapshot: start ZooKeeper, check hosts, or give a snapshot_path with a valid snapshot"
    )


@pytest.mark.parametrize("damage", ["corrupt", "foreign"])
def test_refused_snapshots_with_zookeeper_down(
    zk_restartable: ZooKeeperServer, tmp_path: Path, make_client: Factory, until: Until, damage: str
) -> None:
    hosts, path = zk_restartable.hosts, tmp_path / "cfg.snapshot"
    with kazoo_session(hosts, start_timeout=10) as admin:
        admin.create("/cfg/a", j(1), makepath=True)
    writer = make_client(hosts, "/cfg", snapshot_path=path, snapshot_debounce=0.05)
    writer.start(timeout=10)
    until(lambda: snapshot_keys(path, hosts, "/cfg") == {"a": j(1)}, what="snapshot written")
    writer.stop()
    zk_restartable.stop()
    if damage == "corrupt":
        data = bytearray(path.read_bytes())
        data[data.index(b'"a"') + 1] = ord("b")  # rename a key behind the checksum's back
        path.write_bytes(bytes(data))
        reason = "was altered: its sha256 checksum does not match its content; it was not loaded"
        client = make_client(hosts, "/cfg", snapshot_path=path)
    else:
        reason = f"belongs to hosts {hosts!r} root '/cfg', not hosts {hosts!r} root '/other'; it was not loaded"
        client = make_client(hosts, "/other", snapshot_path=path)
    with pytest.raises(SnapshotError) as info:
        client.start(timeout=0.5)
    root = "/cfg" if damage == "corrupt" else "/other"
    assert info.value.message == (
        f"snapshot {path} {reason}; ZooKeeper at {hosts} (root {root}) could not be reached within 0.5 s, so there "
        "is nothing to serve"
    )
    assert client.snapshot() == {}


def test_corrupt_snapshot_is_replaced_when_zookeeper_is_up(
    zk_hosts: str, zk_root: str, zk_client: KazooClient, tmp_path: Path, make_client: Factory, until: Until
) -> None:
    path = tmp_path / "cfg.snapshot"
    path.write_bytes(b'{"format": "autoglm-config-snapshot/1", "hos')
    zk_client.create(f"{zk_root}/a", j(1))
    client = make_client(zk_hosts, zk_root, snapshot_path=path, snapshot_debounce=0.05)
    client.start(timeout=10)
    assert client.get("a") == 1
    until(lambda: snapshot_keys(path, zk_hosts, zk_root) == {"a": j(1)}, what="valid snapshot written")


@pytest.fixture
def protected_root(zk_hosts: str, zk_root: str) -> Iterator[str]:
    """``zk_root``/public is open; ``zk_root``/secret is readable only by digest user reader:s3cret.

    Twenty open siblings ``p00``..``p19`` make the level large enough to be read with multiRead, so the
    denial arrives as one error among many answers of a bulk request."""
    with kazoo_session(zk_hosts, start_timeout=10, auth_data=[("digest", "reader:s3cret")]) as owner:
        owner.create(f"{zk_root}/public", j("open"))
        for i in range(20):
            owner.create(f"{zk_root}/p{i:02d}", j(i))
        owner.create(f"{zk_root}/secret", j("hidden"), acl=[make_digest_acl("reader", "s3cret", all=True)])
        yield zk_root
        owner.delete(f"{zk_root}/secret")  # zk_root's own cleanup has no credentials for it


def test_acl_with_the_right_credentials(zk_hosts: str, protected_root: str, make_client: Factory) -> None:
    client = make_client(zk_hosts, protected_root, auth=("digest", "reader:s3cret"))
    client.start(timeout=10)
    siblings = {f"p{i:02d}": i for i in range(20)}
    assert dict(client.snapshot()) == {"public": "open", "secret": "hidden", **siblings}
    assert client.health()["requests"] < client.health()["reads"]  # the level went out as multiRead


@pytest.mark.parametrize("auth", [None, ("digest", "reader:wrong")])
def test_acl_without_or_with_wrong_credentials(
    zk_hosts: str, protected_root: str, make_client: Factory, auth: tuple[str, str] | None
) -> None:
    client = make_client(zk_hosts, protected_root, auth=auth)
    with pytest.raises(ConfigAccessError) as info:
        client.start(timeout=10)
    assert info.value.message == (
        f"ZooKeeper at {zk_hosts} denied reading {protected_root}/secret under root {protected_root}: check the "
        "credentials (auth=) and the ACLs of those nodes"
    )
    assert info.value.code == "E0409"
    # What it refused, for a caller to report; what it could read stays readable (config dump prints it).
    assert info.value.paths == (f"{protected_root}/secret",)
    assert dict(client.snapshot()) == {"public": "open", **{f"p{i:02d}": i for i in range(20)}}


def test_a_start_that_allows_denied_znodes_follows_the_rest(
    zk_hosts: str, zk_client: KazooClient, protected_root: str, make_client: Factory, until: Until
) -> None:
    client = make_client(zk_hosts, protected_root)
    client.start(timeout=10, allow_denied=True)
    assert client.denied == (f"{protected_root}/secret",)
    assert client.health()["state"] == "running"
    zk_client.set(f"{protected_root}/public", j("changed"))
    until(lambda: client.get("public") == "changed", what="a readable key followed")
    assert "secret" not in client.snapshot()


@pytest.mark.parametrize("watch_mode", ["per_node", "auto"])
def test_a_denied_znode_is_said_once_and_not_read_again_at_each_verification(
    zk_hosts: str,
    protected_root: str,
    make_client: Factory,
    until: Until,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    watch_mode: str,
) -> None:
    client = make_client(zk_hosts, protected_root, ttl=30.0, reconcile_rate=1000.0, watch_mode=watch_mode)
    secret = f"{protected_root}/secret"
    with caplog.at_level(logging.WARNING, logger="autoglm_runtime.config"):
        client.start(timeout=10, allow_denied=True)
        assert client.health()["denied"] == [secret]
        rounds = []
        for _ in range(3):
            before = client.health()["reads"]
            clock.advance(34)  # every entry (and the root's child list) is due
            until(
                lambda: all(client._cache.deadline(k) > clock() for k in ["", *client.snapshot()]),  # type: ignore[attr-defined,operator]
                what="every key confirmed",
            )
            rounds.append(client.health()["reads"] - before)
    # Per node a data and a child-list read per key (the root: its child list), under a persistent watch one
    # exists each; never the denied znode again (before: read at each verification, per node, and said each time).
    assert rounds == ([21 * 2 + 1] * 3 if watch_mode == "per_node" else [22] * 3)
    said = [r for r in caplog.records if r.getMessage().startswith("ZooKeeper denied reading")]
    assert [r.getMessage() for r in said] == [
        f"ZooKeeper denied reading {secret}; keeping the last known values of it and everything under it"
    ]
    assert client.health()["denied"] == [secret]


@pytest.mark.parametrize("watch_mode", ["per_node", "auto"])
def test_a_denied_znode_deleted_leaves_health_denied(
    zk_hosts: str, protected_root: str, make_client: Factory, until: Until, clock: FakeClock, watch_mode: str
) -> None:
    acl = [make_digest_acl("reader", "s3cret", all=True)]
    secret, gone = f"{protected_root}/secret", f"{protected_root}/gone"
    with kazoo_session(zk_hosts, start_timeout=10, auth_data=[("digest", "reader:s3cret")]) as owner:
        owner.create(gone, j("hidden"), acl=acl)
        client = make_client(zk_hosts, protected_root, watch_mode=watch_mode)
        client.start(timeout=10, allow_denied=True)
        assert (client.denied, client.health()["denied"]) == ((gone, secret), [gone, secret])
        owner.delete(gone)
        # Per node, the root's child watch reports it; a persistent watch reports nothing of a znode the client may
        # not read (servers check the ACL before notifying): the verification of the root's child list finds it gone.
        clock.advance(34)
        until(lambda: client.health()["denied"] == [secret], what="the deleted znode out of health()['denied']")
        assert client.denied == (gone, secret)  # what the start was refused, as it was


def test_a_client_on_its_snapshot_is_connected_before_it_follows_zookeeper(
    zk_proxy: FaultProxy, zk_root: str, zk_client: KazooClient, tmp_path: Path, make_client: Factory, until: Until
) -> None:
    hosts, path = zk_proxy.hosts, tmp_path / "cfg.snapshot"
    zk_client.create(f"{zk_root}/a", j(1))
    writer = make_client(hosts, zk_root, snapshot_path=path, snapshot_debounce=0.05)
    writer.start(timeout=10)
    until(lambda: snapshot_keys(path, hosts, zk_root) == {"a": j(1)}, what="snapshot written")
    writer.stop()
    zk_client.set(f"{zk_root}/a", j(2))
    zk_proxy.refuse()
    client = make_client(hosts, zk_root, snapshot_path=path)
    client.start(timeout=0.5)
    health = client.health()
    assert (health["source"], health["connected"], health["following"]) == ("snapshot", False, False)

    def stall(state: KazooState) -> None:
        # Runs on kazoo's connection thread right after the handshake, before it can send the load's first read.
        if state == KazooState.CONNECTED:
            zk_proxy.set_delay(3600)

    kazoo_of(client).add_listener(stall)
    zk_proxy.restore()
    seen: list[ConfigHealth] = []
    until(lambda: seen.append(client.health()) or seen[-1]["connected"], what="the session CONNECTED")
    assert (seen[-1]["source"], seen[-1]["following"], client.get("a")) == ("snapshot", False, 1)

    kazoo_of(client).remove_listener(stall)
    zk_proxy.set_delay(0)
    zk_proxy.cut()  # the stalled connection: the client reconnects and loads
    until(lambda: client.health()["following"], what="the load from ZooKeeper")
    health = client.health()
    assert (health["source"], health["connected"], health["stale_seconds"], client.get("a")) == (
        "zookeeper",
        True,
        0.0,
        2,
    )


def test_denied_znodes_are_counted_in_a_gauge(
    zk_hosts: str, protected_root: str, make_client: Factory, until: Until, clock: FakeClock
) -> None:
    gone = f"{protected_root}/gone"
    registry = CollectorRegistry()
    with kazoo_session(zk_hosts, start_timeout=10, auth_data=[("digest", "reader:s3cret")]) as owner:
        owner.create(gone, j("hidden"), acl=[make_digest_acl("reader", "s3cret", all=True)])
        client = make_client(zk_hosts, protected_root)
        client.start(timeout=10, allow_denied=True)
        with ConfigMetrics(client, registry=registry):
            denied = registry.get_sample_value("autoglm_config_denied_znodes", {"root": protected_root})
            assert (denied, client.health()["denied"]) == (2.0, [gone, f"{protected_root}/secret"])
            owner.delete(gone)
            clock.advance(34)  # the verification of the root's child list finds it gone
            until(lambda: len(client.health()["denied"]) == 1, what="the deleted znode out of health()['denied']")
            assert registry.get_sample_value("autoglm_config_denied_znodes", {"root": protected_root}) == 1.0


def test_a_client_that_may_read_everything_exports_no_denied_znode(
    zk_hosts: str, protected_root: str, make_client: Factory
) -> None:
    registry = CollectorRegistry()
    client = make_client(zk_hosts, protected_root, auth=("digest", "reader:s3cret"))
    client.start(timeout=10)
    with ConfigMetrics(client, registry=registry):
        assert registry.get_sample_value("autoglm_config_denied_znodes", {"root": protected_root}) == 0.0
