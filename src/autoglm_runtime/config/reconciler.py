"""The TTL safety net: re-read entries whose freshness deadline passed, gently.

Watches can be missed (a bug, a dropped event, a watch lost in a reconnect race). Every cached entry has
a deadline about ``ttl`` after it was last confirmed (jittered per entry, see ``cache.py``); the
reconciler thread re-reads expired entries in pipelined batches. It is rate limited by a token bucket
(``rate`` reads per second on the injected timer, burst one second's worth; a key costs
``reads_per_key`` reads) and waits a random ``0..jitter`` seconds before each batch, so a fleet of
clients started together does not hit one ensemble in lock-step. What it finds different is corrected
by the sync layer and reported as E0409 "drift corrected".
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable

from autoglm_runtime.config.cache import ConfigCache
from autoglm_runtime.errors import UsageError

__all__ = ["Reconciler"]

log = logging.getLogger(__name__)


class Reconciler:
    """Re-reads expired cache entries through ``reread(keys) -> reads issued`` on a named thread.

    ``reads_per_key`` is what one key costs the token bucket (a number, or a callable asked each batch: for
    ZooKeeper 1 ``exists`` under a persistent watch, else 2, data and child list).
    ``ready()`` says whether re-reading makes sense now (connected, loaded); ``interval`` is how often
    (real seconds) the thread looks for expired entries.
    """

    def __init__(
        self,
        *,
        cache: ConfigCache,
        reread: Callable[[list[str]], int],
        timer: Callable[[], float],
        rate: float = 50.0,
        jitter: float = 1.0,
        interval: float = 1.0,
        batch_size: int = 500,
        reads_per_key: float | Callable[[], float] = 2.0,
        ready: Callable[[], bool] = lambda: True,
        rng: random.Random | None = None,
        name: str = "autoglm-config-reconcile",
    ) -> None:
        if rate <= 0:
            raise UsageError(f"reconcile_rate must be a positive number of reads per second, got {rate}")
        self._cache = cache
        self._reread = reread
        self._timer = timer
        self._rate = rate
        self._capacity = max(rate, 2.0)
        self._tokens = self._capacity
        self._refilled_at = timer()
        self._jitter = jitter
        self._interval = interval
        self._batch_size = batch_size
        self._cost = reads_per_key if callable(reads_per_key) else (lambda cost=reads_per_key: cost)
        self._ready = ready
        self._rng = rng if rng is not None else random.Random()
        self._name = name
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.batches = 0

    def start(self) -> None:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        thread, self._thread = self._thread, None
        self._stopping.set()
        if thread is not None:
            thread.join(timeout)

    def run_once(self) -> int:
        """Re-read one batch of expired entries if the token bucket allows; returns the keys re-read."""
        now = self._timer()
        self._tokens = min(self._capacity, self._tokens + (now - self._refilled_at) * self._rate)
        self._refilled_at = now
        # Charged per read, not per key: a ZooKeeper key costs a data and a child-list read.
        affordable = int(self._tokens / max(self._cost(), 1e-9))
        if affordable < 1:
            return 0
        keys = self._cache.expired(limit=min(self._batch_size, affordable))
        if not keys:
            return 0
        if self._jitter > 0 and self._stopping.wait(self._rng.uniform(0.0, self._jitter)):
            return 0
        issued = self._reread(keys)
        self._tokens -= issued
        self.batches += 1
        return len(keys)

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            if not self._ready():
                continue
            try:
                self.run_once()
            except Exception:
                log.exception(
                    "config reconciler failed; it retries at the next interval", extra={"error_code": "E0409"}
                )
