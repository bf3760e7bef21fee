"""Helpers shared by the integration tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from kazoo.client import KazooClient

from autoglm_runtime.testing.zookeeper import (
    ZooKeeperUnavailableError,
    backend_order,
    fail_in_ci_else_skip,
    skip_or_fail,
)

#: The uv installed with the test environment (the ``uv`` extra).
UV = Path(sys.executable).with_name("uv")
#: Seconds a ``uv pip install`` from the package index may take before the test gives up on the index.
INDEX_TIMEOUT = 300.0


def _uv_cache() -> str | None:
    """uv's cache directory as the user's environment sets it, read when the tests are collected: before a
    fixture points ``XDG_CACHE_HOME`` (where uv keeps its cache too) at a test's own directory."""
    try:
        done = subprocess.run([str(UV), "cache", "dir"], capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


UV_CACHE = _uv_cache()

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


def uv_pip_install(*args: str | Path) -> None:
    """``uv pip install -q ARGS`` for a test that needs real wheels: from uv's cache alone when it holds them
    (``--offline``: no network, about 0.3 s), else from the package index (``UV_INDEX_URL`` or PyPI). The cache is
    the user's (``UV_CACHE`` above), also in a test whose check-deps caches live in its own ``XDG_CACHE_HOME``.

    When neither can, the test fails under ``CI`` and is skipped elsewhere, with uv's own error either way: a CI
    machine without the index and without a warm cache never passes by skipping what it did not run.
    """
    argv = [str(UV), "pip", "install", "-q", *map(str, args)]
    env = {**os.environ, "UV_CACHE_DIR": UV_CACHE} if UV_CACHE else None
    if subprocess.run([*argv, "--offline"], capture_output=True, check=False, env=env).returncode == 0:
        return
    command = f"uv pip install {' '.join(map(str, args))}"
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, env=env, timeout=INDEX_TIMEOUT)
    except subprocess.TimeoutExpired:
        fail_in_ci_else_skip(f"{command}: not in uv's cache, and the package index did not answer in {INDEX_TIMEOUT} s")
    if done.returncode != 0:
        fail_in_ci_else_skip(
            f"{command}: not in uv's cache, and not installable from the package index (is it reachable?): "
            f"{done.stderr.strip()[-600:]}"
        )


@contextmanager
def served(app: Any) -> Iterator[str]:
    """``app`` served by a real uvicorn on a free loopback port, on a thread of this process: its base URL
    (``http://127.0.0.1:PORT``) until the block ends, then the server is stopped."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn-test-server")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped while starting"
        assert time.monotonic() < deadline, "uvicorn did not start within 30 seconds"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@contextmanager
def prefork_uvicorn(app: str, cwd: Path, metrics: Path, **env: str) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``uvicorn APP --workers 2`` run from ``cwd`` (on ``PYTHONPATH``), with ``PROMETHEUS_MULTIPROC_DIR=metrics``
    and ``env``, on a loopback socket passed by ``--fd`` (as systemd passes them, listening already): its port and
    process until the block ends, then SIGINT (uvicorn stops its workers, then itself), and SIGKILL to its session
    if it has not ended within 30 s."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    environment = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
        "PYTHONPATH": os.pathsep.join([str(cwd), os.environ.get("PYTHONPATH", "")]),
        **env,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", app, "--workers", "2", "--fd", str(sock.fileno())],
        pass_fds=[sock.fileno()],
        env=environment,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    sock.close()
    try:
        yield port, proc
    finally:
        proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # its workers too: they are in its session
            proc.wait()
