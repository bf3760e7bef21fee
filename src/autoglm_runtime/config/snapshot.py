"""Snapshot files: the last good picture of a config tree, for starting while ZooKeeper is down.

A snapshot is one JSON document::

    {"format": "autoglm-config-snapshot/1", "hosts": "...", "root": "/...", "written_at": 1700000000.0,
     "entries": {"key": [czxid, mzxid, "<base64 data>"]}, "sha256": "<hex of the canonical body>"}

It holds the raw znode data (not decoded values), so loading it runs the codec and validator again.
It is written atomically (temp file in the same directory, fsync, rename, fsync of the directory), so a
crash leaves the old file or the new one, never half of one. :func:`read_snapshot` refuses, with
:class:`~autoglm_runtime.errors.SnapshotError`, a file that is truncated or not JSON, whose checksum
does not match (altered), or that belongs to other hosts or another root (foreign).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoglm_runtime.errors import SnapshotError

__all__ = ["SNAPSHOT_FORMAT", "Snapshot", "SnapshotEntry", "SnapshotWriter", "read_snapshot", "write_snapshot"]

log = logging.getLogger(__name__)

SNAPSHOT_FORMAT = "autoglm-config-snapshot/1"


@dataclass(frozen=True)
class SnapshotEntry:
    """One key's raw data and the znode version it was read at."""

    data: bytes
    czxid: int
    mzxid: int


@dataclass(frozen=True)
class Snapshot:
    """A verified snapshot file's content."""

    hosts: str
    root: str
    written_at: float
    entries: Mapping[str, SnapshotEntry]


def normalize_hosts(hosts: str) -> str:
    """Hosts in a canonical form (order and spaces do not matter) to compare a snapshot's owner."""
    return ",".join(sorted(h.strip() for h in hosts.split(",") if h.strip()))


