"""The container backend: a ZooKeeper image run through testcontainers.

Used when a Docker engine (or podman's Docker-compatible service) answers a ping. The image is the
official ``zookeeper`` one unless ``AUTOGLM_ZK_IMAGE`` names another with the same interface (``ZOO_*``
variables, ``/data``; ``scripts/container-zookeeper`` builds one from Debian's packages). The container
publishes ZooKeeper's port 2181 on a fixed host port chosen at creation, on loopback when the engine runs
on this machine, so ``stop()`` (a docker stop) and ``start()`` (a docker start of the same container) keep
both the port and the data. ``close()`` removes the container and its volumes.

Every container carries the labels ``org.autoglm.harness=zookeeper`` and ``org.autoglm.harness.pid`` (the
pid of the Python process that started it), so a clean-up script can find containers whose process died
without closing them where testcontainers' reaper cannot run.
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
from autoglm_runtime.testing._local import JVM_OPTIONS
from autoglm_runtime.testing._server import ZooKeeperServer, log

__all__ = [
    "DEFAULT_IMAGE",
    "HARNESS_LABEL",
    "OWNER_LABEL",
    "ContainerZooKeeperServer",
    "docker_unreachable_reason",
    "start_container_server",
]

#: The image used unless ``AUTOGLM_ZK_IMAGE`` names another.
DEFAULT_IMAGE = "zookeeper:3.8"
CLIENT_PORT = 2181
PING_TIMEOUT = 10.0  # an absent engine fails at once; a loaded one (podman on a busy CI machine) can take seconds
#: Labels on every harness container: what it is, and the pid of the Python process that owns it.
HARNESS_LABEL = "org.autoglm.harness"
OWNER_LABEL = "org.autoglm.harness.pid"
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
_PORT_ATTEMPTS = 3

# The official image writes these into its zoo.cfg: the same settings the local backend uses. Its
# zkServer.sh passes JVMFLAGS to java, after its own heap setting, so the local backend's fast-start
# options win there too.
_IMAGE_ENV = {
    "ZOO_TICK_TIME": "500",
    "ZOO_ADMINSERVER_ENABLED": "false",
    "ZOO_4LW_COMMANDS_WHITELIST": "*",
    "ZOO_MAX_CLIENT_CNXNS": "0",
    "ZOO_CFG_EXTRA": "minSessionTimeout=1000 maxSessionTimeout=60000 forceSync=no",
    "JVMFLAGS": " ".join(JVM_OPTIONS),
}

_NO_HUB_HINT = (
    "Without access to Docker Hub, build an image from your distribution's packages and name it in "
    "AUTOGLM_ZK_IMAGE (docs/testing.md shows how)."
)


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
    """A server in a ZooKeeper container whose host port and data survive stop/start."""

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

    @property
    def container_id(self) -> str:
        """The engine's id of the container (``docker ps`` shows its first 12 characters)."""
        return str(self.container.get_wrapped_container().id)

    def _status(self) -> str | None:
        """The engine's state of the container (``running``, ``exited`` ...), None if the engine cannot say."""
        wrapped = self.container.get_wrapped_container()
        try:
            wrapped.reload()
        except Exception:  # the engine went away or the container is gone: not ours to judge here
            return None
        status = getattr(wrapped, "status", None)
        return status if isinstance(status, str) else None

    def _log_tail(self, lines: int = 20) -> str:
        try:
            stdout, stderr = self.container.get_logs()
        except Exception:  # a container that was never created or is gone has no logs to show
            return ""
        text = (bytes(stdout or b"") + bytes(stderr or b"")).decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    def wait_until_serving(self) -> str:
        """Wait until ZooKeeper in the container answers ``srvr`` with a Mode; raises ZooKeeperHarnessError if not."""
        mode = wait_for_mode(
            self.host, self.port, timeout=self.start_timeout, alive=lambda: self._status() in (None, "running")
        )
        if mode is None:
            status = self._status()
            if status not in (None, "running"):
                reason = f"the container stopped ({status}) before it did"
            else:
                reason = f"not within {self.start_timeout:g} seconds"
            message = (
                f"ZooKeeper in a {self.image} container did not answer 'srvr' with a Mode line at {self.hosts}: "
                f"{reason}."
            )
            tail = self._log_tail()
            raise ZooKeeperHarnessError(message + (f" Its log ends with:\n{tail}" if tail else ""))
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
            atexit.unregister(self.close)
            try:
                self.container.stop()  # testcontainers' stop removes the container and its volumes
            except Exception as exc:  # the engine may be gone at exit: say so, the labels let a script clean up
                log.warning("Could not remove the ZooKeeper container that served %s: %r", self.hosts, exc)


def _is_port_taken(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "already in use" in text or "already allocated" in text


def _new_container(image: str, env: Mapping[str, str]) -> Any:
    from testcontainers.core.container import DockerContainer  # a test dependency, not a runtime one

    labels = {HARNESS_LABEL: "zookeeper", OWNER_LABEL: str(os.getpid())}
    return DockerContainer(image, docker_client_kw={"environment": dict(env)}, env=dict(_IMAGE_ENV), labels=labels)


def _engine_is_local(container: Any) -> bool:
    """True when the container's published ports are reached on this machine's loopback."""
    from testcontainers.core.config import ConnectionMode

    client = container.get_docker_client()
    return bool(client.get_connection_mode() is ConnectionMode.docker_host and client.host() in _LOOPBACK)


def _run_container(image: str, env: Mapping[str, str]) -> tuple[Any, str, int]:
    """Create and start a container of ``image``; its client port published on a free host port."""
    attempt = 0
    while True:
        attempt += 1
        container = _new_container(image, env)
        local = _engine_is_local(container)
        port = free_port()
        # On this machine, publish on loopback only; a remote engine's port must be reachable from here.
        container.ports[f"{CLIENT_PORT}/tcp"] = ("127.0.0.1", port) if local else port
        try:
            container.start()
        except Exception as exc:  # pulling, creating or starting can fail in many engine-specific ways
            with contextlib.suppress(Exception):  # nothing may have been created, or it is gone already
                container.stop()
            if _is_port_taken(exc) and attempt < _PORT_ATTEMPTS:
                continue  # another process took the free port before the engine bound it
            message = f"Docker could not start a {image} container ({exc})."
            if "AUTOGLM_ZK_IMAGE" not in env:
                message += " " + _NO_HUB_HINT
            raise ZooKeeperUnavailableError(message) from exc
        return container, ("127.0.0.1" if local else container.get_container_host_ip()), port


def start_container_server(*, start_timeout: float, env: Mapping[str, str] | None = None) -> ContainerZooKeeperServer:
    """Start a ZooKeeper container and return it serving; ZooKeeperUnavailableError when Docker cannot run it."""
    env = os.environ if env is None else env
    reason = docker_unreachable_reason(env)
    if reason is not None:
        raise ZooKeeperUnavailableError(reason)
    try:
        importlib.import_module("testcontainers.core.container")
    except ImportError as exc:
        raise ZooKeeperUnavailableError("The container backend needs the 'testcontainers' package.") from exc

    image = env.get("AUTOGLM_ZK_IMAGE") or DEFAULT_IMAGE
    container, host, port = _run_container(image, env)
    server = ContainerZooKeeperServer(container, host, port, image=image, start_timeout=start_timeout)
    atexit.register(server.close)
    try:
        server.wait_until_serving()
    except BaseException:
        server.close()
        raise
    return server
