"""Fixtures for ConfigClient integration tests: a hand-moved clock, a client factory, a polling helper."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from integration.config._helpers import KAZOO_OF
from kazoo.client import KazooClient

from autoglm_runtime import ConfigClient
from autoglm_runtime.config import SyncTuning, ZooKeeperConnection
from autoglm_runtime.testing import wait_until


class FakeClock:
    """A monotonic clock for TTL and staleness that moves only when a test advances it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def until() -> Callable[..., None]:
    return wait_until


TUNING = {field.name for field in dataclasses.fields(SyncTuning)}
CONNECTION = {field.name for field in dataclasses.fields(ZooKeeperConnection)} - {"auth"}


@pytest.fixture
def make_client(clock: FakeClock) -> Iterator[Callable[..., ConfigClient]]:
    """Build (not start) ConfigClients on the test's clock with a fast reconciler; all stopped after the test."""
    made: list[ConfigClient] = []

    def factory(hosts: str, root: str, **options: Any) -> ConfigClient:
        """``options`` are ConfigClient's, plus SyncTuning's and ZooKeeperConnection's fields by name."""
        tuning = {name: options.pop(name) for name in TUNING if name in options}
        connection = {name: options.pop(name) for name in CONNECTION if name in options}
        options.setdefault("timer", clock)
        options["tuning"] = SyncTuning(**{"reconcile_interval": 0.05, "reconcile_jitter": 0.0, **tuning})
        if hosts.startswith("file://"):
            client = ConfigClient(hosts, root, **options)
        else:
            settings = ZooKeeperConnection(**{"session_timeout": 4.0, "reconnect_max_delay": 0.5, **connection})
            auth = options.pop("auth", None)
            sessions: list[KazooClient] = []

            def new_session() -> KazooClient:
                # The first is the client's own; later ones are the short catch-up sessions after a gap.
                sessions.append(settings.kazoo_client(hosts, auth))
                return sessions[-1]

            client = ConfigClient(hosts, root, client_factory=new_session, **options)
            KAZOO_OF[client] = sessions[0]
        made.append(client)
        return client

    yield factory
    for client in made:
        client.stop()
