"""What the connection attempts of an outage met: a server that took the TCP connection, or nothing at all.

kazoo opens each attempt with its handler's ``create_connection`` (the TCP connection, and the TLS handshake with
``use_ssl``), then sends the session's ConnectRequest. An attempt that gets a socket reached a server: a server
restored from a backup then closes the connection at once, refusing a session that saw newer zxids ("client must
try another server"), and so does a server without a quorum (a majority down or cut off, an election under way:
"ZooKeeperServer not running"), so the line names both. One that raises (connection refused, timed out, host
unreachable, TLS refused) reached nothing that would take it: a network partition, the ensemble down or a wrong
address. A host name that does not resolve makes no attempt at all. :class:`ConnectAttempts` counts both kinds
from the last drop on, so the E0409 line of :meth:`._zxid.ZxidGuard.give_up_session` says which one the client
met (:func:`observed`), and keeps the session timeout the server granted, which says when to give up.
"""

from __future__ import annotations

import threading
from typing import Any

from kazoo.client import KazooClient
from kazoo.protocol.serialization import Connect

__all__ = ["ConnectAttempts", "observed"]


class ConnectAttempts:
    """Counts a ``KazooClient``'s connection attempts since :meth:`reset`: those a server took, those it did not;
    and knows the session timeout the client uses (:meth:`session_timeout`).

    :meth:`watch` puts a counting view of the client's handler in front of its own connection (kazoo's
    ``client._connection``, one per client), whose thread calls the handler's ``create_connection`` for each
    attempt. The handler itself is left as it is (a ``client_factory``'s client brings its own), and only this
    client's attempts are counted. The counts are read from any thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._accepted = 0
        self._failed = 0
        self._last_error: str | None = None
        self._requested = 10.0  # seconds, kazoo's default, until watch() reads the client's
        self._granted: float | None = None  # seconds, what the server granted the last session
        #: Whether :meth:`watch` could follow the client's attempts (kazoo's internals are as expected).
        self.followed = False

    def watch(self, client: KazooClient) -> None:
        """Count the connection attempts ``client`` makes from now on (a client watched again is counted once,
        by the last :class:`ConnectAttempts` that watched it), and follow its session timeout."""
        requested = getattr(client, "_session_timeout", None)
        if isinstance(requested, (int, float)) and requested > 0:
            self._requested = requested / 1000.0  # what it asks for, in ms as ZooKeeper's wire has it
        connection: Any = getattr(client, "_connection", None)
        handler = getattr(connection, "handler", None)
        if handler is None or not all(callable(getattr(connection, name, None)) for name in ("_invoke", "_connect")):
            # A kazoo whose internals differ from the versions known here (the pin allows 2.9-2.11): nothing is
            # counted, and the E0409 line says so instead of reading no attempt as "no host resolved".
            self.followed = False
            return
        self.followed = True
        if isinstance(handler, _CountingHandler):
            handler.attempts = self
            return
        view = connection.handler = _CountingHandler(handler, self)
        invoke, connect = connection._invoke, connection._connect

        def session_connect(*args: Any, **kwargs: Any) -> Any:
            # Only the session's own connection counts: a client with ``read_only=True`` on a read-only server
            # also probes every host for a read-write one (kazoo's RWPinger, on the same handler) between pings.
            view.connecting.active = True
            try:
                return connect(*args, **kwargs)
            finally:
                view.connecting.active = False

        def granted(*args: Any, **kwargs: Any) -> Any:
            result = invoke(*args, **kwargs)
            # The answer to a ConnectRequest carries the session timeout the server granted (clamped to its
            # minSessionTimeout..maxSessionTimeout, in ms); kazoo only logs it.
            if isinstance(result, tuple) and result and isinstance(result[0], Connect) and result[0].time_out > 0:
                view.attempts.grant(result[0].time_out / 1000.0)
            return result

        connection._invoke = granted
        connection._connect = session_connect

    def session_timeout(self) -> float:
        """The session timeout in seconds: the one the server granted the last session, else the one the client
        asks for."""
        with self._lock:
            return self._granted if self._granted is not None else self._requested

    def grant(self, seconds: float) -> None:
        """The server granted a session ``seconds`` long."""
        with self._lock:
            self._granted = seconds

    def note(self, error: OSError | None) -> None:
        """One attempt: it got a socket (``error`` None), or it raised ``error``."""
        with self._lock:
            if error is None:
                self._accepted += 1
            else:
                self._failed += 1
                self._last_error = str(error) or type(error).__name__

    def reset(self) -> None:
        """Forget the attempts so far (a new outage begins)."""
        with self._lock:
            self._accepted = self._failed = 0
            self._last_error = None

    def counts(self) -> tuple[int, int, str | None]:
        """``(accepted, failed, last error)`` since :meth:`reset`."""
        with self._lock:
            return self._accepted, self._failed, self._last_error


class _CountingHandler:
    """One client's view of a kazoo handler: its ``create_connection`` counts into ``attempts`` while the client
    connects its session (``connecting.active``, set on the connection's thread), everything else is the
    handler's."""

    def __init__(self, handler: Any, attempts: ConnectAttempts) -> None:
        self._handler = handler
        self.attempts = attempts
        self.connecting = threading.local()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handler, name)

    def create_connection(self, *args: Any, **kwargs: Any) -> Any:
        if not getattr(self.connecting, "active", False):
            return self._handler.create_connection(*args, **kwargs)
        try:
            sock = self._handler.create_connection(*args, **kwargs)
        except OSError as exc:
            self.attempts.note(exc)
            raise
        self.attempts.note(None)
        return sock


def observed(accepted: int, failed: int, last_error: str | None, *, followed: bool = True) -> str:
    """What the connection attempts of an outage met, and what the client does next: the end of the E0409 line
    that gives the session up. ``followed``: whether the attempts could be counted at all."""
    if not followed:
        return (
            "what its connection attempts met is unknown (this kazoo's connection internals differ from the "
            "versions this SDK follows); opening a new session"
        )
    attempts = accepted + failed
    if accepted:
        return (
            f"servers took {accepted} of its {attempts} connection attempts but the session resumed on none: "
            "ZooKeeper closes such a connection at once when restored from a backup, for a session that saw newer "
            "zxids (it logs 'client must try another server'), and while it has no quorum (it logs 'ZooKeeperServer "
            "not running', and takes sessions again once its quorum is back); opening a new session"
        )
    if failed:
        return (
            f"none of its {attempts} connection attempts reached a server (last: {last_error}): a network "
            "partition, the ensemble down or a wrong address; a new session is opened as soon as a server answers"
        )
    return (
        "it could not try a single connection, none of the host names resolved; a new session is opened as soon "
        "as a server answers"
    )
