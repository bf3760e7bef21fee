"""Sync status: lifecycle, connection state, staleness and counters, reported by ``ConfigClient.health()``.

Staleness is measured with the injected ``timer`` from the moment the cache stopped following its
source (suspension, session loss, a start that served a snapshot, or ``stop()``) until the next complete
resync. :class:`ConfigHealth` is what ``health()`` returns: a plain ``dict`` at run time, so
``json.dumps(client.health())`` works as is.
"""

from __future__ import annotations

import collections
import threading
import time
import weakref
from collections.abc import Callable
from typing import Literal, TypedDict

from autoglm_runtime._fork import after_fork_in_child
from autoglm_runtime.observability._tracing import record_span

__all__ = [
    "ConfigHealth",
    "ConfigSource",
    "ConfigState",
    "RejectReason",
    "ResyncReason",
    "SyncStatus",
    "WatchMode",
]

#: Where a client is in its life: ``"new"`` (created, ``start()`` not called), ``"starting"`` (``start()``
#: is loading), ``"running"`` (``start()`` returned; the client follows its source or tries to),
#: ``"stopped"`` (``stop()`` was called) and ``"failed"`` (``start()`` raised; the client was shut down).
ConfigState = Literal["new", "starting", "running", "stopped", "failed"]

#: Where the cached values came from: ``"none"`` (nothing loaded yet), ``"zookeeper"``, ``"snapshot"``
#: (the snapshot file served at start, until ZooKeeper answers) or ``"file"`` (the ``file://`` backend).
ConfigSource = Literal["none", "zookeeper", "snapshot", "file"]

#: Why a resync ran: ``"reconnect"`` (the connection came back, same session), ``"session_expired"`` (a new
#: session after the old one expired), ``"gap"`` (after a reconnect the client could not catch up on what it
#: missed and read the whole tree again) or ``"root_recreated"`` (the root was missing, then created again:
#: its tree was loaded anew).
ResyncReason = Literal["reconnect", "session_expired", "gap", "root_recreated"]
#: How the "config resynced after ..." log line names each reason.
RESYNCED_AFTER: dict[ResyncReason, str] = {
    "reconnect": "a reconnect",
    "session_expired": "session expiry",
    "gap": "a reconnect it could not catch up on",
    "root_recreated": "the root was created again",
}

#: How a ZooKeeper client follows its tree: ``"persistent"`` (one persistent recursive watch on the root,
#: ZooKeeper 3.6+), ``"per_node"`` (a data and a child watch per znode: servers before 3.6, or
#: ``SyncTuning(watch_mode="per_node")``); ``"none"`` for the ``file://`` backend.
WatchMode = Literal["persistent", "per_node", "none"]

#: Why an update was refused: ``"decode"`` (the codec could not decode it) or ``"validator"`` (it refused it).
RejectReason = Literal["decode", "validator"]

RESYNC_SPAN = "autoglm.config.resync"


