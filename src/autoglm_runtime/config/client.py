"""``ConfigClient``: a local config cache that never silently stops following ZooKeeper.

Data flows one way: ZooKeeper (or a directory) -> sync -> cache -> readers and listeners::

    from autoglm_runtime import ConfigClient

    with ConfigClient("127.0.0.1:2181", "/autoglm/prod", snapshot_path="/var/cache/autoglm/prod.snapshot") as config:
        window = config.get("models/llm/context_window", default=4096)
        unsubscribe = config.subscribe("models/", lambda change: print(change.key, change.kind))
        print(config.health()["stale_seconds"])   # a ConfigHealth dict: json.dumps() it as is

See ``docs/config-sync.md`` for what each failure does to readers and listeners.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from autoglm_runtime.config._files import FileSync, file_directory
from autoglm_runtime.config._reads import _MISSING, Reads
from autoglm_runtime.config._startup import serve_snapshot, wait_loaded
from autoglm_runtime.config._sync import ZooKeeperSync
from autoglm_runtime.config._values import Validator, ValuePipeline
from autoglm_runtime.config.cache import ConfigCache
from autoglm_runtime.config.codec import Codec, resolve_codec
from autoglm_runtime.config.dispatcher import ConfigChange, Dispatcher, Listener
from autoglm_runtime.config.health import ConfigHealth, SyncStatus
from autoglm_runtime.config.reconciler import Reconciler
from autoglm_runtime.config.settings import (
    Auth,
    SyncTuning,
    ZooKeeperConnection,
    check_hosts,
    check_root,
    normalize_auth,
    session_factory,
)
from autoglm_runtime.config.snapshot import SnapshotEntry, SnapshotWriter
from autoglm_runtime.errors import ConfigUnavailableError, UsageError

if TYPE_CHECKING:
    from kazoo.client import KazooClient

__all__ = ["ConfigClient"]


class ConfigClient(Reads):
    """Follows every znode under ``root`` and serves it from memory.

    ``hosts`` is a ZooKeeper connect string (``"h1:2181,h2:2181"``) or ``"file:///dir"`` for the directory
    backend. ``codec`` decodes each znode's data (``"json"``, ``"text"``, ``"bytes"`` or a
    :class:`~autoglm_runtime.config.codec.Codec`; empty data is ``None``). ``ttl`` seconds after an entry
    was last confirmed, the reconciler re-reads it. ``validator(key, value)`` may reject a value (raise, or
    return ``False``): the last good one stays. ``auth`` is ``("digest", "user:password")`` or a list of
    such pairs. Keyword-only: ``connection`` (:class:`~autoglm_runtime.config.ZooKeeperConnection`: session
    timeout, reconnect pacing, TLS), ``tuning`` (:class:`~autoglm_runtime.config.SyncTuning`: reconciler
    pace, batch sizes, snapshot debounce, file polling), ``timer`` (monotonic clock for TTL and staleness).

    ``client_factory`` replaces ``connection`` and ``auth`` where the caller wants the ``KazooClient`` in its
    own hands (``file://`` hosts use neither it nor ``connection``): it is called with no arguments and must
    return a new, unstarted client, which the ConfigClient starts, owns and stops; it is called again for each
    short catch-up session after a reconnect (see docs/config-sync.md, "Watch modes"). Each client needs a
    handler of its own (``KazooClient.stop()`` stops its handler): a catch-up client on the handler of the first
    is refused (E0001, logged on the E0409 line), and the gap is closed by reading the whole tree. A client that retries
    forever (``connection_retry=KazooRetry(max_tries=-1, ...)``) is what the sync expects;
    :meth:`ZooKeeperConnection.kazoo_client` builds one::

        settings = ZooKeeperConnection(session_timeout=4.0)
        config = ConfigClient(hosts, "/autoglm/prod", client_factory=lambda: settings.kazoo_client(hosts))
    """

    # The positional parameters are the public contract of issue 3 (hosts ... auth); extras are keyword-only.
    def __init__(  # noqa: PLR0917
        self,
        hosts: str,
        root: str,
        codec: str | Codec = "json",
        ttl: float = 30.0,
        snapshot_path: str | os.PathLike[str] | None = None,
        validator: Validator | None = None,
        auth: Auth | None = None,
        *,
        connection: ZooKeeperConnection | None = None,
        tuning: SyncTuning | None = None,
        client_factory: Callable[[], KazooClient] | None = None,
        start_timeout: float = 10.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        check_hosts(hosts)
        if ttl <= 0:
            raise UsageError(f"config ttl must be a positive number of seconds, got {ttl}")
        if start_timeout <= 0:
            raise UsageError(f"config start_timeout must be a positive number of seconds, got {start_timeout}")
        self.start_timeout = start_timeout
        if client_factory is not None and (connection is not None or auth is not None):
            raise UsageError(
                "give either client_factory or connection/auth: the factory's KazooClient carries its own "
                "connection settings and credentials"
            )
        tuning = tuning if tuning is not None else SyncTuning()
        connection = connection if connection is not None else ZooKeeperConnection()
        normalize_auth(auth)  # a malformed auth is a usage error for every backend
        self.hosts = hosts
        self.root = check_root(root)
        self.ttl = ttl
        self.snapshot_path = Path(snapshot_path) if snapshot_path is not None else None
        self._codec = resolve_codec(codec)
        self._timer = timer
        self._status = SyncStatus(timer=timer, root=self.root)
        self._dispatcher = Dispatcher()
        self._writer: SnapshotWriter | None = None
        self._cache = ConfigCache(ttl=ttl, timer=timer, publish=self._on_change, keep_data=snapshot_path is not None)
        self._values = self._cache.values
        self._pipeline = ValuePipeline(cache=self._cache, codec=self._codec, validator=validator, status=self._status)
        self._snapshot_debounce = tuning.snapshot_debounce
        self._lifecycle = threading.Lock()
        self._started = False
        self._stopped = False
        self._failed: BaseException | None = None
        self._shut_down = False
        self._stop_requested = threading.Event()
        #: The znodes ZooKeeper denied reading at start, when ``start(allow_denied=True)`` went on without them
        #: (``health()["denied"]`` follows those refused now).
        self.denied: tuple[str, ...] = ()
        self._source: ZooKeeperSync | FileSync
        if hosts.startswith("file://"):
            self._source = FileSync(
                directory=file_directory(hosts, self.root),
                hosts=hosts,
                root=self.root,
                cache=self._cache,
                pipeline=self._pipeline,
                status=self._status,
                interval=tuning.poll_interval,
            )
        else:
            new_session = session_factory(hosts, connection, auth, client_factory)
            self._source = ZooKeeperSync(
                hosts=hosts,
                root=self.root,
                cache=self._cache,
                pipeline=self._pipeline,
                status=self._status,
                client=new_session(),
                op_timeout=max(connection.session_timeout, 2.0),
                batch_size=tuning.batch_size,
                bulk_reads=tuning.bulk_reads,
                persistent_watch=tuning.watch_mode == "auto",
                session_factory=new_session,
            )
        source = self._source
        self._reconciler = Reconciler(
            cache=self._cache,
            reread=source.reread,
            timer=timer,
            rate=tuning.reconcile_rate,
            jitter=tuning.reconcile_jitter,
            interval=tuning.reconcile_interval,
            reads_per_key=(lambda: source.reads_per_key) if isinstance(source, ZooKeeperSync) else 1.0,
            ready=lambda: source.loaded.is_set() and self._status.connected,
        )

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self, timeout: float | None = None, *, allow_denied: bool = False) -> None:
        """Load the whole subtree, then follow it; returns once the cache holds a consistent picture.

        ``timeout`` defaults to the client's ``start_timeout`` (which ``with ConfigClient(...)`` uses). If
        ZooKeeper cannot be reached (and the tree loaded) within it and a valid snapshot exists, the
        snapshot is served, ``health()`` reports it stale since the snapshot was written, and the client
        keeps connecting in the background; when every host refuses the connection outright, a snapshot
        is served at once instead of after the whole timeout. Raises
        :class:`~autoglm_runtime.errors.ConfigUnavailableError` with neither,
        :class:`~autoglm_runtime.errors.SnapshotError` if the snapshot is refused, and
        :class:`~autoglm_runtime.errors.ConfigAccessError` if ZooKeeper denies reading part of the tree: its ``paths``
        name the znodes refused, and what could be read stays readable (:meth:`snapshot`, :meth:`get`). With
        ``allow_denied=True`` such a start returns instead, and the client follows what it may read: :attr:`denied`
        names the znodes refused (each also logged, E0409), whose keys stay absent.

        Calling it again after it returned does nothing. A start that raised leaves the client shut down
        (no thread left): calling ``start()`` again raises :class:`~autoglm_runtime.errors.UsageError`,
        create a new client instead. :meth:`stop` from another thread interrupts a waiting ``start()``,
        which then raises ``UsageError``.
        """
        with self._lifecycle:
            if self._stopped:
                raise UsageError("this ConfigClient was stopped; create a new one")
            if self._failed is not None:
                raise UsageError(
                    f"this ConfigClient failed to start ({type(self._failed).__name__}) and was shut down; "
                    "create a new one"
                )
            if self._started:
                return
            self._started = True
            timeout = self.start_timeout if timeout is None else timeout
            self._status.set_state("starting")
            self._dispatcher.start()
            try:
                self._start_source(timeout, allow_denied=allow_denied)
            except BaseException as exc:
                self._failed = exc
                self._status.set_state("stopped" if self._stop_requested.is_set() else "failed")
                self._shutdown()
                raise
            if self.snapshot_path is not None and isinstance(self._source, ZooKeeperSync):
                self._writer = SnapshotWriter(
                    self.snapshot_path,
                    hosts=self.hosts,
                    root=self.root,
                    collect=self._snapshot_entries,
                    entry=self._snapshot_entry,
                    lock=self._cache.lock,
                    debounce=self._snapshot_debounce,
                )
                self._writer.start()
                if self._status.source == "zookeeper":
                    self._writer.mark_dirty()
            self._reconciler.start()
            self._status.set_state("running")
        # Events of the initial load reach listeners subscribed before start(), not those subscribed after.
        self._dispatcher.wait_idle(max(timeout, 1.0))

    def _start_source(self, timeout: float, *, allow_denied: bool) -> None:
        source = self._source
        if isinstance(source, FileSync):
            source.start()
            self._status.source = "file"
            return
        source.start()
        refused = self.snapshot_path is not None and self.snapshot_path.exists()
        if wait_loaded(
            source.loaded, self._stop_requested, hosts=self.hosts, timeout=timeout, give_up_when_refused=refused
        ):
            if source.load_error is not None:
                if not allow_denied:
                    raise source.load_error
                self.denied = source.load_error.paths
            self._status.source = "zookeeper"
            return
        if self.snapshot_path is None or not self.snapshot_path.exists():
            where = f"no snapshot exists at {self.snapshot_path}" if self.snapshot_path else "no snapshot_path is set"
            raise ConfigUnavailableError(
                f"ZooKeeper at {self.hosts} could not be reached (or root {self.root} loaded) within {timeout:g} s "
                f"and {where}: start ZooKeeper, check hosts, or give a snapshot_path with a valid snapshot"
            )
        serve_snapshot(
            self.snapshot_path,
            hosts=self.hosts,
            root=self.root,
            timeout=timeout,
            cache=self._cache,
            pipeline=self._pipeline,
            status=self._status,
            loaded=source.loaded,
        )

    def stop(self) -> None:
        """Stop following: ends every thread of the client and closes the session, which drops every watch.

        The snapshot (if any) is written one last time if it has unwritten changes. Idempotent; interrupts a
        ``start()`` running in another thread. Afterwards :meth:`health` says ``state`` "stopped",
        ``connected`` False and ``stale_seconds`` counting from the stop; :meth:`get`, :meth:`version` and
        :meth:`snapshot` keep serving the last values; :meth:`subscribe` and :meth:`start` raise
        :class:`~autoglm_runtime.errors.UsageError`.
        """
        self._stop_requested.set()
        with self._lifecycle:
            if self._stopped:
                return
            self._stopped = True
            if self._failed is None:
                self._status.set_state("stopped")
            self._shutdown()

    def _shutdown(self) -> None:
        if self._shut_down:
            return
        self._shut_down = True
        self._reconciler.stop()
        if self._started:
            self._source.stop()
        if self._writer is not None:
            self._writer.stop()
        self._dispatcher.stop()

    def __enter__(self) -> ConfigClient:
        self.start(self.start_timeout)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- reading ---------------------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        """The cached value of ``key`` (relative to root, no leading slash), or ``default``.

        Never touches the network and never blocks on ZooKeeper. Values are shared with every reader, so
        containers are read-only (:class:`~autoglm_runtime.config.FrozenDict`, ``FrozenList``; a change in
        place raises :class:`~autoglm_runtime.errors.ReadOnlyValueError`): ``copy.deepcopy(value)`` gives a
        mutable copy. Before :meth:`start` there is nothing cached (``default``); after :meth:`stop`
        the last values stay readable, no longer followed: ``health()["state"]`` says "stopped". A key starting
        with '/' can never exist: it raises :class:`~autoglm_runtime.errors.UsageError` (E0001).
        """
        value = self._values.get(key, _MISSING)
        if value is _MISSING:
            if isinstance(key, str) and key[:1] == "/":  # (_refuse_absolute inline: a miss is a per-request read too)
                raise self._absolute(key)
            return default
        return value

    def version(self, key: str) -> int | None:
        """The mzxid of the cached value of ``key`` (as in :attr:`ConfigChange.version`), or ``None``; a key
        starting with '/' raises :class:`~autoglm_runtime.errors.UsageError` (E0001), as in :meth:`get`."""
        entry = self._cache.entry(key)
        if entry is None:
            self._refuse_absolute(key)
            return None
        return entry.mzxid

    def snapshot(self) -> Mapping[str, Any]:
        """An immutable, consistent mapping of every key to its value at one instant."""
        return self._cache.snapshot()

    def subscribe(self, prefix: str, fn: Listener) -> Callable[[], None]:
        """Call ``fn(change)`` on the dispatcher thread for each change under ``prefix`` (``""``: every key).

        Returns a callable that unsubscribes: once it returns, ``fn`` is never called again (from another thread
        it waits for a call of ``fn`` in progress; from within a listener it returns at once). The listener gets
        the changes applied after this call (not those still queued behind a slow listener). Per key, changes
        arrive in version order; a raising listener is logged (E0409) and the others still run. Subscribe before
        :meth:`start` to receive the initial load as ``added`` events. On a stopped (or failed) client, which
        delivers nothing any more, it raises :class:`~autoglm_runtime.errors.UsageError` (E0001).

        >>> unsubscribe = client.subscribe("models/", lambda change: print(change.key, change.new))  # doctest: +SKIP
        """
        # No lock: start() holds it while loading, and a listener may subscribe from the dispatcher thread.
        self._refuse_absolute(prefix)
        if self._stopped or self._failed is not None:
            ended = "shut down after its start failed" if self._failed is not None else "stopped"
            raise UsageError(
                f"cannot subscribe to {prefix!r}: this ConfigClient (hosts {self.hosts}, root {self.root}) "
                f"was {ended} and delivers no more changes; subscribe on a new, started client"
            )
        # Only changes published from now on: one applied earlier but still queued behind a slow listener is old news.
        # Counted under the cache's lock, which the cache holds from a value's update to its publication: a change
        # get() (which reads without it) already shows is counted too.
        with self._cache.lock:
            after = self._dispatcher.published
        return self._dispatcher.subscribe(prefix, fn, after=after)

    def wait_listeners(self, timeout: float) -> bool:
        """Wait until listeners have been called for every change applied so far; ``False`` on timeout."""
        return self._dispatcher.wait_idle(timeout)

    def health(self) -> ConfigHealth:
        """How well the cache follows its source: a new :class:`~autoglm_runtime.config.ConfigHealth` dict.

        Keys: ``state`` (``"new"``, ``"starting"``, ``"running"``, ``"stopped"``, ``"failed"``),
        ``connected`` (bool; False unless running and the session is CONNECTED: says nothing about the values),
        ``following`` (bool; connected and the values come from a completed load or resync, not from the snapshot
        a start served nor from before a drop), ``stale_seconds`` (0.0 while following;
        else seconds since suspension, session loss, a snapshot start or :meth:`stop`, on the injected
        timer), ``last_sync`` (Unix time of the last full load or resync, or ``None``), ``applied``,
        ``rejected``, ``drift_corrected``, ``resyncs``, ``reads`` (znode reads issued), ``requests``
        (ZooKeeper requests those took), ``source`` (``"none"``, ``"zookeeper"``, ``"snapshot"``,
        ``"file"``), ``keys`` and ``denied`` (the znodes ZooKeeper refuses to let it read now; :attr:`denied`
        is those of the start). It is JSON-ready: ``json.dumps(client.health())``.

        >>> client.health()["state"], client.health()["following"]  # doctest: +SKIP
        ('running', True)
        """
        return self._status.report(applied=self._cache.applied, keys=len(self._cache))

    # --- internals -------------------------------------------------------------------------------

    def _on_change(self, change: ConfigChange) -> None:
        self._dispatcher.publish(change)
        writer = self._writer
        if writer is not None and self._status.source != "none":
            writer.mark_dirty(change.key)

    def _snapshot_entry(self, key: str) -> SnapshotEntry | None:
        entry = self._cache.entry(key)
        return SnapshotEntry(entry.data, entry.czxid, entry.mzxid) if entry is not None else None

    def _snapshot_entries(self) -> dict[str, SnapshotEntry]:
        return {k: SnapshotEntry(e.data, e.czxid, e.mzxid) for k, e in self._cache.entries().items()}
