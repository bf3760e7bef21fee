"""Real workers on the small-call fast paths: a lone call that reads its own reply, liveness without reaping, the
encoder each thread keeps."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autoglm_runtime.errors import ModelCallError
from autoglm_runtime.isolation import ModelLoader
from autoglm_runtime.testing import wait_until

pytestmark = pytest.mark.slow

MODEL = """
import os
import conflictlib

class Model:
    def echo(self, value):
        return value

    def pid(self):
        return os.getpid()

    def fail(self):
        raise ValueError("bad input: 42")

def load():
    return Model()
"""


@pytest.fixture(scope="module")
def loader(wheelhouse: Path, env_root: Path) -> Iterator[ModelLoader]:
    with ModelLoader(env_root, wheelhouse=wheelhouse, offline=True, backend="process", heartbeat_interval=None) as one:
        yield one


@pytest.fixture
def model(loader: ModelLoader, make_model: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    loaded = loader.load(make_model(f"fast-{request.node.name[5:40]}".replace("_", "-"), MODEL))
    yield loaded
    loaded.close()


def _exited(pid: int) -> bool:
    """Exited, all its threads too, and not reaped (``WNOWAIT``): the host has not looked at it since it died. (A
    zombie in ``/proc`` is not enough: its other threads may still be exiting, and until they are gone it holds
    its socket open and no ``wait`` reports it.)"""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def test_a_worker_that_died_while_idle_is_restarted_by_the_next_call(model: Any) -> None:
    pid = model.call("pid", timeout=30)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: _exited(pid), 30, f"worker {pid} to die")
    assert model.call("pid", timeout=30) != pid  # not "died during pid()": the call never reached the dead one
    health = model.health()
    assert (health["state"], health["restarts"], health["last_exit"]) == ("ready", 1, "killed by signal 9 (SIGKILL)")


def test_lone_calls_one_after_another_get_their_own_results_and_errors(model: Any) -> None:
    for i in range(50):
        assert model.call("echo", {"i": i, "data": bytes([i]) * i}, timeout=30) == {"i": i, "data": bytes([i]) * i}
    with pytest.raises(ModelCallError, match="raised ValueError: bad input: 42 in fail"):
        model.call("fail", timeout=30)
    assert model.call("echo", [b"after", bytearray(b"error")], timeout=30) == [b"after", bytearray(b"error")]
    assert model.health()["inflight"] == 0


def test_callers_on_many_threads_each_get_their_own_result(model: Any) -> None:
    results: dict[int, list[Any]] = {}

    def caller(n: int) -> None:
        results[n] = [model.call("echo", [n, i, bytes([n]) * 3], timeout=60) for i in range(40)]

    threads = [threading.Thread(target=caller, args=(n,), name=f"test-caller-{n}") for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {n: [[n, i, bytes([n]) * 3] for i in range(40)] for n in range(6)}


def test_a_bytearray_argument_can_grow_after_the_call(model: Any) -> None:
    value = bytearray(b"abc")
    assert model.call("echo", value, timeout=30) == bytearray(b"abc")
    value.extend(b"d")  # BufferError if the host's kept encoder still held a view of it
    assert model.call("echo", value, timeout=30) == bytearray(b"abcd")
