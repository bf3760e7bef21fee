"""What the connection attempts of an outage met: a server that took the TCP connection, or nothing at all.

kazoo opens each attempt with its handler's ``create_connection`` (the TCP connection, and the TLS handshake with
``use_ssl``), then sends the session's ConnectRequest. An attempt that gets a socket reached a server: a server
restored from a backup then closes the connection at once, refusing a session that saw newer zxids ("client must
try another server"), and so does a server without a quorum (a majority down or cut off, an election under way:
"ZooKeeperServer not running"), so the line names both. One that raises (connection refused, timed out, host
unreachable, TLS refused) reached nothing that would take it: a network partition, the ensemble down or a wrong
address. A host name that does not resolve makes no attempt at all. :class:`ConnectAttempts` counts both kinds
from the last drop on, so the E0409 line of :meth:`._zxid.ZxidGuard.give_up_session` says which one the client
met (:func:`observed`).
"""

from __future__ import annotations

import threading
from typing import Any

from kazoo.client import KazooClient

__all__ = ["ConnectAttempts", "observed"]


class ConnectAttempts:
    """Counts a ``KazooClient``'s connection attempts since :meth:`reset`: those a server took, those it did not.

    :meth:`watch` wraps the ``create_connection`` of the client's own handler (kazoo's public ``handler``), which
    kazoo's connection thread calls for each attempt; the counts are read from any thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._accepted = 0
        self._failed = 0
        self._last_error: str | None = None

    def watch(self, client: KazooClient) -> None:
        """Count the connection attempts ``client`` makes from now on."""
        handler = client.handler
        connect = handler.create_connection

        def create_connection(*args: Any, **kwargs: Any) -> Any:
            try:
                sock = connect(*args, **kwargs)
            except OSError as exc:
                self._note(exc)
                raise
            self._note(None)
            return sock

        handler.create_connection = create_connection

    def _note(self, error: OSError | None) -> None:
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


def observed(accepted: int, failed: int, last_error: str | None) -> str:
    """What the connection attempts of an outage met, and what the client does next: the end of the E0409 line
    that gives the session up."""
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
