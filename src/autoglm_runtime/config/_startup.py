"""How ``ConfigClient.start()`` waits for the first load from ZooKeeper, and how it falls back to the snapshot.

The wait polls :meth:`~autoglm_runtime.config.ConfigClient.stop`'s request and, with a snapshot to fall back on,
whether every host refuses connections, which no waiting cures. The fallback serves the snapshot's values, as
stale as the snapshot, until the load from ZooKeeper lands (whichever lands first wins, under the cache lock).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from autoglm_runtime.config._values import ValuePipeline
from autoglm_runtime.config.cache import ConfigCache
from autoglm_runtime.config.health import SyncStatus
from autoglm_runtime.config.settings import all_refused
from autoglm_runtime.config.snapshot import read_snapshot
from autoglm_runtime.errors import SnapshotError, UsageError

__all__ = ["serve_snapshot", "wait_loaded"]

log = logging.getLogger("autoglm_runtime.config")


def wait_loaded(
    loaded: threading.Event, stop_requested: threading.Event, *, hosts: str, timeout: float, give_up_when_refused: bool
) -> bool:
    """Wait up to ``timeout`` s for ``loaded``, polling ``stop_requested`` (then :class:`UsageError`) so a stop never
    waits out the whole timeout, and (``give_up_when_refused``) whether every host refuses connections."""
    deadline = time.monotonic() + timeout
    probe_at = time.monotonic() + 0.2
    while not stop_requested.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return loaded.is_set()
        if loaded.wait(min(remaining, 0.05)):
            return True
        if give_up_when_refused and time.monotonic() >= probe_at:
            probe_at = time.monotonic() + 1.0
            if all_refused(hosts):
                return loaded.is_set()
    raise UsageError("stopped during start: ConfigClient.stop() was called while start() waited for ZooKeeper")


def serve_snapshot(
    path: Path,
    *,
    hosts: str,
    root: str,
    timeout: float,
    cache: ConfigCache,
    pipeline: ValuePipeline,
    status: SyncStatus,
    loaded: threading.Event,
) -> None:
    """Load the snapshot at ``path`` into ``cache`` through ``pipeline``, unless the load from ZooKeeper
    (``loaded``) landed meanwhile; :class:`SnapshotError` if the snapshot is refused (``timeout`` is the wait that
    ZooKeeper did not answer in, for its message)."""
    try:
        snapshot = read_snapshot(path, hosts=hosts, root=root)
    except SnapshotError as exc:
        raise SnapshotError(
            f"{exc.message}; ZooKeeper at {hosts} (root {root}) could not be reached within "
            f"{timeout:g} s, so there is nothing to serve"
        ) from exc
    with cache.batch():
        if not loaded.is_set():
            for key, entry in snapshot.entries.items():
                pipeline.ingest(key, entry.data, czxid=entry.czxid, mzxid=entry.mzxid, seq=0)
            # The values are as old as the snapshot, not as the start.
            status.serve_snapshot(snapshot.written_at)
    log.warning(
        "ZooKeeper unreachable at start: serving the snapshot (%d keys) and reporting stale until it connects",
        len(snapshot.entries),
        extra={"error_code": "E0409", "hosts": hosts, "root": root, "path": str(path)},
    )
