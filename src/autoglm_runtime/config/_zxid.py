"""Is the server we talk to behind what the cache holds? Lagging followers and zxid regressions.

kazoo opens a session after an expiry without the last zxid it saw, so the new session may land on a
follower that lags. ``sync`` makes that follower catch up with the leader; a server still below the
highest zxid we know the ensemble reached is *behind*: the removals it reports are deferred (it does not
know znodes created after its zxid) and the tree is read again 0.5, 1 and 2 s later. If the server's
epoch is older, or it is still behind after three re-checks, the ensemble's zxids went backwards (rebuilt
or restored from a backup): every cached version is forgotten and the tree is read again, so ZooKeeper
wins.

A session that saw a zxid is never taken back by a server below it: ZooKeeper closes such a reconnect at once
("client must try another server"), and kazoo retries the same session for ever. When every server does so
(the ensemble was restored from a backup) the client would stay disconnected for good; once the connection
has been down far longer than any session outlives its client (:meth:`ZxidGuard.give_up_session`), the
session is given up for a new one, which any server takes, and the checks above take it from there. A plain
partition gets there too (the session is long gone on the servers by then): the E0409 line says which of the two
the connection attempts met (:mod:`._attempts`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient

from autoglm_runtime.config._attempts import ConnectAttempts, observed
from autoglm_runtime.config.cache import ConfigCache
from autoglm_runtime.config.health import SyncStatus

__all__ = ["ZxidGuard"]

log = logging.getLogger("autoglm_runtime.config")

#: Re-checks of a server behind the cache before it is taken for a zxid regression.
MAX_RECHECKS = 3
#: A connection down this many session timeouts belongs to a session no server keeps (or takes back). The session
#: timeout is the client's own: the one the server granted its last session, else the one its KazooClient asks for.
GIVE_UP_AFTER_SESSIONS = 2.0


class ZxidGuard:
    """Compares the zxid of the server a session talks to with the highest zxid the client has seen.

    Runs on the sync thread (``catch_up``, ``recheck_due``, ``behind``); ``note_drop`` runs on kazoo's
    connection thread.
    """

    def __init__(
        self,
        *,
        client: KazooClient,
        wait: Callable[[Any], Any],
        status: SyncStatus,
        cache: ConfigCache,
        hosts: str,
        root: str,
    ) -> None:
        self._client = client
        self._wait = wait
        self._status = status
        self._cache = cache
        self._hosts = hosts
        self._root = root
        self.checked_session: int | None = None
        self.seen_zxid = 0  # the highest zxid the ensemble showed us before a drop
        self.rechecks = 0  # full re-reads done because the server was behind the cache
        self.recheck_at: float | None = None  # time.monotonic() of the next one
        self.down_since: float | None = None  # time.monotonic() of the drop, while disconnected
        self._given_up = False  # the session of this outage was given up already
        self._attempts = ConnectAttempts()  # what the connection attempts of this outage met
        self._attempts.watch(client)

    def note_drop(self, zxid: int) -> None:
        """Remember the last zxid kazoo saw before the connection dropped (kazoo forgets it on LOST)."""
        self.seen_zxid = max(self.seen_zxid, zxid)
        if self.down_since is None:
            self.down_since = time.monotonic()
            self._attempts.reset()

    def note_connected(self) -> None:
        self.down_since = None
        self._given_up = False

    def give_up_session(self, stopping: threading.Event) -> bool:
        """Once per outage, when the connection has been down ``GIVE_UP_AFTER_SESSIONS`` session timeouts, give
        the session up and connect with a new one (kazoo's public stop and start, as after an expiry: it reports
        LOST, then CONNECTED); True if it did. See the module's docstring."""
        down = self.down_since
        session = self._attempts.session_timeout()
        if down is None or self._given_up or self._client.connected:
            return False
        if time.monotonic() - down < GIVE_UP_AFTER_SESSIONS * session:
            return False
        self._given_up = True
        accepted, failed, last_error = self._attempts.counts()
        log.warning(
            "config sync has been disconnected from ZooKeeper at %s for %.0f s, longer than its session can live "
            "(session timeout %g s): %s",
            self._hosts,
            time.monotonic() - down,
            session,
            observed(accepted, failed, last_error, followed=self._attempts.followed),
            extra={
                "error_code": "E0409",
                "hosts": self._hosts,
                "root": self._root,
                "attempts": accepted + failed,
                "accepted": accepted,
                "session_timeout": session,
            },
        )
        try:
            self._client.stop()
            if not stopping.is_set():
                self._client.start_async()
        except Exception:  # kazoo's WriterNotClosedException: never end the sync thread over it
            log.exception(
                "config sync could not replace its ZooKeeper session; trying again in %.0f s",
                GIVE_UP_AFTER_SESSIONS * session,
                extra={"error_code": "E0409", "hosts": self._hosts, "root": self._root},
            )
            self._given_up = False
            self.down_since = time.monotonic()
            return False
        return True

    def highest(self) -> int:
        """The highest zxid we know the ensemble reached: a server behind it has not seen all we have."""
        return max(self._cache.max_mzxid, self.seen_zxid)

    def recheck_due(self) -> bool:
        """True once when the re-check scheduled by :meth:`behind` is due."""
        if self.recheck_at is None or time.monotonic() < self.recheck_at:
            return False
        self.recheck_at = None
        self.rechecks += 1
        return True

    def catch_up(self, *, recheck: bool) -> bool:
        """On a new session (or a re-check), ``sync`` and compare zxids; True if the ensemble regressed
        (the cache's versions were then forgotten: the caller must read the whole tree again)."""
        client_id = self._client.client_id
        session = client_id[0] if client_id else None
        if session == self.checked_session and not recheck:
            return False
        self._wait(self._client.sync_async(self._root))
        self._status.add("requests")
        self.checked_session = session
        zxid, highest = self._client.last_zxid, self.highest()
        if not highest or zxid >= highest:
            self.rechecks = 0
            return False
        if (zxid >> 32) >= (highest >> 32) and self.rechecks < MAX_RECHECKS:
            # Lagging, maybe: removals stay deferred until a re-check, scheduled here. A resync that then
            # reads nothing (setWatches relative to a zxid this server never reached fires nothing: the same
            # keys with older values, as in a restore from a backup) would otherwise never ask again.
            self.behind()
            return False
        log.warning(
            "zxid regression: ZooKeeper at %s answers at zxid %#x, below zxid %#x the cache already holds "
            "(a rebuilt or restored ensemble?); forgetting cached versions and re-reading the whole tree",
            self._hosts,
            zxid,
            highest,
            extra={"error_code": "E0409", "hosts": self._hosts, "root": self._root},
        )
        self._cache.forget_versions()
        self.seen_zxid = 0
        self.rechecks = 0
        return True

    def behind(self) -> bool:
        """The server answers below what the cache holds: it lags, and its "missing" may be wrong.

        Schedules a re-check (0.5, 1, 2 s... after the first, second, third time) and logs E0409 once per
        scheduled re-check.
        """
        if self.highest() <= self._client.last_zxid:
            return False
        if self.recheck_at is None:
            self.recheck_at = time.monotonic() + min(30.0, 0.5 * 2.0**self.rechecks)
            log.warning(
                "ZooKeeper server is behind the cache (zxid %#x < %#x): deferring the removals it reports and "
                "checking again",
                self._client.last_zxid,
                self.highest(),
                extra={"error_code": "E0409", "hosts": self._hosts, "root": self._root},
            )
        return True
