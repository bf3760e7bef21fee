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
    ("queued", "places", "held", "ages", "least", "most", "expected"),
    [
        (5, 1, None, [], 1.0, 60.0, 1),  # no call finished or holds a place: the least
        (5, 1, None, [], 2.5, 60.0, 3),  # ... in whole seconds, rounded up
        (0, 1, 0.01, [0.0], 1.0, 60.0, 1),  # quick calls: never below the least
        (7, 2, 3.0, [0.0, 0.0], 1.0, 60.0, 12),  # 8 calls to run on 2 places, 3 s each, both places just taken
        (7, 2, 3.0, [2.0, 3.5], 1.0, 60.0, 10),  # ... the places free in 0 and 1 s: the second's, 3 rounds later
        (63, 1, 2.0, [0.0], 1.0, 60.0, 60),  # a deep queue of slow calls: capped
        (2, 4, 1.5, [0.0] * 4, 0.0, 60.0, 2),  # 3 calls on 4 places just taken: the third frees in 1.5 s
        (0, 2, 10.0, [0.0, 0.0], 1.0, 60.0, 10),  # a queue shorter than the places: still no place before 10 s
        (1, 4, 10.0, [0.5] * 4, 1.0, 60.0, 10),  # (before: 10 * 2 / 4 = 5 s, when no place can be free)
        (1, 4, 10.0, [9.5, 0.5, 3.0, 8.0], 1.0, 60.0, 2),  # the second place to free: in 2 s
        (1, 4, 10.0, [0.5, 0.5], 1.0, 60.0, 1),  # two places none holds: the queued call and the refused one's
        (0, 1, 10.0, [0.0, 0.0, 0.0, 8.0], 1.0, 60.0, 2),  # more holders than places: the shortest counts
        (2, 1, 0.1, [0.0], 0.0, 60.0, 1),  # 0.3 s rounds up to a whole second
        (2, 1, 0.0, [0.0], 0.0, 60.0, 1),  # least 0 and calls that take no time: still 1 s, never "at once" (0)
        (0, 1, 4.0, [7.0], 0.0, 60.0, 1),  # least 0 and a call past the typical time, none queued: 1 s, not 0
        (9, 1, 5.0, [0.0], 0.0, 0.0, 1),  # least 0 and a cap of 0: 1 s
        (2, 1, 4.0, [7.0], 0.0, 60.0, 8),  # a call past the typical time: it ends any moment, then 2 rounds
        (9, 1, 5.0, [0.0], 1.0, 0.5, 1),  # a cap below the least: the least wins
        (3, 0, 5.0, [0.0], 1.0, 60.0, 1),  # (no place at all: nothing to reckon from)
    ],
)
def test_retry_after_reckons_the_wait_behind_the_queue_and_the_calls_in_flight_in_bounded_whole_seconds(
    queued: int, places: int, held: float | None, ages: list[float], least: float, most: float, expected: int
) -> None:
    hint = retry_after(queued=queued, places=places, held=held, ages=ages, least=least, most=most)
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


def test_held_time_before_any_call_gave_its_place_back_is_the_mean_age_of_those_holding_one() -> None:
    held = HeldTime()
    assert held.typical(now=5.0) is None  # nothing to go by
    first, second = held.take(now=0.0), held.take(now=6.0)
    assert (held.typical(now=10.0), held.ages(now=10.0)) == (7.0, [10.0, 4.0])
    assert held.ages(now=5.0) == [5.0, 0.0]  # (a clock stepping back: no negative age)
    held.give(second, now=12.0)
    assert (held.mean, held.typical(now=100.0)) == (6.0, 6.0)  # from now on the mean, whatever the age of first
    held.give(first, now=20.0)
    assert held.mean == pytest.approx(8.8)


def test_a_forked_child_forgets_the_parents_calls_holding_places_but_keeps_the_mean() -> None:
    # Without it, a forked child's hint went by the ever-growing age of its parent's calls, which never end there.
    held = HeldTime()
    held.give(held.take(now=0.0), now=4.0)
    parents = HeldTime()
    parents.take(now=0.0)
    for one in (held, parents):
        one.forget_holders()
    assert (held.typical(now=1000.0), parents.typical(now=1000.0)) == (4.0, None)
    assert parents.ages(now=1000.0) == []


