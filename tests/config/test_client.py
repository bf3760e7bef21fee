"""ConfigClient without a server: start-up failures, snapshot fallback, staleness on the injected clock."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

import autoglm_runtime.config as config_package
from autoglm_runtime import ConfigClient
from autoglm_runtime.config import SnapshotEntry, SyncTuning, ZooKeeperConnection, write_snapshot
from autoglm_runtime.errors import ConfigUnavailableError, SnapshotError, UsageError

from .conftest import FakeClock


@pytest.fixture
def dead_hosts() -> str:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


def test_unreachable_without_snapshot_raises_naming_hosts_and_root(dead_hosts: str) -> None:
    before = set(threading.enumerate())
    client = ConfigClient(dead_hosts, "/autoglm/prod")
    with pytest.raises(ConfigUnavailableError) as info:
        client.start(timeout=0.3)
    assert info.value.message == (
        f"ZooKeeper at {dead_hosts} could not be reached (or root /autoglm/prod loaded) within 0.3 s and no "
        "snapshot_path is set: start ZooKeeper, check hosts, or give a snapshot_path with a valid snapshot"
    )
    assert str(info.value).startswith("E0409: ")
    assert set(threading.enumerate()) - before == set()
    health = client.health()
    assert (health["state"], health["connected"], health["stale_seconds"]) == ("failed", False, 0.0)
    with pytest.raises(UsageError) as refused:
        client.subscribe("", lambda change: None)
    assert refused.value.message == (
        f"cannot subscribe to '': this ConfigClient (hosts {dead_hosts}, root /autoglm/prod) was shut down after "
        "its start failed and delivers no more changes; subscribe on a new, started client"
    )
    client.stop()
    assert client.health()["state"] == "failed"


def test_unreachable_with_snapshot_serves_it_and_reports_staleness(
    dead_hosts: str, tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "prod.snapshot"
    write_snapshot(
        path,
        hosts=dead_hosts,
        root="/autoglm/prod",
        entries={"models/llm/context_window": SnapshotEntry(b"4096", 5, 9), "bad": SnapshotEntry(b"{", 6, 6)},
        written_at=time.time() - 100,
    )
    before = set(threading.enumerate())
    client = ConfigClient(dead_hosts, "/autoglm/prod", snapshot_path=path, timer=clock)
    client.start(timeout=0.3)
    try:
        assert client.get("models/llm/context_window") == 4096
        assert client.version("models/llm/context_window") == 9
        assert dict(client.snapshot()) == {"models/llm/context_window": 4096}
        clock.advance(12.5)
        health = client.health()
        assert (health["connected"], health["source"]) == (False, "snapshot")
        stale = health["stale_seconds"]
        assert 112.5 <= stale < 112.5 + 60  # stale since the snapshot was written
        assert (health["state"], health["rejected"]) == ("running", 1)
    finally:
        client.stop()
    clock.advance(1.0)
    health = client.health()
    assert (health["state"], health["connected"], health["stale_seconds"]) == ("stopped", False, stale + 1.0)
    assert client.get("models/llm/context_window") == 4096
    assert set(threading.enumerate()) - before == set()
    # stopping did not overwrite the snapshot with anything else
    assert set(config_package.read_snapshot(path, hosts=dead_hosts, root="/autoglm/prod").entries) == {
        "models/llm/context_window",
        "bad",
    }


def test_a_snapshot_start_reports_the_snapshot_as_last_confirmed(dead_hosts: str, tmp_path: Path) -> None:
    # The config-stale alert reads autoglm_config_last_sync_timestamp_seconds (last_confirmed): a server that
    # started on a snapshot while ZooKeeper was down had none, so the alert never fired however long it lasted.
    path = tmp_path / "prod.snapshot"
    written_at = time.time() - 600
    entries = {"models/llm/context_window": SnapshotEntry(b"4096", 5, 9)}
    write_snapshot(path, hosts=dead_hosts, root="/autoglm/prod", entries=entries, written_at=written_at)
    with ConfigClient(dead_hosts, "/autoglm/prod", snapshot_path=path, start_timeout=0.3) as client:
        health = client.health()
        assert (health["source"], health["last_confirmed"], health["last_sync"]) == ("snapshot", written_at, None)
        assert health["stale_seconds"] >= 600


@pytest.mark.parametrize("damage", ["truncate", "foreign"])
def test_unreachable_with_refused_snapshot_raises(dead_hosts: str, tmp_path: Path, damage: str) -> None:
    path = tmp_path / "prod.snapshot"
    owner = "elsewhere:2181" if damage == "foreign" else dead_hosts
    write_snapshot(path, hosts=owner, root="/autoglm/prod", entries={"a": SnapshotEntry(b"1", 1, 1)})
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:20])
    client = ConfigClient(dead_hosts, "/autoglm/prod", snapshot_path=path)
    with pytest.raises(SnapshotError) as info:
        client.start(timeout=0.3)
    reason = {
        "truncate": "is truncated or not a snapshot (20 bytes, not valid JSON); it was not loaded: delete it, it is "
        "rewritten after the next successful sync",
        "foreign": f"belongs to hosts 'elsewhere:2181' root '/autoglm/prod', not hosts {dead_hosts!r} root "
        "'/autoglm/prod'; it was not loaded",
    }[damage]
    assert info.value.message == (
        f"snapshot {path} {reason}; ZooKeeper at {dead_hosts} (root /autoglm/prod) could not be reached within "
        "0.3 s, so there is nothing to serve"
    )
    assert client.get("a") is None


@pytest.mark.parametrize(
    ("root", "fix"),
    [
        ("relative", ""),
        ("", ""),
        # Before: both were told to be "an absolute ZooKeeper path", which they are.
        ("/trailing/", "; drop the final '/'"),
        ("/a//b", "; an empty part ('//') names no znode"),
        ("/a//", "; an empty part ('//') names no znode"),
    ],
)
def test_bad_root_is_a_usage_error(root: str, fix: str) -> None:
    with pytest.raises(UsageError) as info:
        ConfigClient("127.0.0.1:2181", root)
    assert info.value.message == (
        f"config root {root!r} must be an absolute ZooKeeper path such as '/autoglm/prod'{fix}"
    )


@pytest.mark.parametrize(
    ("hosts", "reason"),
    [
        ("127.0.0.1:abc", "Port could not be cast to integer value as 'abc'"),
        ("zk1:99999", "Port out of range 0-65535"),
        ("zk1:2181,,zk2:2181", "bad hostname"),
    ],
)
def test_a_connect_string_kazoo_cannot_parse_is_a_usage_error_at_once(hosts: str, reason: str) -> None:
    # Before: accepted here, then a bare ValueError from kazoo when start() built the connection.
    with pytest.raises(UsageError) as info:
        ConfigClient(hosts, "/r")
    assert info.value.message == (
        f"config hosts {hosts!r} are not a ZooKeeper connect string ({reason}): give 'host:port[,host:port...]' "
        "or 'file:///dir'"
    )


def test_bad_ttl_and_auth_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="config ttl must be a positive number of seconds, got 0"):
        ConfigClient("127.0.0.1:2181", "/r", ttl=0)
    with pytest.raises(UsageError, match="auth must be"):
        ConfigClient("127.0.0.1:2181", "/r", auth=[("digest",)])  # type: ignore[list-item]


def test_stopped_client_cannot_restart(tmp_path: Path) -> None:
    client = ConfigClient(f"file://{tmp_path}", "/")
    client.start()
    client.stop()
    client.stop()
    with pytest.raises(UsageError, match="this ConfigClient was stopped; create a new one"):
        client.start()


def sdk_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("autoglm-config")}


def test_start_after_a_failed_start_is_a_usage_error(dead_hosts: str) -> None:
    before = sdk_threads()
    client = ConfigClient(dead_hosts, "/r", connection=ZooKeeperConnection(session_timeout=2.0))
    with pytest.raises(ConfigUnavailableError):
        client.start(timeout=0.2)
    assert sdk_threads() == before
    with pytest.raises(UsageError) as info:
        client.start(timeout=5.0)
    assert info.value.message == (
        "this ConfigClient failed to start (ConfigUnavailableError) and was shut down; create a new one"
    )
    client.stop()
    assert sdk_threads() == before


def test_stop_interrupts_a_waiting_start(dead_hosts: str) -> None:
    client = ConfigClient(dead_hosts, "/r", connection=ZooKeeperConnection(session_timeout=2.0))
    raised: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            client.start(timeout=3600.0)  # without the fix stop() would wait this out
        except BaseException as exc:
            raised.append(exc)
        done.set()

    thread = threading.Thread(target=run, name="test-start")
    thread.start()
    deadline = threading.Event()
    # wait until start() is waiting on ZooKeeper (the sync thread exists), without sleeping a fixed time
    for _ in range(2000):
        if "autoglm-config-sync" in sdk_threads():
            break
        deadline.wait(0.005)
    assert (client.health()["state"], client.health()["connected"]) == ("starting", False)
    client.stop()
    assert done.wait(30.0)
    thread.join()
    [exc] = raised
    assert isinstance(exc, UsageError)
    assert exc.message == "stopped during start: ConfigClient.stop() was called while start() waited for ZooKeeper"
    assert "autoglm-config-sync" not in sdk_threads()
    assert client.health()["state"] == "stopped"


def test_a_non_positive_reconcile_rate_is_a_usage_error() -> None:
    with pytest.raises(UsageError) as info:
        ConfigClient("127.0.0.1:1", "/x", tuning=SyncTuning(reconcile_rate=0))
    assert str(info.value) == "E0001: reconcile_rate must be a positive number of reads per second, got 0"


def test_a_key_starting_with_a_slash_is_a_usage_error_not_a_silent_default(tmp_path: Path) -> None:
    (tmp_path / "cfg" / "models" / "llm").mkdir(parents=True)
    (tmp_path / "cfg" / "models" / "llm" / "context_window").write_text("4096")
    with ConfigClient(f"file://{tmp_path}", "/cfg") as client:
        assert client.get("models/llm/context_window") == 4096
        assert client.get("models/llm/missing", 7) == 7
        hint = "keys are relative to the client's root /cfg, such as 'models/llm/context_window'"
        for key in ("/models/llm/context_window", "/cfg/models/llm/context_window"):
            with pytest.raises(UsageError, match=f"config key '{key}' starts with '/' and can never exist: {hint}"):
                client.get(key, 8192)
            with pytest.raises(UsageError, match="starts with '/'"):
                client.get_int(key, 8192)
            with pytest.raises(UsageError, match="starts with '/'"):
                client.wait_for(key, timeout=0.01)
        with pytest.raises(UsageError, match="config key '/models/' starts with '/'"):
            client.subscribe("/models/", lambda change: None)
        with pytest.raises(UsageError, match="starts with '/'"):
            client.get_and_subscribe("/models/", lambda change: None)
        assert client.get(12, "default") == "default"  # type: ignore[arg-type]  # (not a key: a miss, as before)


def test_version_refuses_a_key_starting_with_a_slash_as_get_does(tmp_path: Path) -> None:
    # version() is a read of the same cache: it gave None for ever for such a key, where get() refuses it.
    (tmp_path / "cfg" / "models").mkdir(parents=True)
    (tmp_path / "cfg" / "models" / "window").write_text("4096")
    with ConfigClient(f"file://{tmp_path}", "/cfg") as client:
        assert client.version("models/window") is not None
        assert client.version("models/missing") is None
        with pytest.raises(UsageError) as info:
            client.version("/cfg/models/window")
        assert info.value.message == (
            "config key '/cfg/models/window' starts with '/' and can never exist: keys are relative to the client's "
            "root /cfg, such as 'models/window'"
        )


def test_a_listener_that_is_not_callable_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    from pydantic import BaseModel

    class Window(BaseModel):
        context_window: int

    (tmp_path / "cfg" / "models").mkdir(parents=True)
    (tmp_path / "cfg" / "models" / "context_window").write_text("4096")
    with ConfigClient(f"file://{tmp_path}", "/cfg") as client:
        with pytest.raises(UsageError) as info:
            client.subscribe("models/", "on_change")  # type: ignore[arg-type]
        assert str(info.value) == (
            "E0001: subscribe('models/', ...) was given 'on_change' (of type str) as its listener, which is not "
            "callable: pass a function taking one ConfigChange"
        )
        with pytest.raises(UsageError, match=r"subscribe\('', ...\) was given None \(of type NoneType\)"):
            client.get_and_subscribe("", None)  # type: ignore[arg-type]
        with client.typed_view("models", Window) as view, pytest.raises(UsageError) as typed:
            view.subscribe(42)  # type: ignore[arg-type]
        assert typed.value.message == (
            "TypedView.subscribe was given 42 (of type int) as its listener, which is not callable: pass a function "
            "taking one Window"
        )
