"""No silent wrong state (issue 15, section 2): each test failed on the code before its fix."""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from integration.config._helpers import Factory, Until, j
from integration.config.conftest import FakeClock
from kazoo.client import KazooClient

from autoglm_runtime.config import SnapshotEntry, write_snapshot
from autoglm_runtime.errors import ReadOnlyValueError
from autoglm_runtime.testing.zookeeper import ZooKeeperServer


def _restore(
    zk: KazooClient, root: str, keys: dict[str, object], *, one: bool, between: Callable[[], None] = lambda: None
) -> None:
    """An operator's restore: the whole tree deleted in one transaction, created again in the same or the next
    one (``between`` runs in between)."""
    tx = zk.transaction()
    for key in sorted(keys, key=lambda k: -k.count("/")):
        tx.delete(f"{root}/{key}")
    tx.delete(root)
    if not one:
        tx.commit()
        between()
        tx = zk.transaction()
    tx.create(root, b"")
    for key in sorted(keys, key=lambda k: k.count("/")):
        tx.create(f"{root}/{key}", j(keys[key]))
    tx.commit()


@pytest.mark.parametrize("how", ["one-transaction", "two-transactions", "seen-missing"])
def test_root_deleted_and_restored_in_transactions_is_followed(
    how: str, zk_hosts: str, zk_root: str, zk_client: KazooClient, make_client: Factory, until: Until
) -> None:
    keys: dict[str, object] = {f"k{i}": i for i in range(200)} | {"d": None, "d/x": "x", "d/x/y": 1}
    for key in sorted(keys, key=lambda k: k.count("/")):
        zk_client.create(f"{zk_root}/{key}", j(keys[key]))
    client = make_client(zk_hosts, zk_root)  # the fake clock never expires a TTL: only watches can help
    client.start(timeout=10)
    for round_ in range(1, 4):
        keys = {k: (v if not isinstance(v, int) else v + round_) for k, v in keys.items()}

        # "seen-missing": the client noticed the empty root before the restore.
        def seen() -> None:
            if how == "seen-missing":
                until(lambda: len(client.snapshot()) == 0, what="the deletion")

        _restore(zk_client, zk_root, keys, one=how == "one-transaction", between=seen)
        until(lambda keys=keys: dict(client.snapshot()) == keys, timeout=15, what=f"the restored tree (round {round_})")
    zk_client.create(f"{zk_root}/k0/after", j(1))
    until(lambda: client.get("k0/after") == 1, what="a child created after the restores")
    health = client.health()
    assert (health["connected"], health["stale_seconds"], health["root_missing"]) == (True, 0.0, False)
    assert set(health["resync_reasons"]) <= {"root_recreated"}  # never counted as a reconnect
    # At most once per restore: only a restore the client saw with its root missing is counted (a client that
    # reads the root again only after it is back sees a changed tree, not a missing root).
    assert health["resync_reasons"].get("root_recreated", 0) <= 3


def test_a_root_that_does_not_exist_is_said(
    zk_hosts: str,
    zk_root: str,
    zk_client: KazooClient,
    make_client: Factory,
    until: Until,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="autoglm_runtime.config")
    client = make_client(zk_hosts, f"{zk_root}/typo")
    client.start(timeout=10)
    health = client.health()
    assert (health["keys"], health["root_missing"], health["connected"]) == (0, True, True)
    said = [r for r in caplog.records if getattr(r, "error_code", "") == "E0409"]
    assert [r.getMessage() for r in said] == [
        f"config root {zk_root}/typo does not exist on ZooKeeper at {zk_hosts}: serving no keys (check the root "
        "for a typo); it is loaded as soon as it is created (health()['root_missing'] is True until then)"
    ]
    zk_client.create(f"{zk_root}/typo/a", j(1), makepath=True)
    until(lambda: client.get("a") == 1, what="the root created later")
    until(lambda: not client.health()["root_missing"], what="root_missing cleared")
    # A root created is a change of the tree: counted as such, never as a reconnect.
    until(lambda: client.health()["resync_reasons"] == {"root_recreated": 1}, what="the resync counted")


