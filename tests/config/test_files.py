"""The file:// backend, through the public ConfigClient API (a real directory, no server)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autoglm_runtime import ConfigChange, ConfigClient
from autoglm_runtime.config import SyncTuning
from autoglm_runtime.errors import ConfigUnavailableError
from autoglm_runtime.testing import wait_until

from .conftest import FakeClock


def write(path: Path, text: str) -> None:
    """Replace ``path`` atomically, as editors do (the poller never sees a half-written file)."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "autoglm" / "dev"
    (root / "models" / "llm").mkdir(parents=True)
    (root / "models" / "llm" / "context_window").write_text("4096")
    (root / "flag").write_text("true")
    (root / ".swp").write_text("ignored")
    return root


@pytest.fixture
def client(tmp_path: Path, tree: Path, clock: FakeClock) -> Iterator[ConfigClient]:
    def positive(key: str, value: object) -> object:
        if key.endswith("context_window") and not (isinstance(value, int) and value > 0):
            raise ValueError("context_window must be a positive integer")
        return None

    config = ConfigClient(
        f"file://{tmp_path}",
        "/autoglm/dev",
        ttl=30.0,
        validator=positive,
        timer=clock,
        tuning=SyncTuning(poll_interval=0.02, reconcile_interval=0.02, reconcile_jitter=0.0),
    )
    config.start(timeout=5)
    try:
        yield config
    finally:
        config.stop()


def test_loads_every_file_as_a_key(client: ConfigClient) -> None:
    assert dict(client.snapshot()) == {"models/llm/context_window": 4096, "flag": True}
    assert client.health()["source"] == "file"
    assert client.health()["connected"] is True
    assert client.health()["state"] == "running"


def test_a_stopped_file_client_says_so_and_keeps_its_values(client: ConfigClient, tree: Path) -> None:
    client.stop()
    write(tree / "flag", "false")
    health = client.health()
    assert (health["state"], health["connected"], health["source"]) == ("stopped", False, "file")
    assert client.get("flag") is True


def test_follows_edits_creates_and_deletes(client: ConfigClient, tree: Path) -> None:
    events: list[ConfigChange] = []
    client.subscribe("", events.append)
    write(tree / "models" / "llm" / "context_window", "8192")
    write(tree / "models" / "new", '"x"')
    (tree / "flag").unlink()
    wait_until(lambda: client.get("models/llm/context_window") == 8192 and client.get("models/new") == "x")
    wait_until(lambda: client.get("flag", "gone") == "gone")
    assert client.wait_listeners(5)
    assert sorted((e.key, e.kind, e.old, e.new) for e in events) == [
        ("flag", "deleted", True, None),
        ("models/llm/context_window", "updated", 4096, 8192),
        ("models/new", "added", None, "x"),
    ]