class ConfigHealth(TypedDict):
    """What :meth:`ConfigClient.health() <autoglm_runtime.config.ConfigClient.health>` returns.

    A ``dict`` at run time (JSON-ready: str, bool, int, float and ``None`` values, dicts of ints and a list of
    str), typed for mypy.
    Each call returns a new one.

    * ``state`` (:data:`ConfigState`): ``"new"``, ``"starting"``, ``"running"``, ``"stopped"`` or ``"failed"``.
    * ``connected`` (bool): the client is running and its session is CONNECTED (always, for ``file://``);
      False in every other state. It says nothing about the values: after a start that served the snapshot, or
      a reconnect, the session is CONNECTED before the tree is loaded or resynced; ``following`` says that.
    * ``following`` (bool): the values served come from a completed load or resync of the source and the
      client follows it now: running, connected, ``source`` "zookeeper" or "file" and ``stale_seconds`` 0.0.
      False while the snapshot a start served is still what the cache holds, during a resync, after a sync
      failure and in every state but "running". It says nothing of ``root_missing`` or ``denied``.
    * ``stale_seconds`` (float): 0.0 while the cache follows its source, and for a client that never
      loaded anything; otherwise seconds on the injected ``timer`` since it stopped following (first
      suspension, session loss, a sync failure, ``stop()``; for a start that served a snapshot, since the
      snapshot was written).
    * ``last_sync`` (float or None): Unix time of the last completed load or resync.
    * ``last_confirmed`` (float or None): Unix time ZooKeeper (or the directory) last confirmed the cache while it
      followed its source: a load, a resync, a completed verification re-read (or directory scan); for a start
      that served a snapshot, when the snapshot was written. It keeps moving while all is well (at least every
      ``ttl``), so "now minus this" is how out of date the cache may be.
    * ``applied`` (int): changes applied to the cache (adds, updates, deletes).
    * ``rejected`` (int): data refused by the codec or the validator.
    * ``drift_corrected`` (int): differences the reconciler found and fixed.
    * ``resyncs`` (int): completed resyncs after a reconnect or a new session.
    * ``resync_reasons`` (dict): ``resyncs`` by :data:`ResyncReason`.
    * ``rejected_reasons`` (dict): ``rejected`` by :data:`RejectReason`.
    * ``reads`` (int): znode reads issued; ``requests`` (int): ZooKeeper requests those reads took.
    * ``source`` (:data:`ConfigSource`): ``"none"``, ``"zookeeper"``, ``"snapshot"`` or ``"file"``.
    * ``keys`` (int): number of cached keys.
    * ``root_missing`` (bool): ZooKeeper answered that the root does not exist (a typo in the root, or it
      was deleted); the client follows it and loads it once it is created. Logged once as E0409.
    * ``watch_mode`` (:data:`WatchMode`): ``"persistent"``, ``"per_node"`` or ``"none"`` (``file://``).
    * ``denied`` (list of str): the znodes ZooKeeper refuses to let the client read (ACL), sorted; their keys
      keep their last known values, or stay absent (as after ``start(allow_denied=True)``). Each is logged once
      as E0409, and leaves the list once a read of it succeeds or it is deleted.
    """

    state: ConfigState
    connected: bool
    following: bool
    stale_seconds: float
    last_sync: float | None
    last_confirmed: float | None
    applied: int
    rejected: int
    drift_corrected: int
    resyncs: int
    resync_reasons: dict[str, int]
    rejected_reasons: dict[str, int]
    reads: int
    requests: int
    source: ConfigSource
    keys: int
    root_missing: bool
    watch_mode: WatchMode
    denied: list[str]