def test_create_delete_churn_without_a_fault_is_no_drift(
    zk_hosts: str, zk_root: str, zk_client: KazooClient, make_client: Factory, until: Until, clock: FakeClock
) -> None:
    for i in range(20):
        zk_client.create(f"{zk_root}/c{i}", j(i))
    client = make_client(zk_hosts, zk_root, ttl=1.0, reconcile_rate=100_000.0)
    client.start(timeout=10)
    rng = random.Random(15)
    present = set(range(20))
    for _ in range(1500):
        i = rng.randrange(40)
        if i in present:
            zk_client.delete(f"{zk_root}/c{i}")
            present.discard(i)
        else:
            zk_client.create(f"{zk_root}/c{i}", j(i))
            present.add(i)
        clock.advance(2.0)  # every entry is due for the safety net all the time
    zk_client.sync(zk_root)
    until(lambda: dict(client.snapshot()) == {f"c{i}": i for i in present}, what="the tree after the churn")
    assert client.health()["drift_corrected"] == 0


def test_a_week_old_snapshot_is_a_week_stale(
    zk_restartable: ZooKeeperServer, tmp_path: Path, make_client: Factory, clock: FakeClock
) -> None:
    path = tmp_path / "cfg.snapshot"
    week = 7 * 86400.0
    entries = {"a": SnapshotEntry(j(1), 5, 5)}
    write_snapshot(path, hosts=zk_restartable.hosts, root="/cfg", entries=entries, written_at=time.time() - week)
    zk_restartable.stop()
    client = make_client(zk_restartable.hosts, "/cfg", snapshot_path=path)
    client.start(timeout=0.5)
    assert client.get("a") == 1
    stale = client.health()["stale_seconds"]
    assert week <= stale < week + 60
    clock.advance(10)
    assert client.health()["stale_seconds"] == stale + 10


def test_a_value_is_not_shared_mutable(
    zk_hosts: str, zk_root: str, zk_client: KazooClient, make_client: Factory, until: Until
) -> None:
    zk_client.create(f"{zk_root}/models", j({"names": ["a", "b"], "limits": {"rpm": 10}}))
    client = make_client(zk_hosts, zk_root)
    client.start(timeout=10)
    value = client.get("models")
    with pytest.raises(ReadOnlyValueError):
        value["names"].append("c")
    with pytest.raises(ReadOnlyValueError):
        client.snapshot()["models"]["limits"]["rpm"] = 0
    mine = copy.deepcopy(value)
    mine["names"].append("c")
    assert client.get("models") == {"names": ["a", "b"], "limits": {"rpm": 10}}
    assert dict(client.snapshot()) == {"models": {"names": ["a", "b"], "limits": {"rpm": 10}}}


@pytest.mark.parametrize("watch_mode", ["auto", "per_node"])
def test_values_and_children_changing_together_without_a_fault_is_no_drift(
    watch_mode: str,
    zk_hosts: str,
    zk_root: str,
    zk_client: KazooClient,
    make_client: Factory,
    until: Until,
    clock: FakeClock,
) -> None:
    """A parent's value and its child list change close together while the safety net re-reads it all the
    time: a watch event whose re-read is still to come must never be taken for drift (before the fix, applying
    the re-read of one event, or starting the re-read of another, forgot the newer event)."""
    for p in range(8):
        zk_client.create(f"{zk_root}/p{p}", j(0))
    client = make_client(
        zk_hosts, zk_root, ttl=1.0, reconcile_rate=100_000.0, reconcile_interval=0.005, watch_mode=watch_mode
    )
    client.start(timeout=10)
    rng = random.Random(17)
    expected: dict[str, int] = {f"p{p}": 0 for p in range(8)}
    for n in range(2000):
        p = rng.randrange(8)
        child = f"p{p}/c{rng.randrange(3)}"
        if rng.random() < 0.5:
            zk_client.set(f"{zk_root}/p{p}", j(n))
            expected[f"p{p}"] = n
        elif child in expected:
            zk_client.delete(f"{zk_root}/{child}")
            del expected[child]
        else:
            zk_client.create(f"{zk_root}/{child}", j(n))
            expected[child] = n
        clock.advance(2.0)  # every entry is due for the safety net all the time
    zk_client.sync(zk_root)
    until(lambda: dict(client.snapshot()) == expected, what="the tree after the churn")
    assert client.health()["drift_corrected"] == 0
