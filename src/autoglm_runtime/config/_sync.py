"""Following a ZooKeeper subtree with kazoo: pipelined loads, watches, resyncs.

Threads and who may call ZooKeeper:

* kazoo's connection thread and callback thread run :class:`._callbacks.KazooCallbacks`: they record and
  queue for the sync thread, and at most issue a re-read without waiting for it (calling ZooKeeper there
  deadlocks, kazoo #356/#381);
* the sync thread (``autoglm-config-sync``) does every load, re-read and resync;
* the reconciler thread calls :meth:`ZooKeeperSync.reread` for expired entries.

Changes are reported by one persistent recursive watch on the root (:mod:`._recursive`, ZooKeeper 3.6+), or
per node: each read arms the watch it needs (data for the value, child for the child list) and every
firing is answered by reading again, which re-arms it. Reads are pipelined, one tree level at a time, by
:mod:`._reader`. kazoo keeps no watch of ours across a connection loss, so every CONNECTED after a
SUSPENDED or LOST triggers a resync relative to the last zxid seen before the drop, which reads again only
what changed meanwhile (:meth:`ZooKeeperSync._rearm`). Without such a zxid (first load, start from a
snapshot, an interrupted load) the whole tree is read again and diffed against the cache.

The sync thread collects what was queued into events, lets :func:`._syncstate.decide` choose what to do on
its explicit state, and executes that plan; :mod:`._walk` does the level-by-level reads.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable

from kazoo.client import KazooClient
from kazoo.protocol.states import Callback, WatchedEvent

from autoglm_runtime.config import _syncstate as sm
from autoglm_runtime.config._callbacks import KazooCallbacks
from autoglm_runtime.config._inbox import STOP, Item, collect, to_events
from autoglm_runtime.config._pending import PendingPaths
from autoglm_runtime.config._reader import ZooKeeperReader
from autoglm_runtime.config._recursive import RecursiveWatch
from autoglm_runtime.config._results import Interrupted
from autoglm_runtime.config._tree import TreeApplier
from autoglm_runtime.config._values import ValuePipeline
from autoglm_runtime.config._walk import Lost, TreeWalker
from autoglm_runtime.config._zxid import ZxidGuard
from autoglm_runtime.config.cache import ConfigCache
from autoglm_runtime.config.health import RESYNCED_AFTER, ResyncReason, SyncStatus
from autoglm_runtime.errors import ConfigAccessError

__all__ = ["ZooKeeperSync"]

log = logging.getLogger("autoglm_runtime.config")


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
        persistent_watch: bool = True,
        session_factory: Callable[[], KazooClient] | None = None,
    ) -> None:
        self.hosts = hosts
        self.root = root
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
        self._op_timeout = op_timeout
        self._queue: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self._pending = PendingPaths(self._reader.next_seq)
        # Written by the sync thread only; read (one reference) by the reconciler's reread().
        self._state = sm.SyncState()
        self._synced_session: int | None = None  # the session of the last completed load or resync
        self.loaded = threading.Event()
        self.load_error: ConfigAccessError | None = None
        self._stopping = threading.Event()
        # A read found the root gone: the full read that follows is a change of the tree, not a resync.
        self._root_event = False
        self._guard = ZxidGuard(
            client=client,
            wait=self._reader.wait,
            status=status,
            cache=cache,
            hosts=hosts,
            root=root,
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
            forget=self._reader.forget_size,
        )
        self._walker = TreeWalker(
            root=root, reader=self._reader, tree=self._tree, cache=cache, pending=self._pending, stopping=self._stopping
        )
        self._recursive = RecursiveWatch(
            client=client,
            root=root,
            route=self._watch,
            reader=self._reader,
            status=status,
            session_factory=session_factory,
            op_timeout=op_timeout,
            enabled=persistent_watch,
        )
        self._callbacks = KazooCallbacks(
            hosts=hosts,
            root=root,
            client=client,
            inbox=self._queue,
            reader=self._reader,
            pending=self._pending,
            guard=self._guard,
            status=status,
            stopping=self._stopping,
        )
        self._gap = False  # the next full read closes a gap no catch-up could (its resync reason)
        self._thread = threading.Thread(target=self._run, name="autoglm-config-sync", daemon=True)

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start connecting (kazoo retries forever in the background) and the sync thread."""
        self.client.add_listener(self._callbacks.on_state)
        self._thread.start()
        self.client.start_async()

    def stop(self) -> None:
        """End the sync thread, close the session (which drops every watch) and kazoo's threads."""
        self._stopping.set()
        self.client.remove_listener(self._callbacks.on_state)
        self._queue.put(STOP)
        if self._thread.is_alive():
            self._thread.join(10.0)
        try:
            self.client.stop()
        finally:
            self.client.close()

    def _on_watch(self, event: WatchedEvent) -> None:
        # The one callable every read and re-arm registers (kazoo keeps it in sets): the reader is made with it,
        # before the callbacks that use the reader.
        self._callbacks.on_watch(event)

    # --- the sync thread: collect events, decide (``_syncstate``), execute ------------------------

    def request_full_read(self) -> None:
        """Read the whole tree again and diff it against the cache, as after an interrupted load."""
        self._queue.put(("resync", None))

    def _run(self) -> None:
        while True:
            items = collect(self._queue)
            if STOP in items or self._stopping.is_set():
                return
            self._guard.give_up_session(self._stopping)  # after a long outage (a restored ensemble)
            plan: sm.Plan = ()
            connected = self.client.connected
            events = to_events(
                items,
                can_rearm=self._reader.rearm,
                connected=connected,
                recheck_due=connected and self._guard.recheck_due(),
                self_checked=self._reader.checked,
            )
            for event in events:
                self._state, replaced = sm.decide(self._state, event)
                if replaced is not None:
                    plan = replaced
            self._execute(plan)

    def _execute(self, plan: sm.Plan) -> None:
        """Run ``plan``; every outcome goes through :func:`decide`, which may replace the rest of it."""
        todo = list(plan)
        unanswered: frozenset[str] = frozenset()  # found by a re-arm; read with the Read that follows it
        error: Exception | None = None
        while todo:
            action = todo.pop(0)
            event: sm.Event | None = None
            try:
                if isinstance(action, sm.Rearm):
                    unanswered = self._rearm(action)
                else:
                    event = self._do(action, unanswered, error)
            except Interrupted as exc:
                lost = exc.paths if isinstance(exc, Lost) else frozenset()
                for path in lost:  # handled until read again (a timeout keeps the cache following): not drift
                    self._pending.mark(path, data=True, children=True)
                event = sm.CutShort(lost, self._reader.rearm, tuple(todo))
            except Exception as exc:
                error, event = exc, sm.Failed()
            if event is not None:
                self._state, replaced = sm.decide(self._state, event)
                if replaced is not None:
                    todo = list(replaced)

    def _do(self, action: sm.Action, unanswered: frozenset[str], error: Exception | None) -> sm.Event | None:
        if isinstance(action, sm.SelfCheck):
            self._reader.self_check(self.root)
        elif isinstance(action, sm.CatchUp):
            # A new session (or a due re-check): see ZxidGuard.catch_up.
            if self._guard.catch_up(recheck=action.full and self._guard.rechecks > 0):
                self._tree.czxids.clear()
                return sm.CaughtUp(regressed=True)
        elif isinstance(action, sm.FullRead):
            return self._full_sync(action)
        elif isinstance(action, sm.ApplyFetched):
            return None if self._walker.apply_fetched(action.fetched) else self._root_gone()
        elif isinstance(action, sm.Read):
            complete = self._walker.read(action.data | unanswered, action.children | unanswered)
            if complete and self._status.root_missing and self.root in self._tree.children:
                self._tree.report_root(False, held=0, keys=len(self._cache))
                self._status.mark_synced(resync=True, reason="root_recreated")
            return None if complete else self._root_gone()
        elif isinstance(action, sm.Confirm):
            # setWatches confirmed every key it did not fire for: they are fresh, not due for a re-read by
            # the reconciler (which would make the outage a full re-read after all).
            self._cache.touch_all()
            self._status.mark_synced(resync=True, reason=self._resync_reason())
            log.info("config resynced", extra={"hosts": self.hosts, "root": self.root})
            return sm.Confirmed()
        elif isinstance(action, sm.Backoff):
            # A bug or an unexpected answer: never spin. Report stale, back off exponentially, and rebuild
            # from a full read.
            self._status.mark_stale()
            log.error(
                "config sync failed; serving last-known-good values and retrying in %.1f s",
                action.delay,
                exc_info=error,
                extra={"error_code": "E0409", "root": self.root, "hosts": self.hosts, "failures": action.failures},
            )
            self._stopping.wait(action.delay)
        return None

    def _root_gone(self) -> sm.RootMissing:
        self._root_event = True
        return sm.RootMissing()

    def _full_sync(self, action: sm.FullRead) -> sm.FullSyncDone | None:
        client_id = self.client.client_id
        session = client_id[0] if client_id else None
        start_seq = self._reader.next_seq()
        found: set[str] = set()
        self._tree.denied = []
        persistent = self._ensure_watch()
        results = self._walker.read_tree()
        if self._stopping.is_set():
            return None  # a partial read must not delete what it did not reach
        root_appeared = False
        root_missing = any(r.path == self.root and r.missing for r in results)
        if root_missing and not persistent:
            # The root does not exist (yet): an exists watch tells us when it is created (a persistent watch
            # reports it by itself). If it appeared in the meantime, the watch is armed but will not fire
            # for that creation: load again.
            stat = self._reader.wait(self.client.exists_async(self.root, watch=self._watch))
            self._status.add("reads")
            self._status.add("requests")
            root_appeared = stat is not None and not isinstance(stat, BaseException)
        # Every level is applied in one batch, so snapshot() and the snapshot file never mix levels.
        with self._cache.batch():
            # The watch events marked before this read started are answered by it -- only now, under the cache
            # lock: a verification applying meanwhile (it passed its check before this read was decided) must
            # still see them as pending, not as drift.
            self._pending.answer_all(start_seq)
            for result in results:
                self._tree.apply(result, found=found, full=True, reconcile=False)
            self._tree.end_full_read()
            if self._tree.denied and not self.loaded.is_set():
                paths = ", ".join(self._tree.denied[:5])
                self.load_error = ConfigAccessError(
                    f"ZooKeeper at {self.hosts} denied reading {paths} under root {self.root}: check the "
                    "credentials (auth=) and the ACLs of those nodes",
                    paths=self._tree.denied,
                )
            held = len(self._cache)
            if not self._guard.behind():
                for key in self._cache.keys() - found:
                    self._cache.remove(key, seq=start_seq)
                self._reader.keep_sizes(self._tree.prune(found, root=not root_missing))
            self._status.source = "zookeeper"
            root_event = self._root_event
            self._root_event = False
            recreated = (self._status.root_missing or root_event) and not root_missing
            reason: ResyncReason = "root_recreated" if recreated else self._resync_reason()
            # A root deleted is a change of the tree, not a reconnect: not counted; one created again is.
            counted = recreated or (action.resync and not root_event and not root_missing)
            self._status.mark_synced(resync=counted, reason=reason)
            # Said before start() can return on this load.
            self._tree.report_root(root_missing, held=held, keys=len(found))
            # Set under the cache lock: a snapshot served at start must not land after this load.
            self.loaded.set()
        if action.resync and not root_event and not root_missing and not recreated:
            log.info(
                "config resynced after %s",
                RESYNCED_AFTER[reason],
                extra={"hosts": self.hosts, "root": self.root, "keys": len(found), "reason": reason},
            )
        self._guard.checked_session = session
        return sm.FullSyncDone(session, root_appeared=root_appeared)

    def _resync_reason(self) -> ResyncReason:
        """Whether the resync completing now follows a new session; the session is remembered for the next."""
        client_id = self.client.client_id
        session = client_id[0] if client_id else None
        previous, self._synced_session = self._synced_session, session
        if self._gap:
            self._gap = False
            return "gap"
        return "reconnect" if previous is None or session == previous else "session_expired"

    def _rearm(self, action: sm.Rearm) -> frozenset[str]:
        """Resync after a reconnect without re-reading the tree (kazoo #664's read spike).

        Per node, ``setWatches`` relative to the last zxid seen before the drop re-arms every watch; the
        server fires at once each one whose znode changed, appeared under a watched parent, or vanished
        meanwhile, and only those are read again; a marker sent through kazoo's callback queue after those
        firings says when they were all handled. With a persistent watch, the watch is added again and a
        short second session does that ``setWatches`` (:meth:`RecursiveWatch.catch_up`). Returns the paths
        whose watch events reached us before the drop but were never answered: they are read right after.
        """
        with self._cache.batch():
            data_paths, child_paths, exist_paths = self._tree.known_paths()
        unanswered = self._pending.paths()
        marker = ("synced", action.generation)
        if not self._ensure_watch():
            self._reader.arm(data_paths, child_paths, action.relative, exist_paths)
            self.client.handler.dispatch_callback(Callback("watch", self._queue.put, (marker,)))
        elif self._recursive.catch_up(
            action.relative, data_paths, child_paths, exist_paths, self._callbacks.on_catch_up
        ):
            self._queue.put(marker)
        else:
            self._gap = True  # no catch-up session: the whole tree is read again
            self._queue.put(("resync", None))
        return unanswered

    def _ensure_watch(self) -> bool:
        """Add the persistent watch on this connection (once); False in per-node mode."""
        persistent = self._recursive.ensure(self._callbacks.connections)
        self._tree.adopt = persistent
        return persistent

    # --- the reconciler's entry point ------------------------------------------------------------

    def reread(self, keys: Iterable[str]) -> int:
        """Re-read ``keys`` (``""`` is the root's child list) and correct drift; returns the reads issued."""
        if not self._following():
            return 0  # a resync is due or running: it finds every difference, and they are not drift
        verified = self._walker.verify(
            keys, timeout=self._op_timeout, stats=self._recursive.active, following=self._following
        )
        if verified is None:
            return 0
        follow, issued = verified
        if follow:
            self._queue.put(("read", follow))
        self._status.mark_confirmed()
        return issued

    def _following(self) -> bool:
        """No resync or full read is due or running (checked again before a re-read's differences count)."""
        return self._state.fresh and self.client.connected and self._status.stale_since is None

    @property
    def reads_per_key(self) -> float:
        """What verifying one key costs: an ``exists`` under a persistent watch, else a data and a child read."""
        return 1.0 if self._recursive.active else 2.0