def _checksum(body: Mapping[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


class SnapshotEncoder:
    """The snapshot file's bytes, kept up to date key by key so a write never re-encodes the whole tree.

    Each entry is encoded once, when it changes, into its fragment of the canonical JSON (the form the
    checksum covers: sorted keys, no spaces, ASCII). Fragments are kept in key order in blocks of
    ``BLOCK`` entries, each block's bytes joined once and kept until an entry in it changes (an insertion or
    deletion also moves the blocks after it). A write then hashes and writes the blocks one by one: on a
    tree where a few keys changed, the Python work is a few block joins and a loop over the blocks, and the
    hashing and writing release the GIL; nothing holds the GIL for a copy, or a loop, of the whole tree.
    """

    BLOCK = 512

    def __init__(self, *, hosts: str, root: str) -> None:
        self._head = b'{"entries":{'
        tail = {"format": SNAPSHOT_FORMAT, "hosts": normalize_hosts(hosts), "root": root}
        self._tail = json.dumps(tail, sort_keys=True, separators=(",", ":"), ensure_ascii=True)[1:-1].encode()
        self._fragments: dict[str, bytes] = {}
        self._order: list[str] = []  # sorted keys, kept sorted with bisect
        self._blocks: dict[int, bytes] = {}  # block number -> its fragments joined, while none of them changed

    def __len__(self) -> int:
        return len(self._fragments)

    def _changed_from(self, index: int, *, moved: bool) -> None:
        """The fragment at ``index`` changed (``moved``: entries from there on shifted by an insertion or deletion)."""
        block = index // self.BLOCK
        if not moved:
            self._blocks.pop(block, None)
            return
        for number in [n for n in self._blocks if n >= block]:
            del self._blocks[number]

    def update(self, entries: Mapping[str, SnapshotEntry | None]) -> None:
        """Encode ``entries`` (``None``: the key is gone)."""
        fragments, order = self._fragments, self._order
        for key, entry in entries.items():
            if entry is None:
                if fragments.pop(key, None) is not None:
                    index = bisect.bisect_left(order, key)
                    del order[index]
                    self._changed_from(index, moved=True)
                continue
            item = [entry.czxid, entry.mzxid, base64.b64encode(entry.data).decode("ascii")]
            fragment = (json.dumps(key) + ":" + json.dumps(item, separators=(",", ":"))).encode("ascii")
            if fragments.setdefault(key, fragment) is not fragment:
                fragments[key] = fragment
                self._changed_from(bisect.bisect_left(order, key), moved=False)
            else:
                index = bisect.bisect_left(order, key)
                order.insert(index, key)
                self._changed_from(index, moved=True)

    def clear(self) -> None:
        self._fragments.clear()
        self._order.clear()
        self._blocks.clear()

    def chunks(self, written_at: float) -> Iterator[bytes]:
        """The file's bytes, a block of entries at a time: the canonical body, then its sha256 as the last
        member (hashing a block releases the GIL)."""
        fragments, order, blocks, size = self._fragments, self._order, self._blocks, self.BLOCK
        digest = hashlib.sha256()
        stamp = b',"written_at":' + json.dumps(float(written_at)).encode("ascii")
        pieces = max(1, -(-len(order) // size))
        for number in range(pieces):
            block = blocks.get(number)
            if block is None:
                start = number * size
                block = blocks[number] = b",".join([fragments[key] for key in order[start : start + size]])
            for piece in (self._head if number == 0 else b",", block):
                digest.update(piece)
                yield piece
        end = b"}," + self._tail + stamp
        digest.update(end + b"}")
        yield end + b',"sha256":"' + digest.hexdigest().encode("ascii") + b'"}'

    def payload(self, written_at: float) -> bytes:
        """The file's bytes: the canonical body with its sha256 added as the last member."""
        return b"".join(self.chunks(written_at))


def write_snapshot(
    path: str | os.PathLike[str],
    *,
    hosts: str,
    root: str,
    entries: Mapping[str, SnapshotEntry],
    written_at: float | None = None,
) -> None:
    """Write a snapshot of ``entries`` for ``hosts``/``root`` to ``path`` atomically.

    ``written_at`` (Unix time, default now) is when its content was last known to be current: a client
    that starts from it reports it stale since then.
    """
    encoder = SnapshotEncoder(hosts=hosts, root=root)
    encoder.update(entries)
    _write_atomically(Path(path), encoder.payload(time.time() if written_at is None else written_at))


def _write_atomically(target: Path, payload: bytes | Iterable[bytes]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            for piece in [payload] if isinstance(payload, bytes) else payload:
                handle.write(piece)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def read_snapshot(path: str | os.PathLike[str], *, hosts: str, root: str) -> Snapshot:
    """Read and verify the snapshot at ``path``; it must belong to ``hosts`` and ``root``.

    Raises :class:`SnapshotError` (E0409) for a missing, truncated, altered or foreign file; a refused
    snapshot is never loaded.
    """
    where = os.fspath(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise SnapshotError(f"snapshot {where} cannot be read: {exc.strerror or exc}") from exc
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise SnapshotError(
            f"snapshot {where} is truncated or not a snapshot ({len(raw)} bytes, not valid JSON); it was not "
            "loaded: delete it, it is rewritten after the next successful sync"
        ) from exc
    if not isinstance(body, dict) or body.get("format") != SNAPSHOT_FORMAT:
        raise SnapshotError(f"snapshot {where} is not an {SNAPSHOT_FORMAT} file; it was not loaded")
    claimed = body.pop("sha256", None)
    if claimed != _checksum(body):
        raise SnapshotError(
            f"snapshot {where} was altered: its sha256 checksum does not match its content; it was not loaded"
        )
    if body.get("hosts") != normalize_hosts(hosts) or body.get("root") != root:
        raise SnapshotError(
            f"snapshot {where} belongs to hosts {body.get('hosts')!r} root {body.get('root')!r}, not hosts "
            f"{normalize_hosts(hosts)!r} root {root!r}; it was not loaded"
        )
    try:
        entries = {
            str(key): SnapshotEntry(base64.b64decode(item[2], validate=True), int(item[0]), int(item[1]))
            for key, item in body["entries"].items()
        }
        written_at = float(body["written_at"])
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, binascii.Error) as exc:
        raise SnapshotError(f"snapshot {where} has malformed entries ({exc}); it was not loaded") from exc
    return Snapshot(hosts=str(body["hosts"]), root=root, written_at=written_at, entries=entries)


class SnapshotWriter:
    """Writes the snapshot on a named thread, at most once per ``debounce`` seconds after changes.

    ``collect()`` returns every entry (for the first write, and after :meth:`mark_dirty` without a key);
    ``entry(key)`` returns one entry or ``None`` (for keys marked dirty one by one), read under ``lock``
    so one write never mixes two versions of the tree. Only changed keys are encoded again
    (:class:`SnapshotEncoder`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        hosts: str,
        root: str,
        collect: Callable[[], Mapping[str, SnapshotEntry]],
        entry: Callable[[str], SnapshotEntry | None] | None = None,
        lock: threading.RLock | None = None,
        debounce: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self._collect = collect
        self._entry = entry
        self._lock = lock if lock is not None else threading.RLock()
        self._debounce = debounce
        self._encoder = SnapshotEncoder(hosts=hosts, root=root)
        self._everything = True  # the next write collects every entry
        self._keys: set[str] = set()
        self._dirty = threading.Event()
        self._pending = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.writes = 0

    def mark_dirty(self, key: str | None = None) -> None:
        """Note that ``key`` (``None``: anything) changed; a write follows within ``debounce`` seconds."""
        if key is None or self._entry is None:
            self._everything = True
        else:
            self._keys.add(key)
        self._pending = True
        self._dirty.set()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="autoglm-config-snapshot", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Write pending changes, then end the thread."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping.set()
            self._dirty.set()
            thread.join(timeout)

    def flush(self) -> None:
        """Write the snapshot now (on the caller's thread)."""
        self._dirty.clear()
        self._pending = False
        with self._lock:
            everything, self._everything = self._everything, False
            keys, self._keys = self._keys, set()
            if everything:
                changed: Mapping[str, SnapshotEntry | None] = self._collect()
            else:
                assert self._entry is not None
                changed = {key: self._entry(key) for key in keys}
        if everything:
            self._encoder.clear()
        self._encoder.update(changed)
        try:
            _write_atomically(self.path, self._encoder.chunks(time.time()))
            self.writes += 1
        except OSError as exc:
            log.warning(
                "config snapshot could not be written: %s",
                exc,
                extra={"error_code": "E0409", "path": str(self.path)},
            )

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._dirty.wait()
            if not self._stopping.is_set():
                # Debounce: a burst of updates becomes one write.
                self._stopping.wait(self._debounce)
            self._dirty.clear()
            if self._pending:
                self.flush()