def test_a_listener_subscribed_once_get_shows_a_change_is_not_told_of_it(
    client: ConfigClient, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """get() shows a value as soon as the cache holds it, a moment before the change is queued for listeners: a
    listener subscribed in that moment (get() said False already) was told "True -> False" too, a change
    applied before it subscribed."""
    late: list[ConfigChange] = []
    readers: list[threading.Thread] = []
    seen: list[object] = []
    publish = client._dispatcher.publish  # type: ignore[attr-defined]

    def read_then_subscribe() -> None:
        seen.append(client.get("flag"))
        client.subscribe("flag", late.append)

    def publish_after_a_reader(change: ConfigChange) -> None:
        # The sync thread between the cache's update and its publication: a reader sees the value, subscribes.
        if change.key == "flag" and not readers:
            reader = threading.Thread(target=read_then_subscribe)
            reader.start()
            readers.append(reader)
            reader.join(1.0)  # (a subscribe() that waits for this publication is still waiting)
        publish(change)

    monkeypatch.setattr(client._dispatcher, "publish", publish_after_a_reader)  # type: ignore[attr-defined]
    write(tree / "flag", "false")
    wait_until(lambda: bool(readers))
    readers[0].join(10.0)
    assert seen == [False]
    assert client.wait_listeners(5)
    assert late == []
    write(tree / "flag", "true")
    wait_until(lambda: client.get("flag") is True)
    assert client.wait_listeners(5)
    assert [(e.old, e.new) for e in late] == [(False, True)]


def test_invalid_json_and_validator_rejection_keep_last_good(
    client: ConfigClient, tree: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = tree / "models" / "llm" / "context_window"
    with caplog.at_level(logging.WARNING, logger="autoglm_runtime.config"):
        write(target, "{not json")
        wait_until(lambda: client.health()["rejected"] == 1)
        write(target, "-5")
        wait_until(lambda: client.health()["rejected"] == 2)
    assert client.get("models/llm/context_window") == 4096
    messages = [r.getMessage() for r in caplog.records if getattr(r, "error_code", None) == "E0409"]
    assert messages == [
        "config update for 'models/llm/context_window' rejected, keeping the last good value: the json codec "
        "cannot decode it: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        "config update for 'models/llm/context_window' rejected, keeping the last good value: the validator "
        "rejected it: ValueError: context_window must be a positive integer",
    ]
    assert all("{not json" not in str(vars(r)) for r in caplog.records)  # values never reach logs
    write(target, "2048")
    wait_until(lambda: client.get("models/llm/context_window") == 2048)


def test_reconciler_corrects_an_edit_the_poller_missed(
    client: ConfigClient, tree: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    target = tree / "flag"
    before = target.stat()
    # Same size, same inode, same mtime: the stat signature cannot see this edit.
    with open(target, "r+b") as handle:
        handle.write(b"null")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert client.get("flag") is True
    with caplog.at_level(logging.WARNING, logger="autoglm_runtime.config"):
        clock.advance(34)  # past ttl * 1.1, the latest jittered deadline
        wait_until(lambda: client.health()["drift_corrected"] == 1)
    assert client.get("flag", "missing") is None
    [record] = [r for r in caplog.records if r.getMessage().startswith("drift corrected")]
    assert record.getMessage() == "drift corrected: 'flag' differed from its file (an edit was missed)"
    assert record.error_code == "E0409"  # type: ignore[attr-defined]
    assert record.key == "flag"  # type: ignore[attr-defined]


def test_missing_directory_is_unavailable(tmp_path: Path) -> None:
    config = ConfigClient(f"file://{tmp_path}", "/nope")
    with pytest.raises(ConfigUnavailableError) as info:
        config.start(timeout=1)
    assert info.value.message == (
        f"config directory {tmp_path / 'nope'} (hosts file://{tmp_path}, root /nope) does not exist or is not a "
        "directory: create it or fix hosts/root"
    )


def test_stop_leaves_no_thread(tmp_path: Path, tree: Path) -> None:
    before = set(threading.enumerate())
    with ConfigClient(f"file://{tmp_path}", "/autoglm/dev", tuning=SyncTuning(poll_interval=0.01)) as config:
        assert config.get("flag") is True
        assert {t.name for t in set(threading.enumerate()) - before} == {
            "autoglm-config-dispatch",
            "autoglm-config-files",
            "autoglm-config-reconcile",
        }
    assert set(threading.enumerate()) - before == set()


def stale_seconds(client: ConfigClient, clock: FakeClock) -> float:
    """``health()["stale_seconds"]`` with the fake clock nudged forward, so a staleness just begun shows."""
    clock.advance(0.001)
    return client.health()["stale_seconds"]


def test_an_unreadable_directory_is_not_a_deletion(
    client: ConfigClient,
    clock: FakeClock,
    tree: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``os.walk`` skips a directory it cannot list (permissions): its keys must stay, reported stale."""
    real_walk = os.walk
    models = str(tree / "models")

    def walk_without_models(top: Any, onerror: Any = None, **options: Any) -> Any:
        for dirpath, dirnames, filenames in real_walk(top, onerror=onerror, **options):
            if "models" in dirnames and dirpath == str(tree):
                dirnames.remove("models")
                onerror(PermissionError(13, "Permission denied", models))
            yield dirpath, dirnames, filenames

    with caplog.at_level(logging.WARNING, logger="autoglm_runtime.config"):
        monkeypatch.setattr("autoglm_runtime.config._files.os.walk", walk_without_models)
        write(tree / "flag", "false")
        wait_until(lambda: client.get("flag") is False)  # files outside the unreadable directory still follow
        wait_until(lambda: stale_seconds(client, clock) > 0)
    assert client.get("models/llm/context_window") == 4096
    record = next(r for r in caplog.records if r.getMessage().startswith("config directory"))
    assert record.getMessage() == f"config directory {models} could not be read; keeping the last known values under it"
    assert record.error_code == "E0409"  # type: ignore[attr-defined]
    monkeypatch.setattr("autoglm_runtime.config._files.os.walk", real_walk)
    wait_until(lambda: stale_seconds(client, clock) == 0.0)
    assert client.get("models/llm/context_window") == 4096


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_client_started_before_a_fork_says_in_the_child_that_it_follows_nothing(
    client: ConfigClient, tree: Path
) -> None:
    # gunicorn --preload, or a module-level start() before a prefork server forks: the child's copy has no sync
    # thread, so it never sees a change, yet its health() said connected and following.
    assert (client.health()["connected"], client.health()["following"]) == (True, True)
    read, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        health = client.health()
        os.write(write_end, repr((health["state"], health["connected"], health["following"])).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read) as from_child:
        seen = from_child.read()
    assert os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 0
    assert seen == "('running', False, False)"
    assert (client.health()["connected"], client.health()["following"]) == (True, True)  # the parent still follows
