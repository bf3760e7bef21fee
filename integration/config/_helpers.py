"""Helpers shared by the ConfigClient integration tests."""

from __future__ import annotations

import contextlib
import json
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from kazoo.client import KazooClient

from autoglm_runtime import ConfigClient
from autoglm_runtime.testing._common import four_letter_word
from autoglm_runtime.testing.proxy import FaultProxy
from autoglm_runtime.testing.zookeeper import ZooKeeperServer

#: The ``make_client`` fixture: ``make_client(hosts, root, **options)`` builds a ConfigClient (not started).
Factory = Callable[..., ConfigClient]
#: The ``until`` fixture: ``until(condition, timeout=20.0, what="condition")`` polls with a deadline.
Until = Callable[..., None]


def j(value: Any) -> bytes:
    """``value`` as the JSON bytes a ZooKeeper node holds."""
    return json.dumps(value).encode()


#: The KazooClient each ``make_client`` ConfigClient was given through its ``client_factory`` seam.
KAZOO_OF: weakref.WeakKeyDictionary[ConfigClient, KazooClient] = weakref.WeakKeyDictionary()


def kazoo_of(client: ConfigClient) -> KazooClient:
    """The KazooClient a ConfigClient built by ``make_client`` syncs through."""
    return KAZOO_OF[client]


def server_watches(server: ZooKeeperServer) -> dict[str, set[str]]:
    """The data watches the server holds, per session id (``wchc``, enabled by the harness)."""
    reply = four_letter_word(server.host, server.port, "wchc")
    assert reply is not None, "the server did not answer wchc"
    out: dict[str, set[str]] = {}
    session = ""
    for line in reply.splitlines():
        if line.startswith("0x"):
            session = line.strip()
            out[session] = set()
        elif line.strip():
            out[session].add(line.strip())
    return out


@contextlib.contextmanager
def persistent_events_lost(kazoo: KazooClient, path: str) -> Iterator[None]:
    """Within the block, kazoo drops the persistent watch's events for ``path`` (it has no watcher for them).

    On leaving, a read on the same connection makes sure every notification sent before it has arrived (and
    been dropped) before the routing is restored.
    """
    routing = kazoo._data_watchers
    under = routing.under
    routing.under = lambda p: p != path and under(p)
    try:
        yield
        kazoo.get(path.rsplit("/", 1)[0] or "/")  # the notifications come before this answer on the connection
    finally:
        routing.under = under


class SwitchingProxy(FaultProxy):
    """A FaultProxy whose next connections go to the targets queued with :meth:`then`, in turn (the last
    one stays)."""

    _targets: list[tuple[str, int]]

    @property  # type: ignore[override]
    def target(self) -> tuple[str, int]:
        return self._targets.pop(0) if len(self._targets) > 1 else self._targets[0]

    @target.setter
    def target(self, value: tuple[str, int]) -> None:
        self._targets = [value]

    def then(self, *targets: tuple[str, int]) -> None:
        self._targets = list(targets)
