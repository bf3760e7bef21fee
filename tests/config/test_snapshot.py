from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoglm_runtime.config.snapshot import SnapshotEntry, SnapshotWriter, read_snapshot, write_snapshot
from autoglm_runtime.errors import SnapshotError

ENTRIES = {"models/a": SnapshotEntry(b'{"x":1}', 3, 7), "b": SnapshotEntry(b"", 4, 4)}


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "s.snapshot"
    write_snapshot(path, hosts="h2:2181, h1:2181", root="/r", entries=ENTRIES)
    snap = read_snapshot(path, hosts="h1:2181,h2:2181", root="/r")
    assert dict(snap.entries) == ENTRIES
    assert snap.hosts == "h1:2181,h2:2181"
    assert [p.name for p in tmp_path.iterdir()] == ["s.snapshot"]  # no temp file left


def test_truncated_snapshot_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.snapshot"
    write_snapshot(path, hosts="h:1", root="/r", entries=ENTRIES)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SnapshotError) as info:
        read_snapshot(path, hosts="h:1", root="/r")
    assert info.value.message == (
        f"snapshot {path} is truncated or not a snapshot ({len(data) // 2} bytes, not valid JSON); it was not "
        "loaded: delete it, it is rewritten after the next successful sync"
    )


def test_altered_snapshot_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.snapshot"
    write_snapshot(path, hosts="h:1", root="/r", entries=ENTRIES)
    body = json.loads(path.read_bytes())
    body["entries"]["b"][1] = 99
    path.write_text(json.dumps(body))
    with pytest.raises(SnapshotError) as info:
        read_snapshot(path, hosts="h:1", root="/r")
    assert info.value.message == (
        f"snapshot {path} was altered: its sha256 checksum does not match its content; it was not loaded"
    )


@pytest.mark.parametrize(("hosts", "root"), [("other:1", "/r"), ("h:1", "/other")])
def test_foreign_snapshot_is_refused(tmp_path: Path, hosts: str, root: str) -> None:
    path = tmp_path / "s.snapshot"
    write_snapshot(path, hosts="h:1", root="/r", entries=ENTRIES)
    with pytest.raises(SnapshotError) as info:
        read_snapshot(path, hosts=hosts, root=root)
    assert info.value.message == (
        f"snapshot {path} belongs to hosts 'h:1' root '/r', not hosts {hosts!r} root {root!r}; it was not loaded"
    )
    assert info.value.code == "E0409"


def test_writer_debounces_and_flushes_on_stop(tmp_path: Path) -> None:
    path = tmp_path / "s.snapshot"
    current = dict(ENTRIES)
    writer = SnapshotWriter(path, hosts="h:1", root="/r", collect=lambda: current, debounce=60.0)
    writer.start()
    for _ in range(100):
        writer.mark_dirty()
    current["c"] = SnapshotEntry(b"1", 9, 9)
    writer.stop()
    assert writer.writes == 1
    assert set(read_snapshot(path, hosts="h:1", root="/r").entries) == {"models/a", "b", "c"}


def test_writer_without_changes_writes_nothing(tmp_path: Path) -> None:
    writer = SnapshotWriter(tmp_path / "s", hosts="h:1", root="/r", collect=dict, debounce=0.0)
    writer.start()
    writer.stop()
    assert writer.writes == 0
    assert not (tmp_path / "s").exists()
