"""A ZooKeeper server the harness controls: the shared lifecycle, and the local and external backends."""

from __future__ import annotations

import logging
import shutil
import socket
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import NoReturn

from autoglm_runtime.testing._common import (
    QuorumPeer,
    ZooKeeperHarnessError,
    ZooKeeperUnavailableError,
    format_hosts,
    free_port,
    render_config,
    wait_for_mode,
)
from autoglm_runtime.testing._local import STANDALONE_MAIN, JavaProcess, LocalInstallation

__all__ = ["ExternalZooKeeperServer", "LocalZooKeeperServer", "ZooKeeperServer"]

log = logging.getLogger("autoglm_runtime.testing.zookeeper")

DEFAULT_START_TIMEOUT = 60.0  # a cold JVM on a busy 2-core CI machine can take many seconds


class ZooKeeperServer(ABC):
    """A running ZooKeeper server for tests: its connect string, and stop/start/restart keeping its data.

    Get one from :func:`~autoglm_runtime.testing.zookeeper.start_zookeeper`; it is started already.
    ``stop()`` keeps the data and the port, so ``start()`` brings back the same server; ``close()`` (also
    the end of a ``with`` block) stops it for good and removes a data folder the harness created::

        with start_zookeeper() as server:
            client = KazooClient(hosts=server.hosts)
    """

    backend: str = "base"

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._lock = threading.RLock()

    @property
    def hosts(self) -> str:
        """The connect string, ``"127.0.0.1:PORT"``."""
        return format_hosts([(self.host, self.port)])

    @property
    @abstractmethod
    def running(self) -> bool:
        """True while the server process (or container) is up."""

    @abstractmethod
    def start(self) -> None:
        """Start the server (same port, same data) and return once it serves; a no-op when it runs."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the server, keeping its data for a later :meth:`start`; a no-op when it is stopped."""

    def restart(self) -> None:
        """Stop, then start again; clients see a disconnection and reconnect to the same data."""
        with self._lock:
            self.stop()
            self.start()

    def mode(self) -> str | None:
        """The ``Mode`` that ``srvr`` reports (``standalone``, ``leader``, ``follower``); None if it does not serve."""
        return wait_for_mode(self.host, self.port, timeout=0.0)

    def close(self) -> None:
        """Stop for good and remove what the harness created for this server."""
        self.stop()

    def __enter__(self) -> ZooKeeperServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} backend={self.backend} hosts={self.hosts} running={self.running}>"


