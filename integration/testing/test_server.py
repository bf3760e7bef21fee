"""A single harness server: start, stop and restart keep data; stopping leaves no java process behind."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from tests._support.processes import group_members

from autoglm_runtime.testing._local import live_processes
from autoglm_runtime.testing._server import LocalZooKeeperServer
from autoglm_runtime.testing.zookeeper import ZooKeeperServer, ZooKeeperUnavailableError, skip_or_fail, start_zookeeper


def _read_back(hosts: str, path: str) -> bytes:
    client = KazooClient(hosts=hosts)
    client.start(timeout=30)
    try:
        data, _ = client.get(path)
        return bytes(data)
    finally:
        client.stop()
        client.close()


def _group_gone(pgid: int, timeout: float = 10.0) -> bool:
    """True once no process of group ``pgid`` is left (zombies waiting for init count as gone)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        if not group_members(pgid) or time.monotonic() >= deadline:
            return not group_members(pgid)
        time.sleep(0.05)  # polling the kernel's process table with a deadline


def _local_server(zk_restartable: ZooKeeperServer) -> LocalZooKeeperServer:
    if not isinstance(zk_restartable, LocalZooKeeperServer):
        pytest.skip(f"this test looks at the java process of the local backend, not the {zk_restartable.backend} one")
    return zk_restartable


@pytest.mark.zk_container
def test_restart_keeps_data_and_port(zk_restartable: ZooKeeperServer) -> None:
    client = KazooClient(hosts=zk_restartable.hosts)
    client.start(timeout=30)
    client.create("/kept/node", b"written before restart", makepath=True)
    client.stop()
    client.close()
    hosts = zk_restartable.hosts

    zk_restartable.restart()

    assert zk_restartable.hosts == hosts
    assert _read_back(zk_restartable.hosts, "/kept/node") == b"written before restart"


@pytest.mark.zk_container
def test_stop_then_start_keeps_data(zk_restartable: ZooKeeperServer) -> None:
    client = KazooClient(hosts=zk_restartable.hosts)
    client.start(timeout=30)
    client.create("/kept", b"v1")
    client.stop()
    client.close()

    zk_restartable.stop()
    assert not zk_restartable.running
    assert zk_restartable.mode() is None
    zk_restartable.start()

    assert zk_restartable.mode() == "standalone"
    assert _read_back(zk_restartable.hosts, "/kept") == b"v1"


def test_stop_leaves_no_java_process(zk_restartable: ZooKeeperServer) -> None:
    server = _local_server(zk_restartable)
    assert server.process is not None
    pgid = server.process.pid
    assert pgid is not None
    assert group_members(pgid)

    server.stop()

    assert _group_gone(pgid)
    assert server.process is None
    assert all(p.pid != pgid for p in live_processes())


_ORPHAN_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from autoglm_runtime.testing.zookeeper import start_zookeeper
    server = start_zookeeper("local")
    print(server.process.pid, flush=True)
    if sys.argv[1] == "kill":
        os.kill(os.getpid(), 9)
    # "exit": leave without stop(); the atexit hook must clean up
    """
)


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_no_java_process_survives_its_python(how: str) -> None:
    try:
        start_zookeeper("local").close()  # skip (or fail in CI) the same way the fixtures do
    except ZooKeeperUnavailableError as exc:
        skip_or_fail(exc)
    result = subprocess.run(
        [sys.executable, "-c", _ORPHAN_SCRIPT, how], capture_output=True, text=True, timeout=120, check=False
    )
    pgid = int(result.stdout.split()[0])

    assert _group_gone(pgid), f"java process group {pgid} outlived its Python ({how}): {group_members(pgid)}"


def test_a_relative_data_dir_starts_and_keeps_its_data_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The reproduction: java runs in the data folder, so a relative path must be resolved before.
    monkeypatch.chdir(tmp_path)
    try:
        server = start_zookeeper("local", data_dir=Path("zkdata"))
    except ZooKeeperUnavailableError as exc:
        skip_or_fail(exc)
    with server:
        assert isinstance(server, LocalZooKeeperServer)
        assert server.data_dir == tmp_path / "zkdata"
        assert server.mode() == "standalone"
        monkeypatch.chdir("/")  # a later change of directory does not move the server's files
        server.restart()
        assert server.mode() == "standalone"
    assert (tmp_path / "zkdata" / "zoo.cfg").is_file()
    assert (tmp_path / "zkdata" / "version-2").is_dir()
    assert not (tmp_path / "zkdata" / "zkdata").exists()
