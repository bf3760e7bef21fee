"""Sync status: connection state, staleness and counters, reported by ``ConfigClient.health()``.

Staleness is measured with the injected ``timer`` from the moment the cache stopped following its
source (suspension, session loss, or a start that served a snapshot) until the next complete resync.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["SyncStatus"]


class SyncStatus:
    """Counters and staleness of one client. Thread-safe; every method is cheap and never blocks on I/O."""

    def __init__(self, *, timer: Callable[[], float], wall_clock: Callable[[], float] = time.time) -> None:
        self._timer = timer
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self.connected = False
        self.source = "none"
        self.stale_since: float | None = None
        self.last_sync: float | None = None
        self.rejected = 0
        self.drift_corrected = 0
        self.resyncs = 0
        self.reads = 0
        self.requests = 0

    def mark_stale(self) -> None:
        """The cache stopped following its source now (kept if already stale: staleness counts from the first
        moment)."""
        with self._lock:
            if self.stale_since is None:
                self.stale_since = self._timer()

    def mark_synced(self, *, resync: bool) -> None:
        """A complete load or resync finished: the cache follows its source again."""
        with self._lock:
            self.stale_since = None
            self.last_sync = self._wall_clock()
            if resync:
                self.resyncs += 1

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

    def report(self, *, applied: int, keys: int) -> Mapping[str, Any]:
        """The ``health()`` mapping."""
        with self._lock:
            return MappingProxyType(
                {
                    "connected": self.connected,
                    "stale_seconds": self.stale_seconds(),
                    "last_sync": self.last_sync,
                    "applied": applied,
                    "rejected": self.rejected,
                    "drift_corrected": self.drift_corrected,
                    "resyncs": self.resyncs,
                    "reads": self.reads,
                    "requests": self.requests,
                    "source": self.source,
                    "keys": keys,
                }
            )