MODEL = """
import os, time

class Model:
    def block(self, directory, running="running"):
        open(os.path.join(directory, running), "w").close()
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


def _refused(pool: ReplicaPool) -> ModelOverloadedError:
    with pytest.raises(ModelOverloadedError) as info:
        pool.call("echo", ("refused",), {}, None)
    return info.value


def _message(wait: int) -> str:
    return (
        "model 'retry' is overloaded: its 1 replica(s) each run max_inflight=1 calls and 2 more wait in its "
        f"queue (max_queue=2); echo() was refused without running: retry after {wait} s, or raise replicas, "
        "max_inflight or max_queue in its [serving] table"
    )


def test_an_overloaded_pool_tells_callers_to_wait_for_the_queue_ahead_of_them(tmp_path: Path) -> None:
    # Before: every refusal said Retry-After 1, however deep the queue of slow calls a retry would join.
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "retry_model.py").write_text(MODEL)
    worker = WorkerProcess(WorkerSpec("retry", sys.executable, str(tmp_path / "model"), "retry_model:load"))
    worker.start()
    now = [0.0]
    pool = ReplicaPool("retry", [worker], max_queue=2, heartbeat_interval=None, timer=lambda: now[0])
    try:
        # Phase 0: no call gave its place back yet, and the one holding it has for 10 s (the typical time): it ends
        # any moment, then the 2 queued ones run 10 s each. It gives it back after 10 s, the two queued after none
        # (the clock stands still): a mean of 6.4 s, so in phase 1: 6.4 s left of the call just started, then 2
        # calls of 6.4 s, 19.2 s rounded up.
        for phase, (runs_for, wait) in enumerate([(10.0, 20), (0.0, 20)]):
            gate = tmp_path / f"phase-{phase}"
            gate.mkdir()
            callers = [_in_background(pool.call, "block", (str(gate),), {}, None)]
            wait_until((gate / "running").exists, 30, "the blocking call to run")
            callers += [_in_background(pool.call, "echo", (i,), {}, None) for i in range(2)]
            wait_until(lambda: pool.queued == 2, 30, "two calls to queue")
            now[0] += runs_for
            refused = _refused(pool)
            assert (refused.retry_after, refused.message) == (wait, _message(wait))
            (gate / "go").touch()
            for thread, _ in callers:
                thread.join()
            assert [out for _, out in callers] == [["done"], [0], [1]]
    finally:
        pool.close()
    assert worker.health()["pid"] is None


@pytest.mark.parametrize("least", [1.0, 0.0])
def test_an_overloaded_pool_counts_what_the_calls_in_flight_still_have_to_run(tmp_path: Path, least: float) -> None:
    # Before: t * (queued + 1) / places, here 10 * 1 / 2 = 5 s, whatever the calls holding the places had left: with
    # two calls of 10 s just started, a client came back 5 s before either place could be free. And with
    # retry_after=0, calls past their typical time made the hint 0: `Retry-After: 0`, "retry at once".
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "retry_model.py").write_text(MODEL)
    spec = WorkerSpec("retry", sys.executable, str(tmp_path / "model"), "retry_model:load", "process", "threads", 2)
    worker = WorkerProcess(spec)
    worker.start()
    now = [0.0]
    pool = ReplicaPool(
        "retry", [worker], max_inflight=2, max_queue=0, heartbeat_interval=None, timer=lambda: now[0], retry_after=least
    )
    try:
        learn = tmp_path / "learn"
        learn.mkdir()
        first = _in_background(pool.call, "block", (str(learn),), {}, None)
        wait_until((learn / "running").exists, 30, "the first call to run")
        now[0] += 10.0
        (learn / "go").touch()
        first[0].join()
        gate = tmp_path / "gate"
        gate.mkdir()
        callers = [_in_background(pool.call, "block", (str(gate), f"running-{i}"), {}, None) for i in range(2)]
        wait_until(lambda: all((gate / f"running-{i}").exists() for i in range(2)), 30, "both calls to run")
        hints = []
        for runs_for in (0.0, 7.0, 5.0):  # just started; 3 s left; past the 10 s calls take (ending any moment)
            now[0] += runs_for
            with pytest.raises(ModelOverloadedError) as info:
                pool.call("echo", ("refused",), {}, None)
            hints.append(info.value.retry_after)
            assert info.value.message == (
                "model 'retry' is overloaded: its 1 replica(s) each run max_inflight=2 calls and 0 more wait in its "
                f"queue (max_queue=0); echo() was refused without running: retry after {hints[-1]} s, or raise "
                "replicas, max_inflight or max_queue in its [serving] table"
            )
        assert hints == [10, 3, 1]
        (gate / "go").touch()
        for thread, _ in callers:
            thread.join()
        assert [first[1]] + [out for _, out in callers] == [["done"], ["done"], ["done"]]
    finally:
        pool.close()
    assert worker.health()["pid"] is None
