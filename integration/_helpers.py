"""Helpers shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from kazoo.client import KazooClient

from autoglm_runtime.testing.zookeeper import ZooKeeperUnavailableError, backend_order, skip_or_fail

#: How this project's tests get a container engine where Docker is missing (added to the container backend's skips).
CONTAINER_HINT = (
    "Without Docker (or without Docker Hub): as root on Debian or Ubuntu, "
    "'eval \"$(bash scripts/container-zookeeper)\"' sets up podman and a ZooKeeper image; see docs/testing.md."
)


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


def skip_or_fail_zookeeper(exc: ZooKeeperUnavailableError) -> NoReturn:
    """skip_or_fail for a fixture whose ZooKeeper could not start, saying how to get a container engine when the
    container backend was the one asked for."""
    if backend_order() == ("container",):
        exc = ZooKeeperUnavailableError(f"{exc.message} {CONTAINER_HINT}")
    skip_or_fail(exc)
