"""What kazoo's threads do for the config sync: record, queue for the sync thread, never wait on ZooKeeper.

* kazoo's connection thread runs :meth:`KazooCallbacks.on_state`: it records the state and the last zxid seen
  and queues a note for the sync thread (calling ZooKeeper there deadlocks, kazoo #356/#381);
* kazoo's callback thread runs :meth:`KazooCallbacks.on_watch` (and :meth:`KazooCallbacks.on_catch_up` for the
  catch-up session's firings): it queues the path, and for a value changed, a znode created or deleted issues
  the re-read without waiting for it (a thread hop saved on the path every update takes).

Everything queued is an :data:`._inbox.Item` the sync thread (:mod:`._sync`) collects.
"""

from __future__ import annotations

import logging
import queue
import threading

from kazoo.client import KazooClient
from kazoo.protocol.states import EventType, KazooState, WatchedEvent

from autoglm_runtime.config._inbox import Item
from autoglm_runtime.config._pending import PendingPaths
from autoglm_runtime.config._reader import ZooKeeperReader
from autoglm_runtime.config._zxid import ZxidGuard
from autoglm_runtime.config.health import SyncStatus

__all__ = ["KazooCallbacks"]

log = logging.getLogger("autoglm_runtime.config")


class KazooCallbacks:
    """The connection listener and watch callbacks of one :class:`._sync.ZooKeeperSync`."""

    def __init__(
        self,
        *,
        hosts: str,
        root: str,
        client: KazooClient,
        inbox: queue.SimpleQueue[Item],
        reader: ZooKeeperReader,
        pending: PendingPaths,
        guard: ZxidGuard,
        status: SyncStatus,
        stopping: threading.Event,
    ) -> None:
        self.hosts = hosts
        self.root = root
        self.client = client
        self._queue = inbox
        self._reader = reader
        self._pending = pending
        self._guard = guard
        self._status = status
        self._stopping = stopping
        #: CONNECTED transitions so far (counted on kazoo's connection thread).
        self.connections = 0

    def on_state(self, state: KazooState) -> None:
        if state == KazooState.CONNECTED:
            self.connections += 1
            self._guard.note_connected()
            self._status.set_connected(True)
            zxid = 0
        else:
            # Everything up to this zxid reached us (as data or as a watch event) before the drop; kazoo
            # forgets it when it resets a lost session: the event carries it to the sync thread.
            zxid = self.client.last_zxid
            self._guard.note_drop(zxid)
            self._status.set_connected(False)
            self._status.mark_stale()
            log.warning(
                "config sync %s: serving last-known-good values until the resync completes",
                "suspended (connection lost)" if state == KazooState.SUSPENDED else "lost its session",
                extra={"error_code": "E0409", "hosts": self.hosts, "root": self.root, "state": str(state)},
            )
        self._queue.put(("state", (state, zxid)))

    def on_watch(self, event: WatchedEvent) -> None:
        # EventType.NONE: kazoo dropping its watches on a connection loss (the resync that follows covers it).
        if event.type == EventType.NONE or not event.path or self._stopping.is_set():
            return
        if event.path == self.root and event.type == EventType.CHANGED:
            return  # the root's own value is not a key (a persistent watch reports it)
        if event.type != EventType.CHILD and event.path != self.root:
            # Issue the re-read here (asynchronous, never blocking kazoo's callback thread): it saves a
            # thread hop on the path every update takes. The sync thread waits for it and applies it.
            # After a deletion the znode may already be back (a new incarnation): read its children too,
            # which (per node) arms the child watch the deletion consumed. A creation (reported by a
            # persistent watch) is read with its children as well.
            children = event.type != EventType.CHANGED
            try:
                started = self._reader.start_read(event.path, children=children)
            except Exception:  # kazoo refuses calls once closing; the sync thread reads it instead
                pass
            else:
                self._pending.mark(event.path, data=True, children=children, seq=started[0].seq)
                self._queue.put(("fetched", started))
                return
        self.queue_read(event)

    def on_catch_up(self, event: WatchedEvent) -> None:
        """A firing of the catch-up session's setWatches: read that znode (or child list) again."""
        if event.type == EventType.NONE or not event.path or self._stopping.is_set():
            return
        self.queue_read(event)

    def queue_read(self, event: WatchedEvent) -> None:
        """Have the sync thread read the value (or, for a child event, the child list) of the event's znode."""
        child = event.type == EventType.CHILD
        self._pending.mark(event.path, data=not child, children=child)
        self._queue.put(("children" if child else "data", event.path))
