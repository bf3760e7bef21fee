"""The container backend against a real engine: what it creates, and that closing it leaves nothing behind.

These look at the container itself, so they run only when the container backend is chosen
(``AUTOGLM_ZK_BACKEND=container``); ``scripts/test`` runs them in its container pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from integration._helpers import kazoo_session, skip_or_fail_zookeeper

from autoglm_runtime.testing._container import HARNESS_LABEL, OWNER_LABEL, ContainerZooKeeperServer
from autoglm_runtime.testing.zookeeper import ZooKeeperUnavailableError, backend_order, start_zookeeper

pytestmark = pytest.mark.zk_container

ROOT = Path(__file__).resolve().parents[2]


def _docker() -> Any:
    import docker

    return docker.from_env()


def _exists(kind: str, name: str) -> bool:
    import docker

    client = _docker()
    try:
        getattr(client, kind).get(name)
    except docker.errors.NotFound:
        return False
    finally:
        client.close()
    return True


@pytest.fixture
def container_server() -> Iterator[ContainerZooKeeperServer]:
    if backend_order() != ("container",):
        pytest.skip(
            "looks at the container itself, so it runs with AUTOGLM_ZK_BACKEND=container: "
            "scripts/test runs it in its container pass"
        )
    try:
        server = start_zookeeper("container")
    except ZooKeeperUnavailableError as exc:
        skip_or_fail_zookeeper(exc)
    assert isinstance(server, ContainerZooKeeperServer)
    try:
        yield server
    finally:
        server.close()


def test_the_container_is_labelled_and_published_on_loopback(container_server: ContainerZooKeeperServer) -> None:
    client = _docker()
    try:
        attrs = client.containers.get(container_server.container_id).attrs
    finally:
        client.close()

    labels = attrs["Config"]["Labels"]
    assert (labels[HARNESS_LABEL], labels[OWNER_LABEL]) == ("zookeeper", str(os.getpid()))
    bindings = attrs["HostConfig"]["PortBindings"]["2181/tcp"]
    assert [(b["HostIp"], b["HostPort"]) for b in bindings] == [("127.0.0.1", str(container_server.port))]
    assert container_server.hosts == f"127.0.0.1:{container_server.port}"


def test_close_removes_the_container_and_its_volumes(container_server: ContainerZooKeeperServer) -> None:
    with kazoo_session(container_server.hosts) as client:
        client.create("/written", b"data")
    client_api = _docker()
    try:
        mounts = client_api.containers.get(container_server.container_id).attrs["Mounts"]
    finally:
        client_api.close()
    volumes = [m["Name"] for m in mounts if m.get("Type") == "volume"]
    assert volumes, "the image declares /data and /datalog as volumes"
    container_id = container_server.container_id

    container_server.close()

    assert not _exists("containers", container_id)
    assert [v for v in volumes if _exists("volumes", v)] == []
    assert container_server.mode() is None


_ORPHAN_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from autoglm_runtime.testing.zookeeper import start_zookeeper
    server = start_zookeeper("container")
    print(server.container_id, flush=True)
    os.kill(os.getpid(), 9)  # no atexit, no reaper: the container outlives its process
    """
)


def test_a_container_whose_process_died_is_found_by_the_clean_up_script(
    container_server: ContainerZooKeeperServer,
) -> None:
    if shutil.which("podman") is None:
        pytest.skip("scripts/container-zookeeper cleans up after podman; this engine is not podman")
    result = subprocess.run(
        [sys.executable, "-c", _ORPHAN_SCRIPT], capture_output=True, text=True, timeout=180, check=False
    )
    orphan = result.stdout.strip()
    assert orphan, result.stderr
    try:
        leftovers = subprocess.run(
            ["bash", str(ROOT / "scripts" / "container-zookeeper"), "leftovers"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.split()

        assert orphan[:12] in leftovers
        assert container_server.container_id[:12] not in leftovers  # its process (this one) still runs
    finally:
        client = _docker()
        try:
            client.containers.get(orphan).remove(force=True, v=True)
        finally:
            client.close()
