"""Harness failures read as full sentences that say what happened and where the log is."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from autoglm_runtime.testing._local import find_local_installation, live_processes
from autoglm_runtime.testing._server import LocalZooKeeperServer
from autoglm_runtime.testing.zookeeper import ZooKeeperHarnessError, ZooKeeperUnavailableError, skip_or_fail


def test_port_in_use_is_reported_with_the_log(tmp_path: Path) -> None:
    try:
        installation = find_local_installation()
    except ZooKeeperUnavailableError as exc:
        skip_or_fail(exc)
    before = set(live_processes())  # other tests' servers (the session's) may be running
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        server = LocalZooKeeperServer(installation, data_dir=tmp_path, port=port, start_timeout=60)

        with pytest.raises(ZooKeeperHarnessError) as info:
            server.start()

    message = info.value.message
    head = (
        f"ZooKeeper from {installation.source} could not start at 127.0.0.1:{port}: its java process exited "
        f"before it answered 'srvr' with a Mode line. Its log is {tmp_path / 'zookeeper.log'}"
    )
    assert message.startswith(head)
    assert "Address already in use" in message
    assert server.exited_at_start
    assert not server.running
    assert set(live_processes()) == before
    assert (tmp_path / "zoo.cfg").read_text().splitlines()[4] == f"clientPort={port}"  # the port it was given
