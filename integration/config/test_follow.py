"""Following a real ZooKeeper tree: load, nested changes, bursts, many keys, listeners, validation, drift."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Literal

import pytest
from integration.config._helpers import Factory, Until, j, kazoo_of, persistent_events_lost, server_watches
from kazoo.client import KazooClient

from autoglm_runtime import ConfigChange, ConfigClient
from autoglm_runtime.config import SyncTuning, ZooKeeperConnection
from autoglm_runtime.testing import wait_until
from autoglm_runtime.testing.zookeeper import ZooKeeperServer

from .conftest import FakeClock


@pytest.mark.zk_container
def test_loads_the_whole_tree_and_follows_every_level(
    zk_hosts: str, zk_root: str, zk_client: KazooClient, make_client: Factory, until: Until
) -> None:
    zk_client.create(f"{zk_root}/models/llm/context_window", j(4096), makepath=True)
    zk_client.create(f"{zk_root}/flag", b"")
    client = make_client(zk_hosts, zk_root)
    client.start(timeout=10)
    assert dict(client.snapshot()) == {
        "models": None,
        "models/llm": None,
        "models/llm/context_window": 4096,
        "flag": None,
    }
    events: list[ConfigChange] = []
    client.subscribe("", events.append)

    zk_client.create(f"{zk_root}/a/b/c/d/e", j("deep"), makepath=True)
    zk_client.set(f"{zk_root}/models/llm/context_window", j(8192))
    zk_client.delete(f"{zk_root}/flag")
    until(lambda: client.get("a/b/c/d/e") == "deep" and client.get("models/llm/context_window") == 8192)
    until(lambda: "flag" not in client.snapshot())
    zk_client.delete(f"{zk_root}/models", recursive=True)
    until(lambda: not any(k.startswith("models") for k in client.snapshot()))
    assert client.wait_listeners(10)
    seen = [(e.key, e.kind) for e in events]
    assert ("a/b/c/d/e", "added") in seen
    assert ("models/llm/context_window", "updated") in seen
    assert ("flag", "deleted") in seen
    assert {k for k, kind in seen if kind == "deleted"} == {"flag", "models", "models/llm", "models/llm/context_window"}
    assert sorted(client.snapshot()) == ["a", "a/b", "a/b/c", "a/b/c/d", "a/b/c/d/e"]
    assert client.version("a/b/c/d/e") == zk_client.exists(f"{zk_root}/a/b/c/d/e").mzxid


def test_burst_of_2000_updates_converges_on_the_last_value(
    zk_hosts: str, zk_root: str, zk_client: KazooClient, make_client: Factory, until: Until
) -> None:
    zk_client.create(f"{zk_root}/hot", j(0))
    client = make_client(zk_hosts, zk_root)
    client.start(timeout=10)
    versions: list[int] = []
    client.subscribe("hot", lambda change: versions.append(change.version))
    pending = [zk_client.set_async(f"{zk_root}/hot", j(i)) for i in range(1, 2001)]
    last = [p.get(timeout=30) for p in pending][-1]
    until(lambda: client.get("hot") == 2000, what="the last of 2000 updates")
    assert client.version("hot") == last.mzxid
    assert client.wait_listeners(10)
    assert versions == sorted(set(versions))  # never back, never twice
    assert versions[-1] == last.mzxid


def test_1000_keys_updated_concurrently(
    zk_hosts: str, zk_root: str, zk_client: KazooClient, make_client: Factory, until: Until
) -> None:
    for p in [zk_client.create_async(f"{zk_root}/k{i:04d}", j(0)) for i in range(1000)]:
        p.get(timeout=30)
    client = make_client(zk_hosts, zk_root)
    client.start(timeout=10)
    assert len(client.snapshot()) == 1000

    def writer(start: int) -> None:
        results = [zk_client.set_async(f"{zk_root}/k{i:04d}", j(i)) for i in range(start, 1000, 4)]
        for result in results:
            result.get(timeout=30)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    until(lambda: dict(client.snapshot()) == {f"k{i:04d}": i for i in range(1000)}, what="1000 updated keys")


def test_invalid_json_and_validator_rejection_keep_last_good(
    zk_hosts: str,
    zk_root: str,
    zk_client: KazooClient,
    make_client: Factory,
    until: Until,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def validator(key: str, value: Any) -> bool:
        return not (key == "limit" and isinstance(value, int) and value < 0)

    zk_client.create(f"{zk_root}/limit", j(10))
    client = make_client(zk_hosts, zk_root, validator=validator)
    client.start(timeout=10)
    with caplog.at_level(logging.WARNING, logger="autoglm_runtime.config"):
        zk_client.set(f"{zk_root}/limit", b"{broken")
        until(lambda: client.health()["rejected"] == 1)
        zk_client.set(f"{zk_root}/limit", j(-1))
        until(lambda: client.health()["rejected"] == 2)
        zk_client.create(f"{zk_root}/after", j("sync goes on"))
        until(lambda: client.get("after") == "sync goes on")
    assert client.get("limit") == 10
    rejected = [r for r in caplog.records if getattr(r, "error_code", None) == "E0409"]
    assert [r.getMessage() for r in rejected] == [
        "config update for 'limit' rejected, keeping the last good value: the json codec cannot decode it: "
        "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        "config update for 'limit' rejected, keeping the last good value: the validator rejected it: it returned False",
    ]
    assert [r.key for r in rejected] == ["limit", "limit"]  # type: ignore[attr-defined]
    zk_client.set(f"{zk_root}/limit", j(20))
    until(lambda: client.get("limit") == 20)


def test_raising_and_slow_listeners_never_hold_up_the_cache(
    zk_hosts: str, zk_root: str, zk_client: KazooClient, make_client: Factory, until: Until
) -> None:
    zk_client.create(f"{zk_root}/v", j(0))
    client = make_client(zk_hosts, zk_root)
    client.start(timeout=10)
    release = threading.Event()
    in_slow = threading.Event()
    good: list[ConfigChange] = []

    def raising(change: ConfigChange) -> None:
        raise RuntimeError("listener bug")

    def slow(change: ConfigChange) -> None:
        in_slow.set()
        release.wait(30)

    client.subscribe("", raising)
    client.subscribe("", slow)
    client.subscribe("", good.append)
    try:
        zk_client.set(f"{zk_root}/v", j(1))
        assert in_slow.wait(10)
        zk_client.set(f"{zk_root}/v", j(2))
        until(lambda: client.get("v") == 2)  # the cache moved on while the slow listener still runs
        assert good == []
    finally:
        release.set()
    assert client.wait_listeners(10)
    assert [(c.old, c.new) for c in good] == [(0, 1), (1, 2)]


@pytest.mark.parametrize("watch_mode", ["auto", "per_node"])
def test_reconciler_corrects_drift_from_a_missed_watch(
    watch_mode: str,
    zk_hosts: str,
    zk_root: str,
    zk_client: KazooClient,
    make_client: Factory,
    until: Until,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    zk_client.create(f"{zk_root}/k", j("before"))
    client = make_client(zk_hosts, zk_root, ttl=30.0, watch_mode=watch_mode)
    client.start(timeout=10)
    assert client.health()["watch_mode"] == ("persistent" if watch_mode == "auto" else "per_node")
    kazoo = kazoo_of(client)
    path = f"{zk_root}/k"
    # Lose the server's notification for the next write on the client side.
    if watch_mode == "per_node":
        assert kazoo._data_watchers.pop(path)  # our one-shot watch: the notification reaches no one
        zk_client.set(path, j("after"))
    else:
        with persistent_events_lost(kazoo, path):
            zk_client.set(path, j("after"))
    zk_client.create(f"{zk_root}/marker", b"")  # reported after the lost event
    until(lambda: "marker" in client.snapshot())
    assert client.get("k") == "before"
    with caplog.at_level(logging.WARNING, logger="autoglm_runtime.config"):
        clock.advance(34)  # past ttl * 1.1, the latest jittered deadline
        until(lambda: client.health()["drift_corrected"] == 1, what="drift correction")
    assert client.get("k") == "after"
    [record] = [r for r in caplog.records if r.getMessage().startswith("drift corrected")]
    assert record.getMessage() == "drift corrected: 'k' differed from ZooKeeper (a watch was missed)"
    assert (record.error_code, record.key) == ("E0409", "k")  # type: ignore[attr-defined]
    assert "after" not in json.dumps(record.value)  # type: ignore[attr-defined]
    # the re-read armed the watch again: the next write arrives without the reconciler
    zk_client.set(path, j("again"))
    until(lambda: client.get("k") == "again")
    assert client.health()["drift_corrected"] == 1


@pytest.mark.zk_container
@pytest.mark.parametrize("watch_mode", ["auto", "per_node"])
def test_stop_leaves_no_thread_and_no_watch(
    watch_mode: Literal["auto", "per_node"],
    zk_server: ZooKeeperServer,
    zk_hosts: str,
    zk_root: str,
    zk_client: KazooClient,
) -> None:
    zk_client.create(f"{zk_root}/a/b", j(1), makepath=True)
    before = set(threading.enumerate())
    kazoo = ZooKeeperConnection().kazoo_client(zk_hosts)
    client = ConfigClient(
        zk_hosts, zk_root, snapshot_path=None, client_factory=lambda: kazoo, tuning=SyncTuning(watch_mode=watch_mode)
    )
    client.start(timeout=10)
    session = f"0x{kazoo.client_id[0]:x}"
    if watch_mode == "per_node":
        assert f"{zk_root}/a/b" in kazoo._data_watchers
        assert f"{zk_root}/a" in kazoo._child_watchers
        assert {f"{zk_root}/a", f"{zk_root}/a/b"} <= server_watches(zk_server)[session]
    else:
        # One persistent recursive watch on the root, nothing per znode, on either side.
        assert not any(path.startswith(zk_root) for path in kazoo._data_watchers)
        assert not any(path.startswith(zk_root) for path in kazoo._child_watchers)
        assert server_watches(zk_server)[session] == {zk_root}
    assert {t.name for t in set(threading.enumerate()) - before} >= {
        "autoglm-config-sync",
        "autoglm-config-dispatch",
        "autoglm-config-reconcile",
    }
    client.stop()
    assert not any(path.startswith(zk_root) for path in kazoo._data_watchers)
    assert not any(path.startswith(zk_root) for path in kazoo._child_watchers)

    # The server side: the session is gone, and with it every watch it held (the server may answer wchc a moment
    # before it has finished closing the session, e.g. behind a container's port forwarding: poll).
    def no_watch_left() -> bool:
        watches = server_watches(zk_server)
        return session not in watches and not any(p.startswith(zk_root) for paths in watches.values() for p in paths)

    wait_until(no_watch_left, timeout=10, what="the server dropping the closed session's watches")
    assert set(threading.enumerate()) - before == set()


@pytest.mark.parametrize("bulk_reads", [True, False], ids=["multiread", "one-by-one"])
def test_load_while_writes_are_in_flight_loses_nothing(
    zk_hosts: str, zk_root: str, zk_client: KazooClient, make_client: Factory, until: Until, bulk_reads: bool
) -> None:
    """Changes landing between a read and the arming of its watch are not lost (no TTL help: ttl is huge)."""
    names = [f"g{i // 50}/k{i}" for i in range(400)]
    for group in range(8):
        zk_client.create(f"{zk_root}/g{group}")
    for p in [zk_client.create_async(f"{zk_root}/{n}", j(0)) for n in names]:
        p.get(timeout=30)
    stop = threading.Event()
    final: dict[str, int] = {}

    def writer() -> None:
        round_ = 0
        while not stop.is_set():
            round_ += 1
            for p in [zk_client.set_async(f"{zk_root}/{n}", j(round_)) for n in names[round_ % 7 :: 7]]:
                p.get(timeout=30)
            for n in names[round_ % 7 :: 7]:
                final[n] = round_

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        client = make_client(zk_hosts, zk_root, ttl=3600.0, bulk_reads=bulk_reads)
        client.start(timeout=20)
        assert client.health()["keys"] == 408
    finally:
        stop.set()
        thread.join()
    expected = {n: final.get(n, 0) for n in names}
    until(lambda: {n: client.get(n) for n in names} == expected, what="every in-flight write")
    assert client.health()["drift_corrected"] == 0


def test_root_created_after_start_and_deleted_again(
    zk_hosts: str, zk_root: str, zk_client: KazooClient, make_client: Factory, until: Until
) -> None:
    root = f"{zk_root}/later"
    client = make_client(zk_hosts, root)
    client.start(timeout=10)
    assert dict(client.snapshot()) == {}
    zk_client.create(f"{root}/a/b", j("b"), makepath=True)
    until(lambda: client.get("a/b") == "b", what="keys under a root created after start")
    zk_client.delete(root, recursive=True)
    until(lambda: dict(client.snapshot()) == {}, what="keys gone with the root")
    zk_client.create(f"{root}/c", j("c"), makepath=True)
    until(lambda: dict(client.snapshot()) == {"c": "c"}, what="a recreated root followed again")


def test_chrooted_hosts(
    zk_hosts: str, zk_root: str, zk_client: KazooClient, make_client: Factory, until: Until
) -> None:
    zk_client.create(f"{zk_root}/cfg")
    for p in [zk_client.create_async(f"{zk_root}/cfg/k{i}", j(i)) for i in range(40)]:
        p.get(timeout=30)
    client = make_client(f"{zk_hosts}{zk_root}", "/cfg")
    client.start(timeout=10)
    assert dict(client.snapshot()) == {f"k{i}": i for i in range(40)}
    assert client.health()["requests"] < client.health()["reads"]  # loaded with multiRead through the chroot
    zk_client.set(f"{zk_root}/cfg/k7", j("seven"))
    until(lambda: client.get("k7") == "seven", what="an update under the chroot")