class LocalZooKeeperServer(ZooKeeperServer):
    """A server run as a java process from a local installation (:mod:`autoglm_runtime.testing._local`)."""

    backend = "local"

    def __init__(
        self,
        installation: LocalInstallation,
        *,
        data_dir: Path | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
        main_class: str = STANDALONE_MAIN,
        peers: Sequence[QuorumPeer] = (),
        myid: int | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        name: str = "ZooKeeper",
    ) -> None:
        super().__init__(host, port if port is not None else free_port(host))
        self._fixed_port = port is not None
        self._owns_dir = data_dir is None
        # Resolved once, here: java runs with the data folder as its working directory, where a relative
        # config path or dataDir would name the wrong place.
        folder = Path(tempfile.mkdtemp(prefix="autoglm-zk-")) if data_dir is None else Path(data_dir)
        self.data_dir = folder.resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.installation = installation
        self.main_class = main_class
        self.peers = tuple(peers)
        self.myid = myid
        self.start_timeout = start_timeout
        self.name = name
        self.config_path = self.data_dir / "zoo.cfg"
        self.log_path = self.data_dir / "zookeeper.log"
        self._process: JavaProcess | None = None
        self._ever_served = False
        #: True after a failed start in which java exited (a port taken meanwhile, most often).
        self.exited_at_start = False

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    @property
    def process(self) -> JavaProcess | None:
        """The java process while the server runs (its pid is the process group id)."""
        return self._process

    def _write_config(self) -> None:
        text = render_config(
            data_dir=str(self.data_dir), client_port=self.port, client_host=self.host, peers=self.peers
        )
        self.config_path.write_text(text, "utf-8")
        if self.myid is not None:
            (self.data_dir / "myid").write_text(f"{self.myid}\n", "utf-8")

    def start(self) -> None:
        with self._lock:
            if self.running:
                return
            # A port picked by the OS may be taken by someone else before java binds it: until this
            # server has served once, a process that dies at start gets a fresh port and another try.
            attempts = 1 if (self._fixed_port or self._ever_served) else 3
            for attempt in range(1, attempts + 1):
                self.launch()
                if self._wait() is not None:
                    return
                if attempt < attempts and not self.running:
                    self.port = free_port(self.host)
                    continue
                break
            self._fail_start()

    def launch(self) -> None:
        """Start the java process without waiting for it to serve (an ensemble starts all members first)."""
        with self._lock:
            if self.running:
                return
            self._write_config()
            self._process = JavaProcess(
                self.installation.command(self.main_class, self.config_path),
                log_path=self.log_path,
                cwd=self.data_dir,
                name=f"{self.name} on {self.hosts}",
            )
            self._process.start()

    def wait_until_serving(self) -> str:
        """Wait until the launched server answers ``srvr`` with a Mode and return it; raises if it does not."""
        mode = self._wait()
        if mode is None:
            self._fail_start()
        assert mode is not None
        return mode

    def _wait(self) -> str | None:
        process = self._process
        if process is None:
            return None
        mode = wait_for_mode(self.host, self.port, timeout=self.start_timeout, alive=lambda: process.running)
        if mode is not None:
            self._ever_served = True
            log.info(
                "%s (%s backend, %s) serves at %s as %s",
                self.name,
                self.backend,
                self.installation.source,
                self.hosts,
                mode,
            )
        return mode

    def _fail_start(self) -> NoReturn:
        process = self._process
        exited = process is not None and not process.running
        self.exited_at_start = exited
        tail = process.log_tail() if process is not None else ""
        self.stop()
        if exited:
            reason = "its java process exited before it answered 'srvr' with a Mode line"
        else:
            reason = f"it did not answer 'srvr' with a Mode line within {self.start_timeout:g} seconds"
        message = (
            f"ZooKeeper from {self.installation.source} could not start at {self.hosts}: {reason}. "
            f"Its log is {self.log_path}"
        )
        message += f"; it ends with:\n{tail}" if tail else "."
        raise ZooKeeperHarnessError(message)

    def stop(self) -> None:
        with self._lock:
            if self._process is not None:
                self._process.stop()
                self._process = None

    def close(self) -> None:
        with self._lock:
            self.stop()
            if self._owns_dir:
                shutil.rmtree(self.data_dir, ignore_errors=True)


class ExternalZooKeeperServer(ZooKeeperServer):
    """A server or ensemble someone else runs (``AUTOGLM_ZK_HOSTS``); it cannot be stopped or started."""

    backend = "external"

    def __init__(self, hosts: str) -> None:
        first = hosts.split("/", 1)[0].split(",", maxsplit=1)[0]
        host, _, port = first.rpartition(":")
        try:
            port_number = int(port) if host else 2181
        except ValueError:
            port_number = 2181
            host = first
        super().__init__((host or first).strip("[]"), port_number)
        self._hosts = hosts

    @property
    def hosts(self) -> str:
        """The connect string exactly as ``AUTOGLM_ZK_HOSTS`` gave it."""
        return self._hosts

    @property
    def running(self) -> bool:
        return True

    def start(self) -> None:
        """Check that the first host accepts TCP connections; raises ZooKeeperUnavailableError if not."""
        try:
            socket.create_connection((self.host, self.port), timeout=5.0).close()
        except OSError as exc:
            raise ZooKeeperUnavailableError(
                f"AUTOGLM_ZK_HOSTS names {self._hosts}, but {format_hosts([(self.host, self.port)])} "
                f"does not accept connections ({exc})."
            ) from exc

    def stop(self) -> None:
        raise ZooKeeperHarnessError(
            f"The external ZooKeeper at {self._hosts} is not run by the harness, so it cannot be stopped or "
            "restarted; use the local or container backend for tests that stop servers."
        )

    def close(self) -> None:
        return None