class SyncStatus:
    """Counters and staleness of one client. Thread-safe; every method is cheap and never blocks on I/O."""

    def __init__(
        self, *, timer: Callable[[], float], wall_clock: Callable[[], float] = time.time, root: str = ""
    ) -> None:
        self._timer = timer
        self._root = root
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        _STATUSES.add(self)
        self.state: ConfigState = "new"
        self.connected = False
        self.source: ConfigSource = "none"
        self.stale_since: float | None = None
        self.last_sync: float | None = None
        self.last_confirmed: float | None = None
        self.rejected = 0
        self.drift_corrected = 0
        self.resyncs = 0
        self.resync_reasons: collections.Counter[str] = collections.Counter()
        self.rejected_reasons: collections.Counter[str] = collections.Counter()
        self.reads = 0
        self.requests = 0
        self._stale_wall: float | None = None  # when it went stale, on the wall clock: where a resync span starts
        self.root_missing = False
        self.watch_mode: WatchMode = "none"
        #: The znodes ZooKeeper refuses to let the client read, sorted (the sync thread replaces the tuple).
        self.denied: tuple[str, ...] = ()

    def forked(self) -> None:
        """This is a copy in a process forked from the one whose client it reports on: none of that client's
        threads run here, so it follows nothing from now on, whatever it did before the fork."""
        self._lock = threading.Lock()  # a thread of the parent may have held it at the fork
        if self.state in ("starting", "running"):
            self.connected = False
            if self.stale_since is None:
                self.stale_since = self._timer()
                self._stale_wall = self._wall_clock()

    def mark_stale(self, *, age: float = 0.0) -> None:
        """The cache stopped following its source ``age`` seconds ago (kept if already stale: staleness counts
        from the first moment)."""
        with self._lock:
            if self.stale_since is None:
                self.stale_since = self._timer() - max(0.0, age)
                self._stale_wall = self._wall_clock() - max(0.0, age)

    def serve_snapshot(self, written_at: float) -> None:
        """The cache now holds a snapshot written at ``written_at`` (Unix time): it is as stale as the snapshot
        is old, and that is when its source last confirmed it, so an alert on ``last_confirmed`` ages from there
        instead of finding no timestamp at all."""
        self.mark_stale(age=self.wall_age(written_at))
        with self._lock:
            self.source = "snapshot"
            self.last_confirmed = written_at

    def wall_age(self, unix_time: float) -> float:
        """Seconds from ``unix_time`` until now on the wall clock (0 for a time in the future)."""
        return max(0.0, self._wall_clock() - unix_time)

    def mark_synced(self, *, resync: bool, reason: ResyncReason = "reconnect") -> None:
        """A complete load or resync finished: the cache follows its source again (unless it was stopped).

        A resync is counted under ``reason`` and traced as one ``autoglm.config.resync`` span, from the moment
        the cache stopped following its source to now.
        """
        with self._lock:
            if self.state in ("stopped", "failed"):
                return
            self.stale_since = None
            began, self._stale_wall = self._stale_wall, None
            now = self.last_sync = self.last_confirmed = self._wall_clock()
            if not resync:
                return
            self.resyncs += 1
            self.resync_reasons[reason] += 1
        start = began if began is not None else now
        record_span(
            RESYNC_SPAN,
            start_ns=int(start * 1e9),
            end_ns=int(now * 1e9),
            attributes={"autoglm.config.root": self._root, "autoglm.config.resync.reason": reason},
        )

    def mark_confirmed(self) -> None:
        """The source confirmed the cache now (a verification re-read or a scan completed); ignored while stale,
        when only a resync can confirm it."""
        with self._lock:
            if self.stale_since is None and self.state not in ("stopped", "failed"):
                self.last_confirmed = self._wall_clock()

    def reject(self, reason: RejectReason) -> None:
        """An update was refused (counted in ``rejected`` and by ``reason``)."""
        with self._lock:
            self.rejected += 1
            self.rejected_reasons[reason] += 1

    def set_connected(self, connected: bool) -> None:
        with self._lock:
            self.connected = connected

    def add(self, counter: str, amount: int = 1) -> None:
        """Add ``amount`` to ``rejected``, ``drift_corrected``, ``resyncs``, ``reads`` or ``requests``."""
        with self._lock:
            setattr(self, counter, getattr(self, counter) + amount)

    def stale_seconds(self) -> float:
        """Seconds since the cache stopped following its source; ``0.0`` while it follows it."""
        since = self.stale_since
        if since is None:
            return 0.0
        return max(0.0, self._timer() - since)

    def set_state(self, state: ConfigState) -> None:
        """Record a lifecycle step. ``"stopped"`` and ``"failed"`` end following for good: a cache that holds
        values is stale from then on (its source moves on without it) and no later sync clears that."""
        with self._lock:
            ended = state in ("stopped", "failed")
            if ended and self.source != "none" and self.stale_since is None:
                self.stale_since = self._timer()
            self.state = state

    def report(self, *, applied: int, keys: int) -> ConfigHealth:
        """The ``health()`` dict."""
        with self._lock:
            # Only a running client is connected, whatever the source's last callback said.
            connected = self.connected and self.state == "running"
            return ConfigHealth(
                state=self.state,
                connected=connected,
                # A session CONNECTED before the load (or resync) completes still serves the snapshot's values
                # (or those from before the drop): only a completed load clears stale_since and sets the source.
                following=connected and self.stale_since is None and self.source in ("zookeeper", "file"),
                stale_seconds=self.stale_seconds(),
                last_sync=self.last_sync,
                last_confirmed=self.last_confirmed,
                applied=applied,
                rejected=self.rejected,
                drift_corrected=self.drift_corrected,
                resyncs=self.resyncs,
                resync_reasons=dict(self.resync_reasons),
                rejected_reasons=dict(self.rejected_reasons),
                reads=self.reads,
                requests=self.requests,
                source=self.source,
                keys=keys,
                root_missing=self.root_missing,
                watch_mode=self.watch_mode,
                denied=list(self.denied),
            )


# Every status of this process, so that a forked child can tell the truth about the clients it inherited.
_STATUSES: weakref.WeakSet[SyncStatus] = weakref.WeakSet()


@after_fork_in_child
def _forked() -> None:
    # A ConfigClient started before a fork (gunicorn --preload, a module-level start() in a prefork server) kept
    # reporting connected and following in the child, where no sync thread runs and no change ever arrives.
    for status in list(_STATUSES):
        status.forked()
