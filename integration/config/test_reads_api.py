"""The reads users ask for (issue 15, section 4), against a real ZooKeeper."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest
from integration.config._helpers import Factory, Until, j, kazoo_of
from kazoo.client import KazooClient
from pydantic import BaseModel

from autoglm_runtime import ConfigClient
from autoglm_runtime.config import ConfigChange, SnapshotEntry, write_snapshot
from autoglm_runtime.errors import ConfigTimeoutError, ConfigTypeError, ConfigUnavailableError, UsageError
from autoglm_runtime.testing.zookeeper import ZooKeeperServer


def test_typed_reads_refuse_a_wrong_type(
    zk_hosts: str, zk_root: str, zk_client: KazooClient, make_client: Factory
) -> None:
    for key, value in {"n": 5, "x": 1.5, "on": True, "s": "true"}.items():
        zk_client.create(f"{zk_root}/{key}", j(value))
    client = make_client(zk_hosts, zk_root)
    client.start(timeout=10)
    assert (client.get_int("n"), client.get_float("x"), client.get_float("n"), client.get_bool("on")) == (
        5,
        1.5,
        5.0,
        True,
    )
    assert client.get_str("s") == "true"
    assert client.get_int("missing", 7) == 7
    with pytest.raises(ConfigTypeError) as info:
        client.get_bool("s")
    assert info.value.code == "E0409"
    assert info.value.message == (
        f"config key 's' under {zk_root} holds str 'true', not bool: fix the value in ZooKeeper or read it with get()"
    )
    with pytest.raises(ConfigTypeError, match="holds bool True, not int"):
        client.get_int("on")
    with pytest.raises(ConfigTypeError) as info:
        client.get_str("missing")
    assert info.value.message == f"config key 'missing' does not exist under {zk_root}: no str to return"


def test_wait_for_a_value_and_its_timeout(
    zk_hosts: str, zk_root: str, zk_client: KazooClient, make_client: Factory
) -> None:
    zk_client.create(f"{zk_root}/rollout", j(10))
    client = make_client(zk_hosts, zk_root)
    client.start(timeout=10)
    writer = threading.Thread(target=lambda: [zk_client.set(f"{zk_root}/rollout", j(p)) for p in (20, 50, 80)])
    writer.start()
    assert client.wait_for("rollout", lambda percent: percent >= 50, timeout=30) >= 50
    writer.join()
    with pytest.raises(ConfigTimeoutError) as info:
        client.wait_for("absent", timeout=0.2)
    assert isinstance(info.value, TimeoutError)
    assert info.value.message == f"config key 'absent' under {zk_root} does not exist; waited 0.2 s for it to exist"


def test_get_and_subscribe_misses_and_repeats_nothing(
    zk_hosts: str, zk_root: str, zk_client: KazooClient, make_client: Factory, until: Until
) -> None:
    zk_client.create(f"{zk_root}/n", j(0))
    client = make_client(zk_hosts, zk_root)
    client.start(timeout=10)
    writer = threading.Thread(target=lambda: [zk_client.set(f"{zk_root}/n", j(i)) for i in range(1, 201)])
    writer.start()
    until(lambda: client.get("n", 0) >= 20, what="the writes under way")
    events: list[ConfigChange] = []
    view, unsubscribe = client.get_and_subscribe("n", events.append)
    writer.join()
    until(lambda: client.get("n") == 200, what="the last write")
    assert client.wait_listeners(10)
    unsubscribe()
    chain = [view["n"]] + [e.new for e in events]
    assert [e.old for e in events] == chain[:-1]  # every change after the view, in order, once
    assert chain[-1] == 200


def test_a_listener_subscribed_behind_a_slow_one_sees_only_later_changes(
    zk_hosts: str, zk_root: str, zk_client: KazooClient, make_client: Factory, until: Until
) -> None:
    """Changes applied before subscribe() but not yet delivered (a slow listener held the queue) reached the new
    listener: after reading 2 with get() it was told "1 -> 2" later on, an update it had already seen."""
    zk_client.create(f"{zk_root}/n", j(0))
    client = make_client(zk_hosts, zk_root)
    client.start(timeout=10)
    release = threading.Event()
    client.subscribe("", lambda change: release.wait(10))
    zk_client.set(f"{zk_root}/n", j(1))
    zk_client.set(f"{zk_root}/n", j(2))
    until(lambda: client.get("n") == 2, what="both writes applied")
    late: list[ConfigChange] = []
    client.subscribe("n", late.append)
    release.set()
    assert client.wait_listeners(10)
    assert late == []
    zk_client.set(f"{zk_root}/n", j(3))
    until(lambda: client.get("n") == 3, what="the write after subscribing")
    assert client.wait_listeners(10)
    assert [(e.old, e.new) for e in late] == [(2, 3)]


def test_changes_as_an_async_iterator(
    zk_hosts: str, zk_root: str, zk_client: KazooClient, make_client: Factory
) -> None:
    client = make_client(zk_hosts, zk_root)
    client.start(timeout=10)

    def write() -> None:
        for name in "ab":
            zk_client.create(f"{zk_root}/m/{name}", j(name), makepath=True)

    async def follow() -> list[tuple[str, str, object]]:
        changes = client.changes("m/")
        first = asyncio.ensure_future(anext(changes))
        await asyncio.sleep(0)  # the iterator subscribed before the writes
        await asyncio.get_running_loop().run_in_executor(None, write)
        seen = [await first]
        async for change in changes:
            seen.append(change)
            if len(seen) == 2:
                break
        await changes.aclose()
        return [(c.key, c.kind, c.new) for c in seen]

    assert asyncio.run(follow()) == [("m/a", "added", "a"), ("m/b", "added", "b")]


def test_start_timeout_from_with(zk_restartable: ZooKeeperServer) -> None:
    zk_restartable.stop()
    client = ConfigClient(zk_restartable.hosts, "/cfg", start_timeout=0.3)
    with pytest.raises(ConfigUnavailableError, match=r"within 0\.3 s and no snapshot_path is set"), client:
        pass


def test_refused_connections_with_a_snapshot_start_at_once(
    zk_restartable: ZooKeeperServer,
    tmp_path: Path,
    make_client: Factory,
    caplog: pytest.LogCaptureFixture,
    until: Until,
) -> None:
    path = tmp_path / "cfg.snapshot"
    write_snapshot(path, hosts=zk_restartable.hosts, root="/cfg", entries={"a": SnapshotEntry(j(1), 5, 5)})
    zk_restartable.stop()
    caplog.set_level(logging.WARNING, logger="autoglm_runtime.config.kazoo")
    client = make_client(zk_restartable.hosts, "/cfg", snapshot_path=path, reconnect_max_delay=0.05)
    started = threading.Thread(target=client.start, kwargs={"timeout": 3600.0}, name="test-start")
    started.start()
    started.join(120)  # an hour's timeout: only the refusal can end it this early
    assert not started.is_alive()
    assert (client.get("a"), client.health()["source"]) == (1, "snapshot")
    # kazoo keeps trying meanwhile; its lines are coded and each one passes once per 30 s.
    log = kazoo_of(client).logger
    until(lambda: log.held_back >= 3, what="kazoo's retries held back")
    kazoo_lines = [r for r in caplog.records if r.name == "autoglm_runtime.config.kazoo"]
    assert kazoo_lines
    assert {getattr(r, "error_code", None) for r in kazoo_lines} == {"E0409"}
    templates = [r.msg for r in kazoo_lines]
    assert len(templates) == len(set(templates))


def test_a_typed_read_on_a_directory_names_the_directory(tmp_path: Path) -> None:
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "s").write_bytes(j("true"))
    with (
        ConfigClient(f"file://{tmp_path}", "/cfg", snapshot_path=None) as client,
        pytest.raises(ConfigTypeError) as info,
    ):
        client.get_bool("s")
    assert info.value.message == (
        "config key 's' under /cfg holds str 'true', not bool: fix the value in the config directory or read it "
        "with get()"
    )


class Limits(BaseModel):
    context_window: int
    truncate_on_overflow: bool = False
    stop: list[str] = []


def test_a_typed_view_is_validated_and_last_known_good(
    zk_hosts: str,
    zk_root: str,
    zk_client: KazooClient,
    make_client: Factory,
    until: Until,
    caplog: pytest.LogCaptureFixture,
) -> None:
    zk_client.create(f"{zk_root}/limits/m/context_window", j(8192), makepath=True)
    zk_client.create(f"{zk_root}/limits/m/stop", j(["</s>"]))
    zk_client.create(f"{zk_root}/limits/other/context_window", j("not mine"), makepath=True)
    client = make_client(zk_hosts, zk_root)
    client.start(timeout=10)
    with client.typed_view("limits/m", Limits) as view:
        assert view.get() == Limits(context_window=8192, stop=["</s>"])
        seen: list[Limits] = []
        view.subscribe(seen.append)
        zk_client.create(f"{zk_root}/limits/m/truncate_on_overflow", j(True))
        until(lambda: view.get().truncate_on_overflow)
        # A bad value refuses the whole group: the last valid model stays, said once as E0409.
        with caplog.at_level(logging.WARNING, logger="autoglm_runtime.config"):
            zk_client.set(f"{zk_root}/limits/m/context_window", j("huge"))
            until(lambda: view.error is not None, what="the refusal")
            zk_client.set(f"{zk_root}/limits/m/stop", j(["</s>", "<eot>"]))  # still refused: context_window
            until(lambda: client.get("limits/m/stop") == ["</s>", "<eot>"])
            assert client.wait_listeners(10)  # the view hears of a change on the dispatcher, after the cache has it
        assert view.get() == Limits(context_window=8192, truncate_on_overflow=True, stop=["</s>"])
        assert view.error is not None
        assert view.error.code == "E0409"
        assert view.error.message.startswith(
            f"config under 'limits/m' of {zk_root} is not a valid Limits: context_window: Input should be a valid "
            "integer"
        )
        assert view.error.message.endswith("; keeping the last valid one")
        refusals = [r for r in caplog.records if "is not a valid Limits" in r.getMessage()]
        assert len(refusals) == 2  # once per refused state, not once per event
        assert all(r.error_code == "E0409" for r in refusals)  # type: ignore[attr-defined]
        zk_client.set(f"{zk_root}/limits/m/context_window", j(4096))
        until(lambda: view.get().context_window == 4096)
        assert view.error is None
        assert view.get().stop == ["</s>", "<eot>"]
        assert client.wait_listeners(10)
        assert seen[0] == Limits(context_window=8192, truncate_on_overflow=True, stop=["</s>"])
        assert seen[-1] == Limits(context_window=4096, truncate_on_overflow=True, stop=["</s>", "<eot>"])


def test_a_typed_view_that_never_validated_raises(
    zk_hosts: str, zk_root: str, zk_client: KazooClient, make_client: Factory
) -> None:
    zk_client.create(f"{zk_root}/limits/m/truncate_on_overflow", j(True), makepath=True)
    client = make_client(zk_hosts, zk_root)
    client.start(timeout=10)
    view = client.typed_view("limits/m", Limits)
    with pytest.raises(ConfigTypeError) as info:
        view.get()
    assert info.value.message == (
        f"config under 'limits/m' of {zk_root} is not a valid Limits: context_window: Field required; no valid one yet"
    )
    with pytest.raises(UsageError, match="typed_view needs a pydantic BaseModel subclass"):
        client.typed_view("limits/m", dict)  # type: ignore[type-var]
