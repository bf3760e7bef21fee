"""The Retry-After of an overloaded model (E0106): the pure reckoning, and a pool of real worker processes on the host
interpreter whose clock the test moves."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from autoglm_runtime.errors import ModelOverloadedError
from autoglm_runtime.isolation.workers._retry import HeldTime, retry_after
from autoglm_runtime.isolation.workers.pool import ReplicaPool
from autoglm_runtime.isolation.workers.process import WorkerProcess, WorkerSpec
from autoglm_runtime.testing import wait_until


@pytest.mark.parametrize(
    ("queued", "places", "held", "least", "most", "expected"),
    [
        (5, 1, None, 1.0, 60.0, 1),  # no call finished yet: the least
        (5, 1, None, 2.5, 60.0, 3),  # ... in whole seconds, rounded up
        (0, 1, 0.01, 1.0, 60.0, 1),  # quick calls: never below the least
        (7, 2, 3.0, 1.0, 60.0, 12),  # 8 calls to run on 2 places, 3 s each
        (63, 1, 2.0, 1.0, 60.0, 60),  # a deep queue of slow calls: capped
        (2, 4, 1.5, 0.0, 60.0, 2),  # 3 calls on 4 places: one round, rounded up
        (2, 1, 0.1, 0.0, 60.0, 1),  # 0.3 s rounds up to a whole second
        (2, 1, 0.0, 0.0, 60.0, 0),  # with least 0, calls that take no time: come back at once
        (9, 1, 5.0, 1.0, 0.5, 1),  # a cap below the least: the least wins
        (3, 0, 5.0, 1.0, 60.0, 1),  # (no place at all: nothing to reckon from)
    ],
)
def test_retry_after_reckons_the_wait_behind_the_queue_in_bounded_whole_seconds(
    queued: int, places: int, held: float | None, least: float, most: float, expected: int
) -> None:
    hint = retry_after(queued=queued, places=places, held=held, least=least, most=most)
    assert (hint, type(hint)) == (expected, int)


def test_held_time_is_a_weighted_mean_of_recent_calls() -> None:
    held = HeldTime()
    assert held.mean is None
    held.add(10.0)
    assert held.mean == 10.0
    held.add(0.0)
    assert held.mean == 8.0  # the newest call weighs 0.2
    held.add(-3.0)  # (a clock stepping back counts as no time)
    assert held.mean == pytest.approx(6.4)


MODEL = """
import os, time

class Model:
    def block(self, directory):
        open(os.path.join(directory, "running"), "w").close()
        while not os.path.exists(os.path.join(directory, "go")):
            time.sleep(0.01)
        return "done"

    def echo(self, value):
        return value

def load():
    return Model()
"""


def _in_background(function: Any, *args: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(function(*args)), name="test-caller")
    thread.start()
    return thread, out


def test_an_overloaded_pool_tells_callers_to_wait_for_the_queue_ahead_of_them(tmp_path: Path) -> None:
    # Before: every refusal said Retry-After 1, however deep the queue of slow calls a retry would join.
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "retry_model.py").write_text(MODEL)
    worker = WorkerProcess(WorkerSpec("retry", sys.executable, str(tmp_path / "model"), "retry_model:load"))
    worker.start()
    now = [0.0]
    pool = ReplicaPool("retry", [worker], max_queue=2, heartbeat_interval=None, timer=lambda: now[0])
    try:
        first = tmp_path / "first"
        first.mkdir()
        running = _in_background(pool.call, "block", (str(first),), {}, None)
        wait_until((first / "running").exists, 30, "the first call to run")
        now[0] = 10.0  # the first call holds the replica 10 s
        (first / "go").touch()
        running[0].join()
        assert running[1] == ["done"]

        second = tmp_path / "second"
        second.mkdir()
        callers = [_in_background(pool.call, "block", (str(second),), {}, None)]
        wait_until((second / "running").exists, 30, "the second call to run")
        callers += [_in_background(pool.call, "echo", (i,), {}, None) for i in range(2)]
        wait_until(lambda: pool.queued == 2, 30, "two calls to queue")
        with pytest.raises(ModelOverloadedError) as info:
            pool.call("echo", ("refused",), {}, None)
        assert info.value.retry_after == 30  # 2 queued and the refused one, 10 s each, on 1 place
        assert info.value.message == (
            "model 'retry' is overloaded: its 1 replica(s) each run max_inflight=1 calls and 2 more wait in its "
            "queue (max_queue=2); echo() was refused without running: retry after 30 s, or raise replicas, "
            "max_inflight or max_queue in its [serving] table"
        )
        (second / "go").touch()
        for thread, _ in callers:
            thread.join()
        assert [out for _, out in callers] == [["done"], [0], [1]]
    finally:
        pool.close()
    assert worker.health()["pid"] is None
