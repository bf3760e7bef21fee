"""The container backend's lifecycle, driven through a stand-in for testcontainers' DockerContainer.

There is no Docker engine where these tests run; the stand-in records the calls the backend makes on
the testcontainers and docker-py objects, and a loopback TCP stub answers ``srvr`` like ZooKeeper.
"""

from __future__ import annotations

import socket

import pytest

from autoglm_runtime.testing._container import ContainerZooKeeperServer
from autoglm_runtime.testing.zookeeper import ZooKeeperHarnessError


class _Wrapped:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def stop(self, timeout: int) -> None:
        self.calls.append(f"docker stop timeout={timeout}")

    def start(self) -> None:
        self.calls.append("docker start")


class _Container:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.wrapped = _Wrapped(self.calls)

    def get_wrapped_container(self) -> _Wrapped:
        return self.wrapped

    def stop(self) -> None:
        self.calls.append("remove")


def test_stop_start_keep_the_container_and_close_removes_it(srvr_port: int) -> None:
    container = _Container()
    server = ContainerZooKeeperServer(container, "127.0.0.1", srvr_port, image="zookeeper:3.8", start_timeout=5)

    assert (server.backend, server.hosts, server.running) == ("container", f"127.0.0.1:{srvr_port}", True)
    server.stop()
    server.stop()
    assert not server.running
    server.start()
    assert server.running
    server.restart()
    server.close()
    server.close()

    assert container.calls == [
        "docker stop timeout=5",
        "docker start",
        "docker stop timeout=5",
        "docker start",
        "remove",
    ]
    with pytest.raises(ZooKeeperHarnessError) as info:
        server.start()
    assert info.value.message == f"The ZooKeeper container that served 127.0.0.1:{srvr_port} was removed."


def test_a_container_that_never_serves_is_reported() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    server = ContainerZooKeeperServer(_Container(), "127.0.0.1", port, image="zookeeper:3.8", start_timeout=0)

    with pytest.raises(ZooKeeperHarnessError) as info:
        server.wait_until_serving()
    assert info.value.message == (
        f"ZooKeeper in a zookeeper:3.8 container did not answer 'srvr' with a Mode line at 127.0.0.1:{port}: "
        "not within 0 seconds."
    )


class _ExitedWrapped(_Wrapped):
    status = "running"

    def reload(self) -> None:
        self.status = "exited"


class _ExitedContainer(_Container):
    def __init__(self) -> None:
        super().__init__()
        self.wrapped = _ExitedWrapped(self.calls)

    def get_logs(self) -> tuple[bytes, bytes]:
        return b"line 1\n", b"Error: no zoo.cfg\n"


def test_a_container_that_exits_is_reported_at_once_with_its_log() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    server = ContainerZooKeeperServer(_ExitedContainer(), "127.0.0.1", port, image="zk:test", start_timeout=600)

    with pytest.raises(ZooKeeperHarnessError) as info:
        server.wait_until_serving()  # returns long before the 600 s: the engine says the container exited
    assert info.value.message == (
        f"ZooKeeper in a zk:test container did not answer 'srvr' with a Mode line at 127.0.0.1:{port}: "
        "the container stopped (exited) before it did. Its log ends with:\nline 1\nError: no zoo.cfg"
    )


class _GoneContainer(_Container):
    def stop(self) -> None:
        raise ConnectionError("the engine's socket is gone")


def test_close_when_the_engine_is_gone_warns_and_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    server = ContainerZooKeeperServer(_GoneContainer(), "127.0.0.1", 2181, image="zk:test", start_timeout=5)

    server.close()

    assert not server.running
    assert [r.getMessage() for r in caplog.records] == [
        "Could not remove the ZooKeeper container that served 127.0.0.1:2181: "
        'ConnectionError("the engine\'s socket is gone")'
    ]
