"""Fixtures for integration tests against a real ZooKeeper, built on autoglm_runtime.testing.zookeeper.

The backend comes from AUTOGLM_ZK_BACKEND (auto: container, local, external). When no backend can
start, tests that need ZooKeeper fail if CI is true and are skipped otherwise, with a message saying
how to install ZooKeeper.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator

import pytest
from integration._helpers import kazoo_session, skip_or_fail_zookeeper
from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError

from autoglm_runtime.testing.zookeeper import (
    BACKENDS,
    FaultProxy,
    ZooKeeperEnsemble,
    ZooKeeperServer,
    ZooKeeperUnavailableError,
    in_ci,
    skip_or_fail,
    start_ensemble,
    start_zookeeper,
)

# What the fixtures started, for the end-of-run summary ("which backend was used").
_STARTED: list[str] = []


def pytest_report_header(config: pytest.Config) -> str:
    choice = os.environ.get("AUTOGLM_ZK_BACKEND") or "auto"
    return f"zookeeper harness: AUTOGLM_ZK_BACKEND={choice} (auto tries {', '.join(BACKENDS)}), CI={in_ci()}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in dict.fromkeys(_STARTED):
        terminalreporter.write_line(line)


def _start_server() -> ZooKeeperServer:
    try:
        server = start_zookeeper()
    except ZooKeeperUnavailableError as exc:
        skip_or_fail_zookeeper(exc)
    _STARTED.append(f"zookeeper harness: used the {server.backend} backend")
    return server


@pytest.fixture(scope="session")
def zk_server() -> Iterator[ZooKeeperServer]:
    """One ZooKeeper server shared by the whole session; do not stop it (use zk_restartable)."""
    server = _start_server()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def zk_hosts(zk_server: ZooKeeperServer) -> str:
    """The connect string of the session's server (started again should a test have stopped it)."""
    if not zk_server.running:
        zk_server.start()
    return zk_server.hosts


@pytest.fixture(scope="session")
def _zk_admin(zk_server: ZooKeeperServer) -> Iterator[KazooClient]:
    with kazoo_session(zk_server.hosts) as client:
        yield client


def _remove_tree(admin: KazooClient, root: str) -> None:
    # Clients of the test may still be writing under root while it goes; the path is unique, so a
    # leftover is harmless and only worth a warning, never a failed test.
    for _ in range(3):
        try:
            admin.delete(root, recursive=True)
            return
        except NoNodeError:
            return
        except KazooException:  # NotEmptyError when a client added a node meanwhile
            continue
    warnings.warn(f"could not remove the test's ZooKeeper path {root}", stacklevel=1)


@pytest.fixture
def zk_root(zk_hosts: str, _zk_admin: KazooClient) -> Iterator[str]:
    """A fresh path of the test's own, e.g. "/t/3f2a...", created empty and deleted after the test."""
    root = f"/t/{uuid.uuid4().hex}"
    _zk_admin.ensure_path(root)
    try:
        yield root
    finally:
        _remove_tree(_zk_admin, root)


@pytest.fixture
def zk_client(zk_hosts: str) -> Iterator[KazooClient]:
    """A started KazooClient on the session's server, stopped and closed after the test."""
    with kazoo_session(zk_hosts) as client:
        yield client


@pytest.fixture
def zk_proxy(zk_server: ZooKeeperServer, zk_hosts: str) -> Iterator[FaultProxy]:
    """A started FaultProxy in front of the session's server; connect clients to ``zk_proxy.hosts``."""
    proxy = FaultProxy(zk_server.host, zk_server.port).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def zk_restartable() -> Iterator[ZooKeeperServer]:
    """A server of the test's own that it may stop, start and restart; removed after the test."""
    server = _start_server()
    try:
        if server.backend == "external":
            skip_or_fail(
                ZooKeeperUnavailableError(
                    "Only the external backend (AUTOGLM_ZK_HOSTS) is available, and it cannot be restarted; "
                    "install ZooKeeper locally ('apt-get install zookeeper' or ZOOKEEPER_HOME) or start a "
                    "Docker engine."
                )
            )
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def zk_ensemble() -> Iterator[ZooKeeperEnsemble]:
    """Three local ZooKeeper servers forming one ensemble, shared by a test module."""
    try:
        ensemble = start_ensemble(3)
    except ZooKeeperUnavailableError as exc:
        skip_or_fail(exc)
    _STARTED.append("zookeeper harness: used a local ensemble of 3")
    try:
        yield ensemble
    finally:
        ensemble.close()
