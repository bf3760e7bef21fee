"""A ZooKeeper ensemble on loopback (local backend), whose members stop and start one by one.

::

    with start_ensemble(3) as ensemble:
        client = KazooClient(hosts=ensemble.hosts)   # "127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3"
        client.start()
        leader = ensemble.servers[ensemble.leader_index()]
        leader.stop()                                # the other two elect a new leader
        leader.start()                               # it rejoins as a follower
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from autoglm_runtime.testing._common import QuorumPeer, ZooKeeperHarnessError, format_hosts, free_port
from autoglm_runtime.testing._local import QUORUM_MAIN, LocalInstallation, find_local_installation
from autoglm_runtime.testing._server import DEFAULT_START_TIMEOUT, LocalZooKeeperServer

__all__ = ["ZooKeeperEnsemble", "start_ensemble"]

log = logging.getLogger("autoglm_runtime.testing.zookeeper")


class ZooKeeperEnsemble:
    """``size`` ZooKeeper servers on 127.0.0.1 that form one quorum; each member is a restartable server.

    Members are :class:`~autoglm_runtime.testing.zookeeper.ZooKeeperServer` objects in ``servers``:
    ``stop()`` and ``start()`` each one alone (a member's ``start()`` returns once it has rejoined,
    which needs a majority of members running). Use :func:`start_ensemble` to get one started.
    """

    backend = "local"

    def __init__(
        self,
        size: int = 3,
        *,
        installation: LocalInstallation | None = None,
        base_dir: str | os.PathLike[str] | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"An ensemble needs at least one member, not {size}.")
        self.installation = installation if installation is not None else find_local_installation(env)
        self._owns_dir = base_dir is None
        base = Path(tempfile.mkdtemp(prefix="autoglm-zk-ensemble-")) if base_dir is None else Path(base_dir)
        self.base_dir = base.resolve()  # once, here: members' java processes run in their own folders
        host = "127.0.0.1"
        peers = [QuorumPeer(n, host, free_port(host), free_port(host)) for n in range(1, size + 1)]
        self.servers: list[LocalZooKeeperServer] = [
            LocalZooKeeperServer(
                self.installation,
                data_dir=self.base_dir / f"server{peer.myid}",
                port=free_port(host),
                host=host,
                main_class=QUORUM_MAIN,
                peers=peers,
                myid=peer.myid,
                start_timeout=start_timeout,
                name=f"ZooKeeper ensemble member {peer.myid}",
            )
            for peer in peers
        ]

    @property
    def hosts(self) -> str:
        """The connect string naming every member, ``"127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3"``."""
        return format_hosts([(s.host, s.port) for s in self.servers])

    def start(self) -> ZooKeeperEnsemble:
        """Start every member that is stopped and return once all of them serve; returns self."""
        stopped = [s for s in self.servers if not s.running]
        try:
            for server in stopped:
                server.launch()  # all at once: no member serves until a majority runs
            for server in stopped:
                server.wait_until_serving()
        except BaseException:
            self.stop()
            raise
        log.info("ZooKeeper ensemble of %d (local backend) serves at %s", len(self.servers), self.hosts)
        return self

    def stop(self) -> None:
        """Stop every member, keeping their data."""
        for server in self.servers:
            server.stop()

    def close(self) -> None:
        """Stop every member and remove the folders the harness created."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def modes(self) -> list[str | None]:
        """Each member's ``srvr`` Mode (``leader``/``follower``), None for a member that does not serve."""
        return [s.mode() if s.running else None for s in self.servers]

    def leader_index(self) -> int | None:
        """The index in ``servers`` of the member that reports ``Mode: leader`` now, or None if none does."""
        for index, mode in enumerate(self.modes()):
            if mode == "leader":
                return index
        return None

    def wait_for_leader(self, timeout: float = 30.0) -> int:
        """Poll until some member is leader and return its index; raises ZooKeeperHarnessError at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            index = self.leader_index()
            if index is not None:
                return index
            if time.monotonic() >= deadline:
                raise ZooKeeperHarnessError(
                    f"No member of the ensemble at {self.hosts} became leader within {timeout:g} seconds "
                    f"(modes: {self.modes()})."
                )
            time.sleep(0.05)  # polling an election in progress, with a deadline

    def __enter__(self) -> ZooKeeperEnsemble:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ZooKeeperEnsemble hosts={self.hosts} modes={self.modes()}>"


def start_ensemble(
    size: int = 3,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    start_timeout: float = DEFAULT_START_TIMEOUT,
    env: Mapping[str, str] | None = None,
) -> ZooKeeperEnsemble:
    """Start an ensemble of ``size`` local servers and return it once every member serves.

    Needs the local backend (``ZOOKEEPER_HOME`` or Debian's package); raises
    :class:`~autoglm_runtime.testing.zookeeper.ZooKeeperUnavailableError` when it is missing.
    """
    attempts = 3
    for attempt in range(1, attempts + 1):
        ensemble = ZooKeeperEnsemble(size, base_dir=base_dir, start_timeout=start_timeout, env=env)
        try:
            return ensemble.start()
        except ZooKeeperHarnessError:
            ensemble.close()
            # ports were free when picked but another process may have bound one since: pick anew
            if attempt == attempts or not any(s.exited_at_start for s in ensemble.servers):
                raise
            log.warning("a ZooKeeper ensemble member exited at start; trying again with other ports")
        except BaseException:
            ensemble.close()
            raise
    raise AssertionError("unreachable")
