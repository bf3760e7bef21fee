"""Reading parts of the tree level by level and applying them to the cache, for the sync thread.

A level's reads go out together (pipelined by :mod:`._reader`); what they lead to -- the children of a
child list, the child list of a new incarnation -- is the next level. If the connection drops in the
middle, :class:`Lost` carries the paths whose reads did not complete, so the sync decision can have them
read again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from kazoo.protocol.states import Callback

from autoglm_runtime.config._pending import PendingPaths
from autoglm_runtime.config._reader import ZooKeeperReader
from autoglm_runtime.config._results import Interrupted, ReadResult
from autoglm_runtime.config._tree import TreeApplier
from autoglm_runtime.config._wire import Spec
from autoglm_runtime.config.cache import ConfigCache

__all__ = ["Lost", "TreeWalker"]


class Lost(Interrupted):
    """A drop cut reads short: ``paths`` must be read again."""

    def __init__(self, paths: Iterable[str]) -> None:
        super().__init__()
        self.paths = frozenset(paths)


class TreeWalker:
    """Reads from ``root`` or from given paths down, applying each level in one cache batch.

    Runs on the sync thread only; ``pending`` (paths with unanswered watch events) is shared with kazoo's
    callback thread, which only adds to it.
    """

    def __init__(
        self,
        *,
        root: str,
        reader: ZooKeeperReader,
        tree: TreeApplier,
        cache: ConfigCache,
        pending: PendingPaths,
        stopping: threading.Event,
    ) -> None:
        self.root = root
        self._prefix = root.rstrip("/") + "/"
        self._reader = reader
        self._tree = tree
        self._cache = cache
        self._pending = pending
        self._stopping = stopping

    def read_level(self, frontier: Sequence[Spec]) -> list[ReadResult]:
        """Read one level; if the connection drops, raise :class:`Lost` with its paths."""
        try:
            return self._reader.read(frontier)
        except Interrupted as exc:
            raise Lost(spec[0] for spec in frontier) from exc

    def read_tree(self) -> list[ReadResult]:
        """Read the whole tree, level by level, without applying anything (the caller applies it at once)."""
        out: list[ReadResult] = []
        # Under a persistent watch the root's data is read too: its stat's pzxid lets verification confirm
        # the root's child list without reading it.
        frontier: list[Spec] = [(self.root, self._tree.adopt, True)]
        while frontier and not self._stopping.is_set():
            results = self.read_level(frontier)
            out.extend(results)
            frontier = []
            for result in results:
                if result.children and not result.missing and not result.denied:
                    base = self._prefix if result.path == self.root else result.path + "/"
                    frontier.extend((base + name, True, True) for name in sorted(result.children))
        return out

    def apply_fetched(self, fetched: Sequence[tuple[ReadResult, Any]]) -> bool:
        """Apply the reads kazoo's callback thread started, in the order they were issued, then what they
        lead to; False if the root turned out missing."""
        follow: list[Spec] = []
        for index, (result, pending) in enumerate(fetched):
            try:
                self._reader.finish(result, pending)
            except Interrupted as exc:
                raise Lost(r.path for r, _ in fetched[index:]) from exc
            with self._cache.batch():
                self._pending.answer(
                    result.path, result.seq, data=True, children=pending[1] is not None or result.missing
                )
                more = self._tree.apply(result, found=None, full=False, reconcile=False)
                self._tree.inflight.update(spec[0] for spec in more)
                follow.extend(more)
        return not follow or self.traverse(follow)

    def read(self, data: frozenset[str], children: frozenset[str]) -> bool:
        """Read the values of ``data``, the child lists of ``children`` and what they lead to; False if the
        root turned out missing."""
        paths = data | children
        if not paths:
            return True
        self._tree.inflight.update(paths)
        # These reads answer the events marked so far (their numbers are larger), not those marked meanwhile.
        issued = self._reader.next_seq()
        root = self.root
        for p in paths:
            self._pending.answer(p, issued, data=p in data or p == root, children=p in children or p == root)
        specs = [(p, p in data and p != root, p in children or p == root) for p in sorted(paths)]
        return self.traverse(specs)

    def traverse(self, specs: Sequence[Spec]) -> bool:
        """Read ``specs`` and, level by level, what they lead to; False if the root turned out missing."""
        # Every path is in flight from before its read until it is applied (the reads it leads to are added
        # under the same lock): a difference the reconciler sees there meanwhile is this read's, not drift.
        inflight = self._tree.inflight
        root_present = True
        frontier = list(specs)
        inflight.update(spec[0] for spec in frontier)
        try:
            while frontier and not self._stopping.is_set():
                results = self.read_level(frontier)
                done = {spec[0] for spec in frontier}
                frontier = []
                with self._cache.batch():
                    for result in results:
                        if result.path == self.root and result.missing:
                            root_present = False
                        frontier.extend(self._tree.apply(result, found=None, full=False, reconcile=False))
                    inflight.update(spec[0] for spec in frontier)
                    inflight.difference_update(done - {spec[0] for spec in frontier})
        finally:
            inflight.difference_update(spec[0] for spec in frontier)
        return root_present

    def verify(
        self, keys: Iterable[str], *, timeout: float, stats: bool, following: Callable[[], bool]
    ) -> tuple[list[str], int] | None:
        """Re-read ``keys`` (``""`` is the root's child list) for the reconciler and correct drift; returns the
        paths the reads lead to and the reads issued, or None if they were cut short, or if ``following()``
        turned false meanwhile (a resync or full read started: the differences are its to find, not drift).

        With ``stats`` (no watch to re-arm: a persistent watch), each key costs one ``exists``: where its stat
        shows the cached version and the pzxid of the child list held, the key is confirmed without reading
        its value; only the others are read (data and child list).
        """
        keys = list(keys)
        specs = [(self._tree.path(k), True, True) for k in keys]
        issued = 0
        if stats:
            try:
                answers = self._reader.stats([spec[0] for spec in specs])
            except Interrupted:
                return None
            issued += len(answers)
            with self._cache.batch():
                specs = [
                    spec
                    for key, spec, (stat, seq) in zip(keys, specs, answers, strict=True)
                    if not self._tree.confirm(key, stat, seq)
                ]
            if not specs:
                return [], issued
        specs = [(path, path != self.root or stats, children) for path, _, children in specs]
        try:
            results = self._reader.read(specs)
        except Interrupted:
            return None
        issued += sum(int(data) + int(children) for _, data, children in specs)
        # ZooKeeper sends a watch event before the answer of any later read that sees its change, but kazoo
        # hands the event to its callback thread: wait until that thread has queued every event that came
        # before these answers, so a change a watch reported is never mistaken for drift.
        drained = threading.Event()
        self._reader.client.handler.dispatch_callback(Callback("watch", drained.set, ()))
        if not drained.wait(timeout):
            return None
        follow: list[str] = []
        with self._cache.batch():
            if not following():
                return None
            for result in results:
                follow.extend(spec[0] for spec in self._tree.apply(result, found=None, full=False, reconcile=True))
        return follow, issued
