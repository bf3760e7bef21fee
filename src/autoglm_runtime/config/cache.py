"""The local config cache: values readers see, the znode version behind each, and freshness deadlines.

Writers (the sync thread, the reconciler, the file poller) offer what they read; the cache applies a
value only when it is strictly newer than what it holds, so no reader or listener ever sees a key go
back to an older version:

* versions compare as ``(czxid, mzxid)``. zxids are global and only grow, so a node deleted and
  recreated while we were away has a larger czxid *and* a larger mzxid than the one we cached; the
  per-node ``version`` counter would restart at 0 and hide the change (CURATOR-391);
* every read carries a sequence number taken when it was issued. All reads share one session, and a
  session's requests are answered in order, so a read issued later reflects a state at least as new.
  A deletion remembers the sequence number that observed it (a tombstone), so a read issued before the
  deletion but answered after it cannot bring the key back (kazoo TreeCache #645);
* an entry loaded from a snapshot file (``seq`` 0) loses to any ZooKeeper read: the ensemble it came
  from may have been rebuilt with smaller zxids, so its versions prove nothing about the one we talk to.

Deadlines are jittered per entry (``ttl * U(0.9, 1.1)`` from the injected ``rng``) so entries loaded
together do not all expire in the same reconciler pass.

Reads never lock: :meth:`get` is one ``dict.get`` on a dict that writers change in place while holding
:attr:`lock` (a single ``dict`` read is atomic in CPython).
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

from autoglm_runtime.config.dispatcher import ConfigChange

__all__ = ["CachedEntry", "ConfigCache"]

_MAX_TOMBSTONES = 65_536

#: The ``seq`` of entries loaded from a snapshot file: they lose to any read from ZooKeeper.
SNAPSHOT_SEQ = 0
_UNKNOWN = (-1, -1)


class CachedEntry:
    """What the cache knows about one key: its value, raw data and the znode version it came from."""

    __slots__ = ("czxid", "data", "mzxid", "seq", "value")

    def __init__(self, value: Any, data: bytes, czxid: int, mzxid: int, seq: int) -> None:
        self.value = value
        self.data = data
        self.czxid = czxid
        self.mzxid = mzxid
        self.seq = seq

    @property
    def version(self) -> tuple[int, int]:
        return (self.czxid, self.mzxid)

    @property
    def rank(self) -> tuple[int, int]:
        """The version newer reads are compared with: below any real one for a snapshot entry."""
        return _UNKNOWN if self.seq == SNAPSHOT_SEQ else (self.czxid, self.mzxid)


class ConfigCache:
    """Thread-safe cache with newest-wins application and a TTL deadline per key (``timer`` injectable).

    >>> cache = ConfigCache(ttl=30.0)
    >>> cache.offer("a", 1, b"1", czxid=5, mzxid=5, seq=1).kind
    'added'
    >>> cache.offer("a", 0, b"0", czxid=5, mzxid=4, seq=2) is None   # older version: ignored
    True
    """

    def __init__(
        self,
        *,
        ttl: float,
        timer: Callable[[], float] | None = None,
        publish: Callable[[ConfigChange], None] | None = None,
        rng: random.Random | None = None,
        keep_data: bool = True,
    ) -> None:
        self.ttl = ttl
        #: Keep each entry's raw bytes (a snapshot file needs them); without, entries from ZooKeeper hold only
        #: the decoded value (half the memory for large values).
        self.keep_data = keep_data
        #: The largest mzxid read from ZooKeeper (snapshot entries excluded); 0 after :meth:`forget_versions`.
        self.max_mzxid = 0
        self.lock = threading.RLock()
        self.applied = 0
        self._timer = timer if timer is not None else time.monotonic
        self._publish = publish
        self._values: dict[str, Any] = {}
        self._entries: dict[str, CachedEntry] = {}
        self._tombstones: OrderedDict[str, tuple[tuple[int, int], int]] = OrderedDict()
        self._rejected: dict[str, tuple[int, int]] = {}
        self._rng = rng if rng is not None else random.Random()
        self._deadlines: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []  # (deadline, key); stale items are skipped lazily
        self._view: Mapping[str, Any] | None = None

    # --- readers ---------------------------------------------------------------------------------

    @property
    def values(self) -> dict[str, Any]:
        """The live dict readers use; never mutate it (only the cache does, under :attr:`lock`)."""
        return self._values

    def get(self, key: str, default: Any = None) -> Any:
        """The cached value of ``key`` or ``default``; never blocks."""
        return self._values.get(key, default)

    def snapshot(self) -> Mapping[str, Any]:
        """An immutable, consistent view of every key (shared until the next change)."""
        view = self._view
        if view is None:
            with self.lock:
                view = self._view
                if view is None:
                    view = self._view = MappingProxyType(dict(self._values))
        return view

    def entry(self, key: str) -> CachedEntry | None:
        """The entry for ``key``, or ``None``."""
        return self._entries.get(key)

    def entries(self) -> dict[str, CachedEntry]:
        """A consistent copy of every entry (for snapshot files)."""
        with self.lock:
            return dict(self._entries)

    def keys(self) -> set[str]:
        """Every cached key."""
        with self.lock:
            return set(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    # --- writers ---------------------------------------------------------------------------------

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Hold the lock across several changes so :meth:`snapshot` sees all of them or none."""
        with self.lock:
            yield

    def known(self, key: str, czxid: int, mzxid: int, seq: int) -> bool:
        """True if ``key`` at this version needs no decoding: it is cached already (or newer), or it was
        rejected before. Confirms the entry's freshness as a side effect."""
        version = (czxid, mzxid)
        with self.lock:
            cur = self._entries.get(key)
            if cur is not None and cur.seq == SNAPSHOT_SEQ and seq > SNAPSHOT_SEQ:
                return False  # a ZooKeeper read always replaces a snapshot entry (see offer)
            if cur is not None and version <= cur.version:
                if seq > cur.seq:
                    cur.seq = seq
                    self._touch(key)
                return True
            if cur is None:
                tomb = self._tombstones.get(key)
                if tomb is not None and (seq < tomb[1] or version <= tomb[0]):
                    return True
            if self._rejected.get(key) == version:
                self._touch(key)
                return True
            return False

    def removed_after(self, key: str, seq: int) -> bool:
        """True if ``key`` is not cached and a read issued after ``seq`` saw it deleted."""
        with self.lock:
            tomb = self._tombstones.get(key)
            return key not in self._entries and tomb is not None and tomb[1] > seq

    def reject(self, key: str, czxid: int, mzxid: int) -> bool:
        """Remember that ``key`` at this version was refused, so it is not decoded and reported again; ``False``
        when a newer version was refused already (a late read of an older one: not to be reported again, and
        not to replace the newer one remembered)."""
        version = (czxid, mzxid)
        with self.lock:
            newer = self._rejected.get(key)
            if newer is not None and newer > version:
                return False
            self._rejected[key] = version
            self._touch(key)
            return True

    def offer(self, key: str, value: Any, data: bytes, *, czxid: int, mzxid: int, seq: int) -> ConfigChange | None:
        """Apply ``value`` if it is newer than what is cached; return the change applied, if any."""
        version = (czxid, mzxid)
        with self.lock:
            cur = self._entries.get(key)
            snap = cur is not None and cur.seq == SNAPSHOT_SEQ and seq > SNAPSHOT_SEQ
            if snap and cur is not None and version == cur.version and data == cur.data:
                # ZooKeeper confirms the snapshot's value: adopt the read, no event.
                cur.seq = seq
                self.max_mzxid = max(self.max_mzxid, mzxid)
                self._touch(key)
                return None
            if cur is not None:
                if seq < cur.seq or version <= cur.rank:
                    if seq > cur.seq:
                        cur.seq = seq
                        self._touch(key)
                    return None
                change = ConfigChange(key, "updated", cur.value, value, mzxid)
            else:
                tomb = self._tombstones.get(key)
                if tomb is not None and (seq < tomb[1] or version <= tomb[0]):
                    return None
                self._tombstones.pop(key, None)
                change = ConfigChange(key, "added", None, value, mzxid)
            kept = data if self.keep_data or seq == SNAPSHOT_SEQ else b""
            self._entries[key] = CachedEntry(value, kept, czxid, mzxid, seq)
            if seq > SNAPSHOT_SEQ:
                self.max_mzxid = max(self.max_mzxid, mzxid)
            self._values[key] = value
            self._rejected.pop(key, None)
            self._view = None
            self.applied += 1
            self._touch(key)
            if self._publish is not None:
                self._publish(change)
            return change

    def remove(self, key: str, *, seq: int) -> ConfigChange | None:
        """Delete ``key`` unless a read issued after ``seq`` saw it; return the change applied, if any."""
        with self.lock:
            self._rejected.pop(key, None)
            cur = self._entries.get(key)
            if cur is None:
                self._deadlines.pop(key, None)
                # Remember the deletion even for a key we do not hold: a read issued before it, answered
                # (or applied) after it, must not bring the key back.
                tomb = self._tombstones.get(key)
                if tomb is None or tomb[1] < seq:
                    self._tombstones[key] = (tomb[0] if tomb is not None else _UNKNOWN, seq)
                    self._tombstones.move_to_end(key)
                    if len(self._tombstones) > _MAX_TOMBSTONES:
                        self._tombstones.popitem(last=False)
                return None
            if seq < cur.seq:
                return None
            del self._entries[key]
            del self._values[key]
            self._tombstones[key] = (cur.rank, seq)
            if len(self._tombstones) > _MAX_TOMBSTONES:
                self._tombstones.popitem(last=False)
            self._deadlines.pop(key, None)
            self._view = None
            self.applied += 1
            change = ConfigChange(key, "deleted", cur.value, None, cur.mzxid)
            if self._publish is not None:
                self._publish(change)
            return change

    def forget_versions(self) -> None:
        """Treat every entry as if it came from a snapshot: the next ZooKeeper read of it wins whatever its
        zxids, and tombstones and rejections are forgotten. For an ensemble whose zxids went backwards."""
        with self.lock:
            for entry in self._entries.values():
                entry.seq = SNAPSHOT_SEQ
            self._tombstones.clear()
            self._rejected.clear()
            self.max_mzxid = 0

    # --- freshness -------------------------------------------------------------------------------

    def touch(self, key: str) -> None:
        """Mark ``key`` (or ``""`` for the root's child list) as confirmed now: its deadline is now + ttl
        (jittered by up to 10 % either way)."""
        with self.lock:
            self._touch(key)

    def touch_all(self) -> None:
        """Mark every entry (and the root's child list) as confirmed now, e.g. after a resync confirmed them."""
        with self.lock:
            for key in set(self._deadlines) | set(self._entries):
                self._touch(key)

    def deadline(self, key: str) -> float | None:
        """When ``key`` stops being fresh (in ``timer`` units), or ``None`` if it has no deadline."""
        return self._deadlines.get(key)

    def expired(self, limit: int) -> list[str]:
        """Up to ``limit`` keys whose deadline has passed, oldest first."""
        now = self._timer()
        out: list[tuple[float, str]] = []
        seen: set[str] = set()
        with self.lock:
            heap = self._heap
            while heap and heap[0][0] <= now and len(out) < limit:
                deadline, key = heapq.heappop(heap)
                if self._deadlines.get(key) == deadline and key not in seen:
                    seen.add(key)
                    out.append((deadline, key))
            for item in out:  # still expired until a re-read confirms them
                heapq.heappush(heap, item)
        return [key for _, key in out]

    def _touch(self, key: str) -> None:
        deadline = self._timer() + self.ttl * self._rng.uniform(0.9, 1.1)
        self._deadlines[key] = deadline
        heapq.heappush(self._heap, (deadline, key))
        if len(self._heap) > 4 * len(self._deadlines) + 1024:
            self._heap = [(d, k) for k, d in self._deadlines.items()]
            heapq.heapify(self._heap)
