"""Fixtures for ConfigClient integration tests: a hand-moved clock, a client factory, a polling helper."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from autoglm_runtime import ConfigClient


class FakeClock:
    """A monotonic clock for TTL and staleness that moves only when a test advances it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def wait_until(condition: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> None:
    """Poll ``condition`` until it is true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:g} s")
        time.sleep(0.01)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def until() -> Callable[..., None]:
    return wait_until


@pytest.fixture
def make_client(clock: FakeClock) -> Iterator[Callable[..., ConfigClient]]:
    """Build (not start) ConfigClients on the test's clock with a fast reconciler; all stopped after the test."""
    made: list[ConfigClient] = []

    def factory(hosts: str, root: str, **options: Any) -> ConfigClient:
        options.setdefault("timer", clock)
        options.setdefault("session_timeout", 4.0)
        options.setdefault("reconcile_interval", 0.05)
        options.setdefault("reconcile_jitter", 0.0)
        options.setdefault("reconnect_max_delay", 0.5)
        client = ConfigClient(hosts, root, **options)
        made.append(client)
        return client

    yield factory
    for client in made:
        client.stop()
