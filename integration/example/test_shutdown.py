"""Stopping the example server by signal, as a user at a terminal does: one Ctrl-C stops it cleanly; a second one
during a slow shutdown (a client still connected) stops it at once, quietly, and no worker is left behind.

The server runs as ``python -m examples.model_server --config-store file`` (no ZooKeeper needed), in a session of
its own, as ``bash scripts/serve`` execs it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from integration.example._server import DEFAULT_WHEELS, REPO
from tests._support.processes import is_running

from autoglm_runtime.deps import load_manifest
from autoglm_runtime.errors import UsageError
from examples.model_server.assets import MODELS, fill_wheelhouse

pytestmark = pytest.mark.slow


def _until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}")
        time.sleep(0.05)  # polling a condition with a deadline


class _Started:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, stderr: Path) -> None:
        self.proc, self.port, self.stderr = proc, port, stderr

    def lines(self) -> list[str]:
        return self.stderr.read_text(errors="replace").splitlines()

    def messages(self) -> list[str]:
        return [json.loads(line)["message"] for line in self.lines() if line.startswith("{")]

    def workers(self) -> list[int]:
        return [int(m.split("pid ")[1].split(",")[0]) for m in self.messages() if "worker started (pid" in m]


def _launch(tmp_path: Path) -> _Started:
    """The server, started in a session of its own; its standard output in ``tmp_path / "stdout.log"``."""
    fill_wheelhouse(DEFAULT_WHEELS, [load_manifest(model) for model in sorted(MODELS.iterdir())])
    (tmp_path / "wheels").mkdir()
    for wheel in DEFAULT_WHEELS.glob("numpy-*.whl"):
        shutil.copy2(wheel, tmp_path / "wheels" / wheel.name)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    stderr = tmp_path / "stderr.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    with stderr.open("wb") as errors, (tmp_path / "stdout.log").open("wb") as output:
        proc = subprocess.Popen(
            [sys.executable, "-m", "examples.model_server", "--config-store", "file", "--port", str(port),
             "--state-dir", str(tmp_path / "state")],
            cwd=REPO, env=env, stdout=output, stderr=errors, start_new_session=True,
        )  # fmt: skip
    return _Started(proc, port, stderr)


@pytest.fixture
def started(tmp_path: Path) -> Iterator[_Started]:
    server = _launch(tmp_path)
    proc, port = server.proc, server.port
    try:
        _until(lambda: proc.poll() is not None or _healthy(port), 240, "the server to answer /health")
        assert proc.poll() is None, "\n".join(server.lines()[-30:])
        yield server
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize(
    ("first", "second", "code"),
    [
        pytest.param(signal.SIGINT, signal.SIGINT, 130, id="Ctrl-C twice"),
        # Before: 130, as if Ctrl-C had stopped it; the stop was SIGTERM's, a Ctrl-C only hurried it.
        pytest.param(signal.SIGTERM, signal.SIGINT, 143, id="SIGTERM, then Ctrl-C"),
    ],
)
def test_a_second_ctrl_c_while_a_client_holds_the_shutdown_exits_at_once_quietly_and_reaps_the_workers(
    started: _Started, first: signal.Signals, second: signal.Signals, code: int
) -> None:
    # Before: uvicorn's forced exit cancelled the request still reading its body and the lifespan task, and both
    # were logged with their tracebacks (ERROR "Exception in ASGI application ... CancelledError").
    workers = started.workers()
    assert len(workers) == 3  # chars-numpy2's one replica, words-numpy1's two
    with socket.create_connection(("127.0.0.1", started.port)) as client:
        # A request whose body never finishes: the connection stays open, so the shutdown waits for it.
        client.sendall(
            b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 100\r\n\r\n{"
        )
        time.sleep(0.2)  # (only lets the request reach the app; the test waits on the log below)
        started.proc.send_signal(first)
        _until(
            lambda: any("Waiting for connections to close" in m for m in started.messages()), 60, "the shutdown to wait"
        )
        started.proc.send_signal(second)
        assert started.proc.wait(60) == code
    lines = started.lines()
    assert [line for line in lines if "Traceback" in line or '"level": "ERROR"' in line] == []
    assert not [line for line in lines if not line.startswith("{")]  # nothing but JSON log lines
    assert "second interrupt: stopping at once, without waiting for open connections" in started.messages()
    _until(lambda: not any(is_running(pid) for pid in workers), 30, f"the workers {workers} to exit")


def test_ctrl_c_pressed_again_and_again_while_it_stops_still_exits_quietly_and_reaps_the_workers(
    started: _Started,
) -> None:
    # Before: a Ctrl-C landing after uvicorn returned raised KeyboardInterrupt wherever the clean-up was (closing the
    # loader, the config store, joining threads at exit), cutting it short, with a traceback.
    workers = started.workers()
    started.proc.send_signal(signal.SIGINT)
    while started.proc.poll() is None:  # a user leaning on Ctrl-C: every phase of the stop gets one
        started.proc.send_signal(signal.SIGINT)
        time.sleep(0.005)
    assert started.proc.returncode == 130
    lines = started.lines()
    assert [line for line in lines if "Traceback" in line or '"level": "ERROR"' in line] == []
    assert not [line for line in lines if not line.startswith("{")]
    _until(lambda: not any(is_running(pid) for pid in workers), 30, f"the workers {workers} to exit")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_one_signal_stops_it_cleanly_with_its_exit_code(started: _Started, sig: signal.Signals, code: int) -> None:
    workers = started.workers()
    started.proc.send_signal(sig)
    assert started.proc.wait(60) == code
    messages = started.messages()
    assert "second interrupt: stopping at once, without waiting for open connections" not in messages
    assert [line for line in started.lines() if "Traceback" in line or '"level": "ERROR"' in line] == []
    _until(lambda: not any(is_running(pid) for pid in workers), 30, f"the workers {workers} to exit")


def test_sigterm_during_the_start_passes_the_handlers_of_ordinary_errors_it_lands_in() -> None:
    # Before: _Terminated was an Exception. Raised by the SIGTERM handler wherever the start was, inside code that
    # translates ordinary errors at its boundary (a tokenizer's load, a config value's decoding), it became that
    # code's coded error: "bash scripts/serve: error ..." and its exit code instead of a clean stop with 143.
    from examples.model_server.__main__ import _Stop, _Terminated

    stop = _Stop()

    def translating() -> None:
        try:
            stop(signal.SIGTERM, None)
        except Exception as exc:
            raise UsageError("the code it landed in") from exc

    with pytest.raises(_Terminated):
        translating()
    assert stop.stopping
    stop(signal.SIGTERM, None)  # once stopping, another only lets the clean-up run (it is said once in the log)


def test_ctrl_c_while_a_model_loads_says_its_started_worker_was_stopped_too(tmp_path: Path) -> None:
    # Before: "stopped: ..." named only the models loaded; the worker of the model still loading, which the stop did
    # end, was left out of it.
    server = _launch(tmp_path)
    proc = server.proc
    starting = "model words-numpy1 worker started (pid "
    try:
        _until(
            lambda: proc.poll() is not None or any(m.startswith(starting) for m in server.messages()),
            240,
            "words-numpy1's first worker to start",
        )
        assert proc.poll() is None, "\n".join(server.lines()[-30:])
        (pid,) = [int(m.removeprefix(starting).split(",")[0]) for m in server.messages() if m.startswith(starting)]
        os.kill(pid, signal.SIGSTOP)  # it cannot answer its handshake: the load stays under way
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    messages = server.messages()
    assert [m for m in messages if m.startswith(("model words-numpy1 loaded", starting))] == [
        f"{starting}{pid}, process backend)"
    ]
    said = (tmp_path / "stdout.log").read_text().splitlines()
    assert said == ["stopped: 2 model workers (chars-numpy2 1, words-numpy1 1 mid-load)"]
    assert f"model words-numpy1 worker stopped (pid {pid})" in messages
    _until(lambda: not any(is_running(p) for p in server.workers()), 30, f"the workers {server.workers()} to exit")
