"""StateWatcher waits for kazoo states in order; expire_session refuses a client without a session."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.protocol.states import KazooState

from autoglm_runtime.testing.session import StateWatcher, expire_session
from autoglm_runtime.testing.zookeeper import ZooKeeperHarnessError


class _Listeners:
    """The listener half of a KazooClient: StateWatcher uses nothing else."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[Any], Any]] = []

    def add_listener(self, listener: Callable[[Any], Any]) -> None:
        self.listeners.append(listener)

    def remove_listener(self, listener: Callable[[Any], Any]) -> None:
        self.listeners.remove(listener)

    def emit(self, state: Any) -> None:
        for listener in list(self.listeners):
            listener(state)


def test_waits_for_states_in_order() -> None:
    client = _Listeners()
    with StateWatcher(client) as states:  # type: ignore[arg-type]
        client.emit(KazooState.SUSPENDED)
        client.emit(KazooState.CONNECTED)
        states.wait_for(KazooState.SUSPENDED, timeout=0)
        states.wait_for(KazooState.CONNECTED, timeout=0)

        with pytest.raises(ZooKeeperHarnessError) as info:
            states.wait_for(KazooState.CONNECTED, timeout=0)  # already consumed: needs a new one
        assert info.value.message == (
            "The kazoo client did not reach state CONNECTED within 0 seconds (states seen since the last wait: [])."
        )

        later = threading.Thread(target=client.emit, args=(KazooState.LOST,), name="emitter")
        later.start()
        states.wait_for(KazooState.LOST, timeout=10)
        later.join()
    assert client.listeners == []
    assert states.history == [KazooState.SUSPENDED, KazooState.CONNECTED, KazooState.LOST]


def test_expire_session_needs_a_connected_client() -> None:
    client = KazooClient(hosts="127.0.0.1:1")
    with pytest.raises(ZooKeeperHarnessError) as info:
        expire_session(client)
    assert info.value.message == "Cannot expire the session of a kazoo client that is not connected."
    client.close()
