"""The ``file://`` backend: the same client API served from a directory, for development.

``ConfigClient(hosts="file:///srv/config", root="/autoglm/dev")`` reads ``/srv/config/autoglm/dev``: every
regular file below it is a key (its path relative to that directory, ``/``-separated) and its content is
the data the codec decodes. Names starting with a dot are ignored, so editors' temp files and atomic
renames do not show up as keys. A poller thread follows edits every ``interval`` seconds (stat
signature: mtime, size, inode); the reconciler re-reads contents whose TTL passed, catching edits a
coarse mtime could hide. Versions are a counter of our own (there is no zxid): they only grow.
A directory or file that cannot be read (permissions) is not a deletion: its keys keep their last known
values, the client reports stale and logs E0409 until it can read them again.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from autoglm_runtime.config._values import ValuePipeline
from autoglm_runtime.config.cache import ConfigCache
from autoglm_runtime.config.health import SyncStatus
from autoglm_runtime.errors import ConfigUnavailableError

__all__ = ["FileSync", "file_directory"]

log = logging.getLogger("autoglm_runtime.config")


def file_directory(hosts: str, root: str) -> Path:
    """The directory a ``file://`` hosts string and a root name: ``file:///srv/c`` + ``/a`` -> ``/srv/c/a``."""
    base = hosts[len("file://") :]
    return Path(base) / root.strip("/")


class FileSync:
    """Keeps ``cache`` equal to the files under ``directory``."""

    def __init__(
        self,
        *,
        directory: Path,
        hosts: str,
        root: str,
        cache: ConfigCache,
        pipeline: ValuePipeline,
        status: SyncStatus,
        interval: float,
    ) -> None:
        self.directory = directory
        self.hosts = hosts
        self.root = root
        self._cache = cache
        self._pipeline = pipeline
        self._status = status
        self._interval = interval
        self._lock = threading.Lock()
        self._signatures: dict[str, tuple[int, int, int]] = {}
        self._created: dict[str, int] = {}
        self._contents: dict[str, bytes] = {}
        self._version = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.loaded = threading.Event()

    def start(self) -> None:
        """Load every file now, then follow edits on the ``autoglm-config-files`` thread."""
        if not self.directory.is_dir():
            raise ConfigUnavailableError(
                f"config directory {self.directory} (hosts {self.hosts}, root {self.root}) does not exist or is "
                "not a directory: create it or fix hosts/root"
            )
        self.scan()
        self._status.set_connected(True)
        self._status.mark_synced(resync=False)
        self.loaded.set()
        self._thread = threading.Thread(target=self._run, name="autoglm-config-files", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(10.0)

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            try:
                complete = not self.scan()
            except OSError:
                complete = False
            if not complete:
                self._status.mark_stale()
            elif self._status.stale_since is not None:
                self._status.mark_synced(resync=True)
            else:
                self._status.mark_confirmed()

    def _walk(self) -> tuple[dict[str, os.stat_result], list[str]]:
        """Every file's stat, and the (relative) directories that could not be listed."""
        found: dict[str, os.stat_result] = {}
        errors: list[OSError] = []
        for dirpath, dirnames, filenames in os.walk(self.directory, onerror=errors.append):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.startswith("."):
                    continue
                full = os.path.join(dirpath, name)
                try:
                    st = os.stat(full)
                except FileNotFoundError:
                    continue
                key = Path(full).relative_to(self.directory).as_posix()
                found[key] = st
        unreadable: list[str] = []
        for error in errors:
            if isinstance(error, FileNotFoundError) or error.filename is None:
                continue  # removed while we walked: a deletion like any other
            relative = os.path.relpath(os.fsdecode(error.filename), self.directory)
            unreadable.append("" if relative == "." else Path(relative).as_posix())
        return found, unreadable

    def scan(self) -> list[str]:
        """Apply every file added, changed or removed since the last scan; returns the directories that
        could not be read (their keys keep their last known values)."""
        if not self.directory.is_dir():
            raise FileNotFoundError(str(self.directory))
        found, unreadable = self._walk()
        with self._lock, self._cache.batch():
            for key, st in found.items():
                signature = (st.st_mtime_ns, st.st_size, st.st_ino)
                if self._signatures.get(key) != signature:
                    self._signatures[key] = signature
                    self._read(key)
            for key in [k for k in self._signatures if k not in found]:
                if not any(not d or key.startswith(d + "/") for d in unreadable):
                    self._forget(key)
        for directory in unreadable:
            log.warning(
                "config directory %s could not be read; keeping the last known values under it",
                self.directory / directory,
                extra={"error_code": "E0409", "path": str(self.directory / directory)},
            )
        return unreadable

    def reread(self, keys: Iterable[str]) -> int:
        """Re-read the content of ``keys`` (the TTL safety net); returns the files read."""
        count = 0
        with self._lock, self._cache.batch():
            for key in keys:
                count += 1
                try:
                    os.stat(self.directory / key)
                except FileNotFoundError:
                    pass
                except OSError:
                    self._status.mark_stale()  # unreadable is not deleted: keep the last known value
                    continue
                if not (self.directory / key).is_file():
                    if key in self._signatures:
                        self._forget(key)
                    else:
                        self._cache.remove(key, seq=self._bump())
                    continue
                if self._read(key):
                    log.warning(
                        "drift corrected: %r differed from its file (an edit was missed)",
                        key,
                        extra={"error_code": "E0409", "key": key, "path": str(self.directory / key)},
                    )
                    self._status.add("drift_corrected")
        return count

    def _bump(self) -> int:
        self._version += 1
        return self._version

    def _read(self, key: str) -> bool:
        try:
            data = (self.directory / key).read_bytes()
        except FileNotFoundError:
            self._forget(key)
            return True
        self._status.add("reads")
        if self._contents.get(key) == data:
            self._cache.touch(key)
            return False
        self._contents[key] = data
        version = self._bump()
        created = self._created.setdefault(key, version)
        change = self._pipeline.ingest(key, data, czxid=created, mzxid=version, seq=version)
        return change is not None

    def _forget(self, key: str) -> None:
        self._signatures.pop(key, None)
        self._created.pop(key, None)
        self._contents.pop(key, None)
        self._cache.remove(key, seq=self._bump())
