"""Helpers shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kazoo.client import KazooClient


@contextmanager
def kazoo_session(hosts: str, *, start_timeout: float = 30.0, **options: Any) -> Iterator[KazooClient]:
    """A KazooClient on ``hosts`` (``options`` go to its constructor), started within ``start_timeout`` seconds,
    stopped and closed on exit."""
    client = KazooClient(hosts=hosts, **options)
    client.start(timeout=start_timeout)
    try:
        yield client
    finally:
        client.stop()
        client.close()
