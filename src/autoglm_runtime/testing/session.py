"""Force a kazoo client's ZooKeeper session to expire, the standard way.

A second client connects with the first client's session id and password, then closes that session.
The server ends the session for both; the first client learns it on its next exchange and moves to
``KazooState.LOST`` (after which kazoo opens a new session by itself and goes back to ``CONNECTED``).
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from kazoo.client import KazooClient
from kazoo.protocol.states import KazooState

from autoglm_runtime.testing._common import ZooKeeperHarnessError, format_hosts

__all__ = ["StateWatcher", "expire_session"]


def expire_session(client: KazooClient, hosts: str | None = None, timeout: float = 10.0) -> None:
    """Expire ``client``'s session and return once ``client`` has seen ``KazooState.LOST``.

    ``hosts`` is where the second client connects (default: the hosts ``client`` was given, without
    chroot). Raises :class:`ZooKeeperHarnessError` if ``client`` has no live session or does not see
    the loss within ``timeout`` seconds::

        expire_session(client)
        assert client.client_id[0] != old_session_id  # once CONNECTED again
    """
    client_id = client.client_id
    if client_id is None:
        raise ZooKeeperHarnessError("Cannot expire the session of a kazoo client that is not connected.")
    if hosts is None:
        hosts = format_hosts([(str(host), int(port)) for host, port in client.hosts])
    lost = threading.Event()

    def on_state(state: Any) -> bool:
        if state == KazooState.LOST:
            lost.set()
            return True  # kazoo removes a listener that returns True
        return False

    client.add_listener(on_state)
    twin = KazooClient(hosts=hosts, client_id=client_id, timeout=timeout)
    try:
        try:
            twin.start(timeout=timeout)
        except Exception as exc:
            raise ZooKeeperHarnessError(
                f"Could not join session 0x{client_id[0]:x} at {hosts} to expire it: {exc}."
            ) from exc
        twin.stop()  # closing the shared session expires it for the first client too
    finally:
        twin.close()
    if not lost.wait(timeout):
        client.remove_listener(on_state)
        raise ZooKeeperHarnessError(
            f"The client of session 0x{client_id[0]:x} did not see its session expire within {timeout:g} seconds."
        )


class StateWatcher:
    """Records a kazoo client's state changes so a test can wait for them in order, without sleeping.

    ``wait_for(state)`` returns once ``state`` has been seen after the previous ``wait_for`` returned,
    so ``wait_for(LOST)`` then ``wait_for(CONNECTED)`` means "lost, and connected again afterwards"::

        with StateWatcher(client) as states:
            proxy.refuse()
            proxy.cut()
            states.wait_for(KazooState.SUSPENDED)
            proxy.restore()
            states.wait_for(KazooState.CONNECTED)
    """

    def __init__(self, client: KazooClient) -> None:
        self.client = client
        self.history: list[Any] = []
        self._cursor = 0
        self._changed = threading.Condition()
        client.add_listener(self._on_state)

    def _on_state(self, state: Any) -> None:
        # runs on kazoo's connection thread: record and notify only, never block it
        with self._changed:
            self.history.append(state)
            self._changed.notify_all()

    def wait_for(self, state: Any, timeout: float = 10.0) -> None:
        """Wait until ``state`` is seen after the last state waited for; ZooKeeperHarnessError at the deadline."""
        with self._changed:

            def seen() -> bool:
                return state in self.history[self._cursor :]

            if not self._changed.wait_for(seen, timeout):
                raise ZooKeeperHarnessError(
                    f"The kazoo client did not reach state {state} within {timeout:g} seconds "
                    f"(states seen since the last wait: {self.history[self._cursor :]})."
                )
            self._cursor += self.history[self._cursor :].index(state) + 1

    def close(self) -> None:
        """Stop recording (removes the listener from the client)."""
        self.client.remove_listener(self._on_state)

    def __enter__(self) -> StateWatcher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
