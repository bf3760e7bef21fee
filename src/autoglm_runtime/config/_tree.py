"""Applying reads to the cache, and the bookkeeping of the tree they came from.

:class:`TreeApplier` turns each :class:`~._results.ReadResult` into cache changes: values go through the
value pipeline (decode, validate, newest wins), a missing znode removes its subtree, a child list is
diffed against the last one to find what to read next and what vanished. It remembers, per znode, the
child list last read and the czxid of the incarnation last seen: a larger czxid means the znode was
deleted and created again, so its children are read again and loaded in full. Every method runs with the
cache lock held (the caller's ``cache.batch()``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from autoglm_runtime.config._pending import PendingPaths
from autoglm_runtime.config._results import ReadResult
from autoglm_runtime.config._values import ValuePipeline
from autoglm_runtime.config._wire import Spec
from autoglm_runtime.config.cache import SNAPSHOT_SEQ, ConfigCache
from autoglm_runtime.config.health import SyncStatus
from autoglm_runtime.logging import describe_value

__all__ = ["TreeApplier"]

log = logging.getLogger("autoglm_runtime.config")

_NONE: frozenset[str] = frozenset()


class TreeApplier:
    """Applies reads of the subtree under ``root`` to ``cache``.

    ``pending`` is the set of paths whose watch fired and whose re-read is on its way (a difference found
    there is not drift); ``behind()`` says whether the server answers below what the cache holds (its
    removals are then deferred); ``loaded`` is set once the first load finished; ``forget(path)`` is called
    for every znode a removal forgets (the reader drops its size).
    """

    def __init__(
        self,
        *,
        hosts: str,
        root: str,
        cache: ConfigCache,
        pipeline: ValuePipeline,
        status: SyncStatus,
        pending: PendingPaths,
        behind: Callable[[], bool],
        loaded: threading.Event,
        forget: Callable[[str], None] = lambda path: None,
    ) -> None:
        self.hosts = hosts
        self.root = root
        self._prefix = root.rstrip("/") + "/"
        self._cache = cache
        self._pipeline = pipeline
        self._status = status
        self._pending = pending
        self._behind = behind
        self._loaded = loaded
        self._forget = forget
        #: The child list last read per znode, with the sequence number of that read.
        self.children: dict[str, tuple[int, frozenset[str]]] = {}
        #: The czxid of each znode's incarnation we read last.
        self.czxids: dict[str, int] = {}
        #: The pzxid of each znode, from a data read issued before a read of its child list: while the znode's
        #: pzxid is still this, the child list we hold is current (stat-only verification).
        self.pzxids: dict[str, int] = {}
        #: Znodes created again: their next child list loads every child.
        self.reload: set[str] = set()
        #: Paths the sync thread is reading again for a watch event (a difference there is not drift).
        self.inflight: set[str] = set()
        #: Paths denied during the current full read (for the start error, and ``refused`` after it).
        self.denied: list[str] = []
        #: Paths whose last read was denied (``health()["denied"]``): said once, and not read again by the
        #: safety net at each verification (an ACL change fires no watch; a full read or a change of the parent's
        #: child list reads them again).
        self.refused: set[str] = set()
        #: A znode read for its own creation event joins its parent's child list (persistent watch mode, where
        #: creations are reported per znode and child lists are not read again).
        self.adopt = False

    def prune(self, found: set[str], *, root: bool) -> set[str]:
        """Forget the bookkeeping of znodes a full read did not find (keys ``found`` are the ones it did;
        ``root``: it found the root); returns the paths it found."""
        known = {self.path(k) for k in found} | ({self.root} if root else set())
        for path in [p for p in self.children if p not in known]:
            del self.children[path]
        for path in [p for p in self.czxids if p not in known]:
            del self.czxids[path]
        for path in [p for p in self.pzxids if p not in known]:
            del self.pzxids[path]
        return known

    def end_full_read(self) -> None:
        """A full read was applied: the paths it was denied are the ones refused now (cache lock held)."""
        for path in sorted(self.refused - set(self.denied)):  # not reached by the read: gone (read ones are out)
            self._readable(path, gone=True)
        self.refused = set(self.denied)
        self._status.denied = tuple(sorted(self.refused))

    def _readable(self, path: str, *, gone: bool) -> None:
        """``path``, refused before, was read (or found ``gone``): it is no longer denied."""
        self.refused.discard(path)
        self._status.denied = tuple(sorted(self.refused))
        what = "the znode %s ZooKeeper denied reading is gone" if gone else "ZooKeeper lets the client read %s again"
        log.info(what, path, extra={"path": path, "hosts": self.hosts})

    def known_paths(self) -> tuple[list[str], list[str], list[str]]:
        """The znodes whose value we hold (rejected values included), those whose child list we hold, and the
        root if it is known to be absent: what a resync relative to a zxid watches (cache lock held)."""
        child_paths = list(self.children)
        data_paths = sorted({self.path(k) for k in self._cache.entries()} | set(child_paths) - {self.root})
        return data_paths, child_paths, ([] if self.root in self.children else [self.root])

    def confirm(self, key: str, stat: Any, seq: int) -> bool:
        """True if ``stat`` (an ``exists`` answer, read ``seq``) proves the cached value and child list of ``key``
        current; the entry then counts as confirmed now. False: read it again (cache lock held)."""
        path = self.path(key)
        if stat is None or self.pzxids.get(path) != stat.pzxid or self.czxids.get(path, stat.czxid) != stat.czxid:
            return False
        if not key:
            self._cache.touch("")
            return True
        entry = self._cache.entry(key)
        if entry is None or entry.seq == SNAPSHOT_SEQ or (entry.czxid, entry.mzxid) != (stat.czxid, stat.mzxid):
            return False
        return self._cache.known(key, stat.czxid, stat.mzxid, seq)

    def _parent(self, path: str) -> tuple[str, str]:
        """The parent of ``path`` (as the child lists are keyed) and its name there."""
        parent, name = path.rsplit("/", 1)
        parent = parent or "/"
        return (self.root if parent + "/" == self._prefix else parent), name

    def _listed_after(self, path: str, seq: int) -> bool:
        """True if the child list held for ``path``'s parent was read after read ``seq`` and names it."""
        parent, name = self._parent(path)
        listed = self.children.get(parent)
        return listed is not None and listed[0] > seq and name in listed[1]

    def _seen_after(self, path: str, seq: int) -> bool:
        """True if a read issued after read ``seq`` found ``path`` present (its value or its child list)."""
        entry = self._cache.entry(self.key(path))
        listed = self.children.get(path)
        return (entry is not None and entry.seq > seq) or (listed is not None and listed[0] > seq)

    def path(self, key: str) -> str:
        return self.root if key == "" else self._prefix + key

    def key(self, path: str) -> str:
        return "" if path == self.root else path[len(self._prefix) :]

    def apply(self, result: ReadResult, *, found: set[str] | None, full: bool, reconcile: bool) -> list[Spec]:
        """Apply one read (cache lock held); returns the reads it leads to (new children)."""
        path, key = result.path, self.key(result.path)
        if self._refusal(result, key, found):
            return []
        if result.missing:
            if path == self.root:
                # Forget the root's child list: when the root is created again (an operator's restore), every
                # child it then lists is new and must be loaded, even where the names are the same.
                self.children.pop(path, None)
                self.czxids.pop(path, None)
                self.pzxids.pop(path, None)
            elif self._seen_after(path, result.seq):
                # Created again since this read, and a newer read loaded it (a verification's read applied
                # after the sync thread's re-read of the creation): this read is outdated, nothing is gone.
                return []
            elif self._listed_after(path, result.seq):
                # A child list read after this one names it: it was created again after this read found it
                # missing, and (per node) no watch of ours is left on the new znode. Read it, do not drop it.
                return [(path, True, True)]
            elif not self._behind():
                self.remove_subtree(path, result.seq, reconcile=reconcile)
            return []
        follow: list[Spec] = []
        if result.stat is not None and result.children is not None:
            self.pzxids[path] = result.stat.pzxid  # the data read went out before the child-list read
        if result.stat is not None and key:
            if found is not None:
                found.add(key)
            follow = self._value(result, key, reconcile=reconcile)
            if self.adopt:
                self._adopt(path, result.seq)
        elif found is not None and key:
            found.add(key)
        if result.children is None:
            return follow
        return self._child_list(result, key, result.children, full=full, reconcile=reconcile)

    def _adopt(self, path: str, seq: int) -> None:
        """Add ``path`` to its parent's child list, unless a newer list was read (it then had its say)."""
        parent, name = self._parent(path)
        listed = self.children.get(parent)
        if listed is not None and name not in listed[1] and seq > listed[0]:
            self.children[parent] = (listed[0], listed[1] | {name})

    def _refusal(self, result: ReadResult, key: str, found: set[str] | None) -> bool:
        """True if ZooKeeper denied the read; else a path it denied before is no longer refused."""
        if result.denied:
            self._denied(result.path, key, found)
            return True
        if result.path in self.refused:
            self._readable(result.path, gone=result.missing)
        return False

    def _denied(self, path: str, key: str, found: set[str] | None) -> None:
        if found is not None:
            self.denied.append(path)
        if path not in self.refused:
            self.refused.add(path)
            self._status.denied = tuple(sorted(self.refused))
            log.warning(
                "ZooKeeper denied reading %s; keeping the last known values of it and everything under it",
                path,
                extra={"error_code": "E0409", "path": path, "hosts": self.hosts},
            )
        if found is not None:
            # What we cannot read is kept as last known, not deleted by the resync.
            below = key + "/"
            cached = self._cache.keys()
            found.update(k for k in cached if not key or k == key or k.startswith(below))

    def _value(self, result: ReadResult, key: str, *, reconcile: bool) -> list[Spec]:
        """Ingest a znode's value; a new incarnation read without its child list asks for it."""
        path, stat = result.path, result.stat
        follow: list[Spec] = []
        before = self.czxids.get(path)
        if before is None or stat.czxid > before:
            self.czxids[path] = stat.czxid
        if before is not None and stat.czxid > before:
            # A new incarnation of the znode (deleted and created again): its child watch went with the
            # old one, and its children are new znodes even where the names are the same.
            self.reload.add(path)
            if result.children is None:
                follow.append((path, False, True))
        change = self._pipeline.ingest(key, result.data or b"", czxid=stat.czxid, mzxid=stat.mzxid, seq=result.seq)
        if change is not None and reconcile:
            created = change.kind == "added" or (before is not None and stat.czxid > before)
            self.drift(path, key, change.new, structural=created)
        return follow

    def _child_list(
        self, result: ReadResult, key: str, children: list[str], *, full: bool, reconcile: bool
    ) -> list[Spec]:
        """Apply a child list: remove the children gone, return the reads of the new ones (all if ``full``)."""
        path = result.path
        previous = self.children.get(path)
        if previous is not None and result.seq < previous[0]:
            return []
        names = frozenset(children) if children else _NONE
        old_names = previous[1] if previous is not None else _NONE
        base = self._prefix if not key else path + "/"
        if old_names - names and self._behind():
            names = names | old_names  # a lagging server's missing children are re-checked later
        if self.adopt and old_names - names:
            # A child read after this list was issued (its creation event's read) is newer than the list.
            entry = self._cache.entry
            names |= {
                n for n in old_names - names if (e := entry(self.key(base + n))) is not None and e.seq > result.seq
            }
        # A child a newer read saw deleted is not back because this older list still names it.
        stale = {n for n in names - old_names if self._cache.removed_after(self.key(base + n), result.seq)}
        if stale:
            names = (names - stale) or _NONE
        self.children[path] = (result.seq, names)  # most znodes are leaves: they share one empty frozenset
        if not key:
            self._cache.touch("")
        for gone in old_names - names:
            self.remove_subtree(base + gone, result.seq, reconcile=reconcile)
        reload = path in self.reload
        self.reload.discard(path)
        new = names if full or reload else names - old_names
        if reconcile:
            if names - old_names:
                # Per node, the parent's child watch reports a creation; a persistent watch reports the child.
                self.drift(path, key, None, created=[base + name for name in names - old_names])
            # The safety net covers structure too: a child this list already had but the cache lacks (its
            # load was lost) is read again; the value read reports the drift if it was real.
            entry = self._cache.entry
            # A child ZooKeeper refused to let us read is not a lost load: reading it again finds the same refusal.
            new |= {
                name
                for name in names & old_names
                if entry(self.key(base + name)) is None and base + name not in self.refused
            }
        return [(base + name, True, True) for name in sorted(new)]

    def remove_subtree(self, path: str, seq: int, *, reconcile: bool) -> None:
        if self._seen_after(path, seq):
            # A read issued after ``seq`` found it: what read ``seq`` saw gone was created again. Forgetting its
            # name in the parent's child list made the parent's next list look like a creation no watch had
            # reported (a false drift count), and its czxid and pzxid are the new incarnation's.
            return
        # Forget the name in the parent's child list too: if the znode is created again, the parent's next
        # child list must show it as new (and load it), even though the name did not change.
        parent, name = self._parent(path)
        listed = self.children.get(parent)
        if listed is not None and name in listed[1]:
            self.children[parent] = (listed[0], listed[1] - {name})
        stack = [path]
        while stack:
            current = stack.pop()
            entry = self.children.get(current)
            if entry is not None and entry[0] <= seq:
                del self.children[current]
                stack.extend(f"{current}/{name}" for name in entry[1])
            self.czxids.pop(current, None)
            self.pzxids.pop(current, None)
            self._forget(current)
            if current in self.refused:
                self._readable(current, gone=True)
            change = self._cache.remove(self.key(current), seq=seq)
            if change is not None and reconcile:
                self.drift(current, change.key, None, structural=True)

    def drift(
        self, path: str, key: str, value: Any, *, structural: bool = False, created: list[str] | None = None
    ) -> None:
        """Correct and report a difference the reconciler found, unless a watch reported it: the path's own
        watch, for a znode created or deleted (``structural``) its parent's child watch, and for children
        ``created`` in a child list, their own creation events."""
        # Membership tests only: kazoo's callback thread adds to ``pending`` meanwhile.
        paths = [path, path.rsplit("/", 1)[0]] if structural and path != self.root else [path]
        if any(p in self._pending or p in self.inflight for p in paths):
            return  # the sync thread is on its way
        if created and all(p in self._pending or p in self.inflight for p in created):
            return
        log.warning(
            "drift corrected: %r differed from ZooKeeper (a watch was missed)",
            key,
            extra={"error_code": "E0409", "key": key, "path": path, "value": describe_value(value)},
        )
        self._status.add("drift_corrected")

    def report_root(self, missing: bool, *, held: int, keys: int) -> None:
        """Say once when the root is missing (a typo, or an operator deleted it) and when it is back; ``held``
        keys were cached, ``keys`` are now."""
        if missing == self._status.root_missing:
            return
        self._status.root_missing = missing
        extra = {"error_code": "E0409", "hosts": self.hosts, "root": self.root, "keys": keys}
        if missing and held:
            log.warning(
                "config root %s was deleted on ZooKeeper at %s: its %d keys were removed; it is loaded again as "
                "soon as it is created (health()['root_missing'] is True until then)",
                self.root,
                self.hosts,
                held,
                extra=extra,
            )
        elif missing:
            log.warning(
                "config root %s does not exist on ZooKeeper at %s: serving no keys (check the root for a typo); "
                "it is loaded as soon as it is created (health()['root_missing'] is True until then)",
                self.root,
                self.hosts,
                extra=extra,
            )
        else:
            log.info("config root %s exists again: %d keys loaded", self.root, keys, extra=extra)
