"""SnapshotEncoder and the incremental SnapshotWriter write what read_snapshot verifies."""

from __future__ import annotations

import threading
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from autoglm_runtime.config.snapshot import (
    SnapshotEncoder,
    SnapshotEntry,
    SnapshotWriter,
    read_snapshot,
    write_snapshot,
)

keys = st.text(min_size=1, max_size=6)
entries = st.builds(SnapshotEntry, st.binary(max_size=8), st.integers(0, 2**40), st.integers(0, 2**40))


class SmallBlocks(SnapshotEncoder):
    BLOCK = 3  # many blocks on small trees: insertions and deletions move them


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(keys, st.none() | entries), max_size=30))
def test_an_encoder_updated_key_by_key_equals_one_encoded_at_once(
    steps: list[tuple[str, SnapshotEntry | None]],
) -> None:
    incremental = SmallBlocks(hosts="b:1,a:2", root="/r")
    final: dict[str, SnapshotEntry] = {}
    for key, entry in steps:
        incremental.update({key: entry})
        incremental.payload(1.5)  # fills the block cache that the next updates must keep right
        if entry is None:
            final.pop(key, None)
        else:
            final[key] = entry
    fresh = SnapshotEncoder(hosts="a:2,b:1", root="/r")
    fresh.update(final)
    assert incremental.payload(1.5) == fresh.payload(1.5)
    assert len(incremental) == len(final)


def test_the_incremental_writer_writes_what_read_snapshot_verifies(tmp_path: Path) -> None:
    path = tmp_path / "s"
    current = {"a": SnapshotEntry(b"1", 1, 1), "b/\u00e9": SnapshotEntry(b"\xff", 2, 3)}
    collected: list[int] = []

    def collect() -> dict[str, SnapshotEntry]:
        collected.append(1)
        return dict(current)

    writer = SnapshotWriter(
        path, hosts="h:1", root="/r", collect=collect, entry=current.get, lock=threading.RLock(), debounce=60.0
    )
    writer.mark_dirty()
    writer.flush()
    current["c"] = SnapshotEntry(b"3", 4, 4)
    del current["a"]
    writer.mark_dirty("c")
    writer.mark_dirty("a")
    writer.flush()
    assert len(collected) == 1  # the second write re-encoded two keys, not the tree
    assert read_snapshot(path, hosts="h:1", root="/r").entries == current
    write_snapshot(tmp_path / "t", hosts="h:1", root="/r", entries=current, written_at=7.0)
    assert read_snapshot(tmp_path / "t", hosts="h:1", root="/r").written_at == 7.0


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(keys, entries, max_size=40), st.integers(1, 7))
def test_blocks_of_any_size_are_the_canonical_document(tree: dict[str, SnapshotEntry], size: int) -> None:
    import hashlib
    import json

    encoder = type("Blocks", (SnapshotEncoder,), {"BLOCK": size})(hosts="h:1", root="/r")
    encoder.update(tree)
    written = b"".join(encoder.chunks(2.5))
    document = json.loads(written)
    digest = document.pop("sha256")
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    assert written == canonical[:-1] + b',"sha256":"' + digest.encode() + b'"}'
    assert digest == hashlib.sha256(canonical).hexdigest()
    assert set(document["entries"]) == set(tree)
