"""The container backend: the official ``zookeeper`` image run through testcontainers.

Used when a Docker engine answers a ping. The container publishes ZooKeeper's port 2181 on a fixed host
port chosen at creation, so ``stop()`` (a docker stop) and ``start()`` (a docker start of the same
container) keep both the port and the data in the image's ``/data`` volume. ``close()`` removes the
container and its volumes; testcontainers' reaper removes it too should the Python process die.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
from collections.abc import Mapping
from typing import Any

from autoglm_runtime.testing._common import (
    ZooKeeperHarnessError,
    ZooKeeperUnavailableError,
    free_port,
    wait_for_mode,
)
from autoglm_runtime.testing._server import ZooKeeperServer, log

__all__ = ["DEFAULT_IMAGE", "ContainerZooKeeperServer", "docker_unreachable_reason", "start_container_server"]

#: The image used unless ``AUTOGLM_ZK_IMAGE`` names another.
DEFAULT_IMAGE = "zookeeper:3.8"
CLIENT_PORT = 2181
PING_TIMEOUT = 2.0

# The official image writes these into its zoo.cfg: the same settings the local backend uses.
_IMAGE_ENV = {
    "ZOO_TICK_TIME": "500",
    "ZOO_ADMINSERVER_ENABLED": "false",
    "ZOO_4LW_COMMANDS_WHITELIST": "*",
    "ZOO_MAX_CLIENT_CNXNS": "0",
    "ZOO_CFG_EXTRA": "minSessionTimeout=1000 maxSessionTimeout=60000 forceSync=no",
}


def docker_unreachable_reason(env: Mapping[str, str] | None = None, timeout: float = PING_TIMEOUT) -> str | None:
    """None when a Docker engine answers a ping within ``timeout`` seconds, else a sentence saying why not.

    ``env`` is where the Docker SDK reads ``DOCKER_HOST`` and friends (default: the process environment).
    """
    env = os.environ if env is None else env
    where = env.get("DOCKER_HOST") or "the default Docker socket"
    try:
        docker = importlib.import_module("docker")  # optional: only the container backend needs it
    except ImportError:
        return "The container backend needs the 'testcontainers' package and its 'docker' dependency."
    client = None
    try:
        client = docker.from_env(timeout=max(1, round(timeout)), environment=dict(env))
        client.ping()
    except Exception as exc:  # the SDK raises DockerException, requests errors, or ValueError for a bad URL
        log.debug("Docker engine at %s is not reachable: %r", where, exc)
        return f"No Docker engine answered a ping at {where} within {timeout:g} seconds."
    finally:
        if client is not None:
            client.close()
    return None


class ContainerZooKeeperServer(ZooKeeperServer):
    """A server in a ``zookeeper`` container whose host port and data survive stop/start."""

    backend = "container"

    def __init__(self, container: Any, host: str, port: int, *, image: str, start_timeout: float) -> None:
        super().__init__(host, port)
        self.container = container
        self.image = image
        self.start_timeout = start_timeout
        self._running = True
        self._closed = False

    @property
    def running(self) -> bool:
        return self._running

    def wait_until_serving(self) -> str:
        """Wait until ZooKeeper in the container answers ``srvr`` with a Mode; raises ZooKeeperHarnessError if not."""
        mode = wait_for_mode(self.host, self.port, timeout=self.start_timeout)
        if mode is None:
            raise ZooKeeperHarnessError(
                f"ZooKeeper in a {self.image} container did not answer 'srvr' with a Mode line at {self.hosts} "
                f"within {self.start_timeout:g} seconds."
            )
        log.info("ZooKeeper (container backend, %s) serves at %s as %s", self.image, self.hosts, mode)
        return mode

    def start(self) -> None:
        with self._lock:
            if self._running:
                return
            if self._closed:
                raise ZooKeeperHarnessError(f"The ZooKeeper container that served {self.hosts} was removed.")
            self.container.get_wrapped_container().start()
            self._running = True
            self.wait_until_serving()

    def stop(self) -> None:
        with self._lock:
            if not self._running:
                return
            self.container.get_wrapped_container().stop(timeout=5)
            self._running = False

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._running = False
            self.container.stop()  # testcontainers' stop removes the container and its volumes
            atexit.unregister(self.close)


def start_container_server(*, start_timeout: float, env: Mapping[str, str] | None = None) -> ContainerZooKeeperServer:
    """Start a ZooKeeper container and return it serving; ZooKeeperUnavailableError when Docker cannot run it."""
    env = os.environ if env is None else env
    reason = docker_unreachable_reason(env)
    if reason is not None:
        raise ZooKeeperUnavailableError(reason)
    try:  # imported here: testcontainers is a test dependency, not a runtime one
        from testcontainers.core.container import DockerContainer
    except ImportError as exc:
        raise ZooKeeperUnavailableError("The container backend needs the 'testcontainers' package.") from exc

    image = env.get("AUTOGLM_ZK_IMAGE", DEFAULT_IMAGE)
    host_port = free_port()
    container = DockerContainer(image).with_bind_ports(CLIENT_PORT, host_port)
    for key, value in _IMAGE_ENV.items():
        container = container.with_env(key, value)
    try:
        container.start()
    except Exception as exc:  # pulling or creating can fail in many docker-specific ways
        with contextlib.suppress(Exception):  # nothing may have been created, or it is gone already
            container.stop()
        raise ZooKeeperUnavailableError(f"Docker could not start a {image} container ({exc}).") from exc
    server = ContainerZooKeeperServer(
        container, container.get_container_host_ip(), host_port, image=image, start_timeout=start_timeout
    )
    atexit.register(server.close)
    try:
        server.wait_until_serving()
    except BaseException:
        server.close()
        raise
    return server
