"""One persistent recursive watch per client, and the catch-up after a gap in it.

A client in ``"persistent"`` watch mode adds one ``addWatch(root, PERSISTENT_RECURSIVE)`` per connection
(ZooKeeper 3.6+): the server then reports every creation, change and deletion at or below the root, and
holds one watch for the client whatever the size of the tree, instead of a data and a child watch per
znode. What this module handles around ZooKeeper's rules for such watches:

* kazoo has no support for them: :class:`RecursiveWatch` sends the request (:class:`._wire.AddWatch`) and
  hands the events kazoo would drop (no one-shot watcher registered for their path) to the sync thread's
  callback, by giving kazoo's data-watcher table a ``pop`` that adds that callback for paths under the root;
* the watch lives as long as the connection: it is added again on every new connection (:meth:`ensure`);
* changes made while the client was disconnected are not reported when the watch is added again (unlike
  one-shot watches re-armed relative to a zxid). :meth:`catch_up` asks a short second session: after a
  ``sync`` (it may land on a lagging follower; one still behind the main session is not trusted), its
  ``setWatches`` relative to the last zxid seen before the gap fires at once for every known znode changed,
  deleted or given new children since, and the session is closed as soon as those firings are in. Nothing
  changed costs a connect, a ``sync``, a ``setWatches`` and a close, and no read;
* the main session never sets a one-shot watch while in this mode: a one-shot watch on the watched path
  downgrades the persistent one (ZOOKEEPER-4466) and child watches below it can leak events into it
  (ZOOKEEPER-4475);
* a server that refuses ``addWatch`` (older than 3.6) puts the client in ``"per_node"`` mode for good: one-shot
  data and child watches on every znode, as :mod:`._reader` arms them.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import BadArgumentsError, MarshallingError, UnimplementedError
from kazoo.protocol.states import Callback, WatchedEvent

from autoglm_runtime.config._reader import ZooKeeperReader
from autoglm_runtime.config._results import Interrupted
from autoglm_runtime.config._wire import AddWatch
from autoglm_runtime.config.health import SyncStatus, WatchMode
from autoglm_runtime.errors import UsageError

__all__ = ["RecursiveWatch"]

log = logging.getLogger("autoglm_runtime.config")

_REFUSED = (UnimplementedError, MarshallingError, BadArgumentsError)


class _RoutedWatchers(collections.defaultdict[str, set[Any]]):
    """kazoo's data-watcher table, whose ``pop`` also hands events under the root to ``route``.

    kazoo looks up the one-shot watchers of an event's path with ``_data_watchers.pop(path, [])`` for
    creations, changes and deletions; a persistent watch has none there, so without this its events are
    dropped. Child events never come from a recursive watch.
    """

    def __init__(self, table: dict[str, set[Any]], under: Callable[[str], bool], route: Callable[..., None]) -> None:
        super().__init__(set, table)
        self.under = under
        self.route = route

    def pop(self, path: str, *default: Any) -> Any:
        found = super().pop(path, *default)
        if not self.under(path) or self.route in found:
            return found
        return [*found, self.route]


class RecursiveWatch:
    """Adds and keeps the persistent recursive watch of one client; runs on the sync thread."""

    def __init__(
        self,
        *,
        client: KazooClient,
        root: str,
        route: Callable[[WatchedEvent], None],
        reader: ZooKeeperReader,
        status: SyncStatus,
        session_factory: Callable[[], KazooClient] | None,
        op_timeout: float,
        enabled: bool = True,
    ) -> None:
        self.client = client
        self.root = root
        self._route = route
        self._reader = reader
        self._status = status
        self._session_factory = session_factory
        self._op_timeout = op_timeout
        #: The connection the watch was last added on (``ensure``'s argument).
        self._added_on: int | None = None
        self._factory_warned = False
        self.mode: WatchMode = "persistent" if enabled else "per_node"
        reader.watching = not enabled
        status.watch_mode = self.mode

    @property
    def active(self) -> bool:
        return self.mode == "persistent"

    def _server_root(self) -> str:
        chroot: str = self.client.chroot
        if not chroot:
            return self.root
        return chroot if self.root == "/" else chroot + self.root

    def _install_routing(self) -> None:
        table = self.client._data_watchers
        if isinstance(table, _RoutedWatchers):
            return
        server_root = self._server_root()
        prefix = server_root.rstrip("/") + "/"
        # kazoo replaces the table when it resets a lost session; it is installed again before the watch is.
        self.client._data_watchers = _RoutedWatchers(
            table, lambda path: path == server_root or path.startswith(prefix), self._route
        )

    def ensure(self, connection: int) -> bool:
        """Add the watch on ``connection`` unless it already was; False if the client is (now) per node.

        Raises :class:`~._results.Interrupted` if the connection drops or the request times out.
        """
        if not self.active:
            return False
        if self._added_on == connection:
            return True
        if not self._reader.rearm:
            return self._fall_back("kazoo's internals the watch needs failed their self-check")
        try:
            self._install_routing()
            pending = self.client.handler.async_result()
            self.client._call(AddWatch(self._server_root()), pending)
        except (AttributeError, TypeError) as exc:  # kazoo's internals are not what this relies on
            return self._fall_back(f"addWatch could not be sent: {type(exc).__name__}: {exc}")
        except Exception as exc:  # the connection went away meanwhile: try again on the next one
            raise Interrupted from exc
        self._status.add("requests")
        try:
            pending.get(timeout=self._op_timeout)
        except _REFUSED as exc:
            return self._fall_back(f"the server refused addWatch ({type(exc).__name__}; it needs ZooKeeper 3.6+)")
        except Exception as exc:
            raise Interrupted from exc
        self._added_on = connection
        return True

    def _fall_back(self, reason: str) -> bool:
        self.mode = "per_node"
        self._status.watch_mode = "per_node"
        self._reader.watching = True
        log.info(
            "config sync uses one data and one child watch per znode: %s",
            reason,
            extra={"root": self.root, "reason": reason},
        )
        return False

    def catch_up(
        self,
        relative: int,
        data: Sequence[str],
        children: Sequence[str],
        exist: Sequence[str],
        on_event: Callable[[WatchedEvent], None],
    ) -> bool:
        """Report, through ``on_event``, every known znode changed since zxid ``relative``; False if no second
        session could be had (the caller then reads the whole tree).

        ``data``/``children``: the znodes whose value/child list the cache holds; ``exist``: znodes known to be
        absent (a missing root). Returns once every firing went to ``on_event``.
        """
        # Everything up to here reached the main session (its watch was added at or below this zxid): the
        # catch-up must answer from a server at least this far, or it reports nothing for what it lacks.
        floor: int = self.client.last_zxid
        session = self._second_session()
        if session is None:
            return False
        try:
            try:
                session.start(timeout=self._op_timeout)
            except Exception as exc:
                log.info(
                    "config sync could not open its catch-up session (%s: %s); reading the whole tree instead",
                    type(exc).__name__,
                    exc,
                    extra={"root": self.root},
                )
                return False
            reader = ZooKeeperReader(
                client=session, watch=on_event, status=self._status, batch_size=1, op_timeout=self._op_timeout
            )
            try:
                # A new session may land on a follower that lags: its setWatches would fire nothing for a
                # change it has not applied yet, and the session is closed before it does. sync() makes it
                # catch up with the leader; one still behind the main session cannot be trusted.
                reader.wait(session.sync_async(self.root))
                self._status.add("requests")
                if session.last_zxid < floor:
                    log.info(
                        "config sync's catch-up session reached a ZooKeeper server behind its own (zxid %#x < "
                        "%#x); reading the whole tree instead",
                        session.last_zxid,
                        floor,
                        extra={"root": self.root},
                    )
                    return False
                reader.arm(data, children, relative, exist)
            except Interrupted:
                return False
            # Each firing was queued on the session's callback thread before setWatches' answer was read:
            # once this marker has run there, all of them went to on_event.
            drained = threading.Event()
            session.handler.dispatch_callback(Callback("watch", drained.set, ()))
            return drained.wait(self._op_timeout)
        finally:
            try:
                session.stop()
            finally:
                session.close()

    def _second_session(self) -> KazooClient | None:
        made: Any = None
        problem = "no way to open a second session was given"
        if self._session_factory is not None:
            try:
                made = self._session_factory()
                problem = ""
            except UsageError as exc:  # (a factory the SDK refuses: its message says why and what to do)
                problem = str(exc)
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}"
        if isinstance(made, KazooClient) and made is not self.client:
            return made
        if not self._factory_warned:
            self._factory_warned = True
            log.warning(
                "config sync re-reads the whole tree after each reconnect: its catch-up needs a second, short "
                "ZooKeeper session and the client factory did not give one (%s); return a new KazooClient "
                "from client_factory on every call",
                problem or "it returned the same client",
                extra={"error_code": "E0409", "root": self.root},
            )
        return None
