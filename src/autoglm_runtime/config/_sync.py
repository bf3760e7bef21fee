"""Following a ZooKeeper subtree with kazoo: pipelined loads, one-shot watches, resyncs.

Threads and who may call ZooKeeper:

* kazoo's connection thread runs :meth:`ZooKeeperSync._on_state`; it only records the state and the time
  and queues a note for the sync thread (calling ZooKeeper there deadlocks, kazoo #356/#381);
* kazoo's callback thread runs :meth:`ZooKeeperSync._on_watch`; it queues the path, and for a data change or
  deletion issues the re-read without waiting for it (saving a thread hop on every update's path);
* the sync thread (``autoglm-config-sync``) does every load, re-read and resync;
* the reconciler thread calls :meth:`ZooKeeperSync.reread` for expired entries.

Reads are pipelined, one tree level at a time, by :mod:`._reader`: each read arms the watch it needs (a
data watch for the value, a child watch for the child list) with one callback of ours, and every firing is
answered by reading again, which re-arms it. kazoo drops all watches on any connection loss without
re-registering them, so every CONNECTED after a SUSPENDED or LOST triggers a resync: ``setWatches`` re-arms
every watch relative to the last zxid seen before the drop, the server fires those whose znodes changed
meanwhile, and only those are read again (:meth:`ZooKeeperSync._rearm`). Without such a zxid (first load,
start from a snapshot, an interrupted load) the whole tree is read again and diffed against the cache.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from kazoo.client import KazooClient
from kazoo.protocol.states import Callback, EventType, KazooState, WatchedEvent

from autoglm_runtime.config._reader import Interrupted, ReadResult, Spec, ZooKeeperReader
from autoglm_runtime.config._tree import TreeApplier
from autoglm_runtime.config._values import ValuePipeline
from autoglm_runtime.config._zxid import ZxidGuard
from autoglm_runtime.config.cache import ConfigCache
from autoglm_runtime.config.health import SyncStatus
from autoglm_runtime.errors import ConfigAccessError

__all__ = ["ZooKeeperSync"]

log = logging.getLogger("autoglm_runtime.config")

_STOP = ("stop", "")


class ZooKeeperSync:
    """Keeps ``cache`` equal to the subtree under ``root`` on ``hosts``."""

    def __init__(
        self,
        *,
        hosts: str,
        root: str,
        cache: ConfigCache,
        pipeline: ValuePipeline,
        status: SyncStatus,
        client: KazooClient,
        op_timeout: float,
        batch_size: int,
        bulk_reads: bool = True,
    ) -> None:
        self.hosts = hosts
        self.root = root
        self._prefix = root.rstrip("/") + "/"
        self._cache = cache
        self._pipeline = pipeline
        self._status = status
        self.client = client
        self._watch = self._on_watch
        self._reader = ZooKeeperReader(
            client=self.client,
            watch=self._watch,
            status=status,
            batch_size=batch_size,
            op_timeout=op_timeout,
            bulk=bulk_reads,
        )
        self._queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._pending: set[str] = set()
        self._need_full = False
        self._need_rearm = False
        self._rearm_ok = False  # a complete load happened and no traversal was lost since
        self._relative: int | None = None  # last zxid seen before the connection dropped
        self._retry: set[str] = set()  # paths whose reads a connection loss interrupted
        self._generation = 0
        self._ever_loaded = False
        self._session: int | None = None
        self._failures = 0  # consecutive unexpected sync failures (exponential backoff)
        self.loaded = threading.Event()
        self.load_error: ConfigAccessError | None = None
        self._stopping = threading.Event()
        self._guard = ZxidGuard(
            client=self.client, wait=self._reader.wait, status=status, cache=cache, hosts=hosts, root=root
        )
        self._tree = TreeApplier(
            hosts=hosts,
            root=root,
            cache=cache,
            pipeline=pipeline,
            status=status,
            pending=self._pending,
            behind=self._guard.behind,
            loaded=self.loaded,
        )
        self._thread = threading.Thread(target=self._run, name="autoglm-config-sync", daemon=True)

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start connecting (kazoo retries forever in the background) and the sync thread."""
        self.client.add_listener(self._on_state)
        self._thread.start()
        self.client.start_async()

    def stop(self) -> None:
        """End the sync thread, close the session (which drops every watch) and kazoo's threads."""
        self._stopping.set()
        self.client.remove_listener(self._on_state)
        self._queue.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(10.0)
        try:
            self.client.stop()
        finally:
            self.client.close()

    # --- kazoo callbacks (never call ZooKeeper here) -----------------------------------------------

    def _on_state(self, state: KazooState) -> None:
        if state == KazooState.CONNECTED:
            self._status.set_connected(True)
        else:
            # Everything up to this zxid reached us (as data or as a watch event) before the drop; kazoo
            # forgets it when it resets a lost session, so keep the first one of this outage.
            zxid = self.client.last_zxid
            if zxid and self._relative is None:
                self._relative = zxid
            self._guard.note_drop(zxid)
            self._status.set_connected(False)
            self._status.mark_stale()
            log.warning(
                "config sync %s: serving last-known-good values until the resync completes",
                "suspended (connection lost)" if state == KazooState.SUSPENDED else "lost its session",
                extra={"error_code": "E0409", "hosts": self.hosts, "root": self.root, "state": str(state)},
            )
        self._queue.put(("state", state))

    def _on_watch(self, event: WatchedEvent) -> None:
        # kazoo fires every watch with EventType.NONE when it drops them on a connection loss; the resync
        # that follows the reconnect re-reads everything, so those carry nothing to do.
        if event.type == EventType.NONE or not event.path or self._stopping.is_set():
            return
        self._pending.add(event.path)
        if event.type in (EventType.CHANGED, EventType.DELETED) and event.path != self.root:
            # Issue the re-read here (asynchronous, never blocking kazoo's callback thread): it saves a
            # thread hop on the path every update takes. The sync thread waits for it and applies it.
            # After a deletion the znode may already be back (a new incarnation): read its children too,
            # which arms the child watch the deletion consumed.
            try:
                deleted = event.type == EventType.DELETED
                self._queue.put(("fetched", self._reader.start_read(event.path, children=deleted)))
                return
            except Exception:  # kazoo refuses calls once closing; the sync thread reads it instead
                pass
        self._queue.put(("children" if event.type == EventType.CHILD else "data", event.path))

    # --- the sync thread -------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                items = [self._queue.get(timeout=0.5)]
            except queue.Empty:
                items = []
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if _STOP in items or self._stopping.is_set():
                return
            data: set[str] = set()
            children: set[str] = set()
            fetched: list[tuple[ReadResult, Any]] = []
            synced = False
            for kind, arg in items:
                if kind == "state":
                    if arg == KazooState.CONNECTED:
                        self._generation += 1
                        rearm = self._ever_loaded and self._rearm_ok and self._reader.rearm
                        if rearm and self._relative is not None:
                            self._need_rearm = True
                        else:
                            self._need_full = True
                elif kind == "fetched":
                    fetched.append(arg)
                elif kind == "synced":
                    synced = synced or arg == self._generation
                elif kind == "data":
                    data.add(arg)
                elif kind == "children":
                    children.add(arg)
                elif kind == "read":
                    self._retry.update(arg)  # kept across a drop, unlike the watch events above
            if not self.client.connected:
                continue
            if self._guard.recheck_due():
                self._need_full = True
            try:
                if not self._reader.checked:
                    self._reader.self_check(self.root)
                if self._need_full or self._need_rearm:
                    self._catch_up()
                if self._need_full:
                    self._full_sync()
                    self._failures = 0
                    continue
                if self._need_rearm:
                    self._rearm()
                if fetched:
                    self._apply_fetched(fetched)
                if self._retry:
                    data |= self._retry
                    children |= self._retry
                    self._retry.clear()
                if data or children:
                    self._incremental(data, children)
                if synced and not self._need_rearm:
                    self._relative = None
                    # setWatches confirmed every key it did not fire for: they are fresh, not due for a
                    # re-read by the reconciler (which would make the outage a full re-read after all).
                    self._cache.touch_all()
                    self._status.mark_synced(resync=True)
                    log.info("config resynced", extra={"hosts": self.hosts, "root": self.root})
                self._failures = 0
            except Interrupted:
                # Lost reads are in _retry. A drop brings a CONNECTED that resyncs; a timeout without a drop
                # is retried from here.
                if not self._rearm_ok or not self._reader.rearm:
                    self._need_full = True
                elif self._relative is not None:
                    self._need_rearm = True
            except Exception:
                # A bug or an unexpected answer: never spin. Report stale, back off exponentially, and
                # rebuild from a full read.
                self._need_full = True
                self._failures += 1
                delay = min(30.0, 0.5 * 2 ** (self._failures - 1))
                self._status.mark_stale()
                log.exception(
                    "config sync failed; serving last-known-good values and retrying in %.1f s",
                    delay,
                    extra={"error_code": "E0409", "root": self.root, "hosts": self.hosts, "failures": self._failures},
                )
                self._stopping.wait(delay)

    def _catch_up(self) -> None:
        """On a new session or a due re-check: see :meth:`ZxidGuard.catch_up`."""
        if self._guard.catch_up(recheck=self._need_full and self._guard.rechecks > 0):
            self._tree.czxids.clear()
            self._need_full = True
            self._need_rearm = False

    def _full_sync(self) -> None:
        self._need_full = False
        self._need_rearm = False
        self._rearm_ok = False
        self._pending.clear()
        client_id = self.client.client_id
        session = client_id[0] if client_id else None
        resync = self._ever_loaded
        start_seq = self._reader.next_seq()
        found: set[str] = set()
        self._tree.denied = []
        results = self._read_tree()
        if self._stopping.is_set():
            return  # a partial read must not delete what it did not reach
        root_present = not any(r.path == self.root and r.missing for r in results)
        if not root_present:
            # The root does not exist (yet): an exists watch tells us when it is created. If it appeared in
            # the meantime, the watch is armed but will not fire for that creation: load again.
            stat = self._reader.wait(self.client.exists_async(self.root, watch=self._watch))
            self._status.add("reads")
            self._status.add("requests")
            if stat is not None and not isinstance(stat, BaseException):
                self._need_full = True
        # Every level is applied in one batch, so snapshot() and the snapshot file never mix levels.
        with self._cache.batch():
            for result in results:
                self._tree.apply(result, found=found, full=True, reconcile=False)
            if self._tree.denied and not self.loaded.is_set():
                paths = ", ".join(self._tree.denied[:5])
                self.load_error = ConfigAccessError(
                    f"ZooKeeper at {self.hosts} denied reading {paths} under root {self.root}: check the "
                    "credentials (auth=) and the ACLs of those nodes"
                )
            if not self._guard.behind():
                for key in self._cache.keys() - found:
                    self._cache.remove(key, seq=start_seq)
                self._tree.prune(found)
            self._status.source = "zookeeper"
            self._status.mark_synced(resync=resync)
            # Set under the cache lock: a snapshot served at start must not land after this load.
            self.loaded.set()
        if resync:
            log.info(
                "config resynced after %s",
                "session expiry" if session != self._session else "a reconnect",
                extra={"hosts": self.hosts, "root": self.root, "keys": len(found)},
            )
        self._session = session
        self._guard.checked_session = session
        self._ever_loaded = True
        self._rearm_ok = True
        self._relative = None
        self._retry.clear()

    def _read_level(self, frontier: Sequence[Spec]) -> list[ReadResult]:
        """Read one level; if the connection drops, remember its paths so the next sync reads them again."""
        try:
            return self._reader.read(frontier)
        except Interrupted:
            self._retry.update(spec[0] for spec in frontier)
            raise

    def _read_tree(self) -> list[ReadResult]:
        """Read the whole tree, level by level, without applying anything (the caller applies it at once)."""
        out: list[ReadResult] = []
        frontier: list[Spec] = [(self.root, False, True)]
        while frontier and not self._stopping.is_set():
            results = self._read_level(frontier)
            out.extend(results)
            frontier = []
            for result in results:
                if result.children and not result.missing and not result.denied:
                    base = self._prefix if result.path == self.root else result.path + "/"
                    frontier.extend((base + name, True, True) for name in sorted(result.children))
        return out

    def _rearm(self) -> None:
        """Resync after a reconnect without re-reading the tree (kazoo #664's read spike).

        ``setWatches`` relative to the last zxid seen before the drop re-arms every watch; the server fires
        at once each one whose znode changed, appeared under a watched parent, or vanished meanwhile, and
        only those are read again. A marker sent through kazoo's callback queue after those firings tells
        the sync thread when they have all been handled.
        """
        self._need_rearm = False
        relative = self._relative
        assert relative is not None
        with self._cache.batch():
            child_paths = list(self._tree.children)
            # Every znode we know, including those whose value was rejected (not in the cache).
            data_paths = sorted({self._tree.path(k) for k in self._cache.entries()} | set(child_paths) - {self.root})
            # An absent root is followed by an exists watch; re-arm it too.
            exist_paths = [] if self.root in self._tree.children else [self.root]
        # Watch events that reached us before the drop but were never answered by a read.
        self._retry |= self._pending
        self._reader.arm(data_paths, child_paths, relative, exist_paths)
        generation = self._generation
        self.client.handler.dispatch_callback(Callback("watch", self._queue.put, (("synced", generation),)))

    def _apply_fetched(self, fetched: list[tuple[ReadResult, Any]]) -> None:
        """Apply the reads ``_on_watch`` started, in the order they were issued, then what they lead to."""
        follow: list[Spec] = []
        for index, (result, pending) in enumerate(fetched):
            try:
                self._reader.finish(result, pending)
            except Interrupted:
                self._retry.update(r.path for r, _ in fetched[index:])
                raise
            with self._cache.batch():
                self._pending.discard(result.path)
                follow.extend(self._tree.apply(result, found=None, full=False, reconcile=False))
        if follow and not self._traverse(follow, found=None, full=False):
            self._need_full = True

    def _incremental(self, data: set[str], children: set[str]) -> None:
        paths = data | children
        self._pending.difference_update(paths)
        specs = [(p, p in data and p != self.root, p in children or p == self.root) for p in sorted(paths)]
        if not self._traverse(specs, found=None, full=False):
            self._need_full = True

    def _traverse(self, specs: Sequence[Spec], *, found: set[str] | None, full: bool) -> bool:
        """Read ``specs`` and, level by level, what they lead to; False if the root turned out missing."""
        root_present = True
        frontier = list(specs)
        while frontier and not self._stopping.is_set():
            results = self._read_level(frontier)
            frontier = []
            with self._cache.batch():
                for result in results:
                    if result.path == self.root and result.missing:
                        root_present = False
                    frontier.extend(self._tree.apply(result, found=found, full=full, reconcile=False))
        return root_present

    # --- the reconciler's entry point ------------------------------------------------------------

    def reread(self, keys: Iterable[str]) -> int:
        """Re-read ``keys`` (``""`` is the root's child list) and correct drift; returns the reads issued."""
        if not self.loaded.is_set() or not self.client.connected or self._need_full or self._relative is not None:
            return 0  # a resync is due or running: it finds every difference, and they are not drift
        specs = [(self._tree.path(k), bool(k), True) for k in keys]
        try:
            results = self._reader.read(specs)
        except Interrupted:
            return 0
        follow: list[str] = []
        with self._cache.batch():
            for result in results:
                follow.extend(spec[0] for spec in self._tree.apply(result, found=None, full=False, reconcile=True))
        if follow:
            self._queue.put(("read", follow))
        return sum(int(bool(k)) + 1 for k in keys)
