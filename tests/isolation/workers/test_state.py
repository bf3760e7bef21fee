"""The worker supervision decision, as a table: no process, no clock."""

from __future__ import annotations

import itertools
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoglm_runtime.isolation.workers._state import (
    Action,
    Heartbeat,
    Phase,
    Step,
    WorkerView,
    decide,
    heartbeat_step,
    phase_of,
)

State = Literal["starting", "ready", "restarting", "dead", "failed"]
STATES: tuple[State, ...] = ("starting", "ready", "restarting", "dead", "failed")


def expected_phase(closing: bool, state: State, awaiting: bool, alive: bool) -> Phase:
    if closing:
        return Phase.CLOSED
    if state == "failed":
        return Phase.FAILED
    if alive and not awaiting and state == "ready":
        return Phase.READY
    if alive and awaiting:
        return Phase.LOADING
    return Phase.DOWN


@pytest.mark.parametrize(
    ("closing", "state", "awaiting", "alive"),
    list(itertools.product([False, True], STATES, [False, True], [False, True])),
)
def test_phase_of_every_combination(closing: bool, state: State, awaiting: bool, alive: bool) -> None:
    assert phase_of(closing=closing, state=state, awaiting_hello=awaiting, alive=alive) is expected_phase(
        closing, state, awaiting, alive
    )


@pytest.mark.parametrize(
    ("state", "awaiting", "alive", "phase"),
    [
        ("ready", False, True, Phase.READY),
        ("ready", False, False, Phase.DOWN),  # exited: never served
        ("starting", True, True, Phase.LOADING),
        ("restarting", True, True, Phase.LOADING),
        ("restarting", True, False, Phase.DOWN),  # died while loading
        ("starting", False, True, Phase.DOWN),  # handshake refused, process being stopped
        ("dead", False, False, Phase.DOWN),
        ("failed", True, True, Phase.FAILED),
    ],
)
def test_phase_of_named_cases(state: State, awaiting: bool, alive: bool, phase: Phase) -> None:
    assert phase_of(closing=False, state=state, awaiting_hello=awaiting, alive=alive) is phase


@pytest.mark.parametrize(
    ("view", "action"),
    [
        (WorkerView(Phase.CLOSED, exhausted=True, backoff_left=3.0, time_left=0.0), Action(Step.RAISE_CLOSED)),
        (WorkerView(Phase.FAILED, exhausted=True), Action(Step.RAISE_FAILED)),
        (WorkerView(Phase.READY, backoff_left=3.0, time_left=-1.0), Action(Step.SERVE)),
        (WorkerView(Phase.LOADING, exhausted=True, time_left=0.5), Action(Step.AWAIT_HELLO)),
        (WorkerView(Phase.DOWN, exhausted=True, backoff_left=-1.0), Action(Step.GIVE_UP)),
        (WorkerView(Phase.DOWN, backoff_left=0.0, time_left=0.0), Action(Step.RESTART)),
        (WorkerView(Phase.DOWN, backoff_left=-0.2, time_left=None), Action(Step.RESTART)),
        (WorkerView(Phase.DOWN, backoff_left=0.4, time_left=None), Action(Step.BACK_OFF, 0.4)),
        (WorkerView(Phase.DOWN, backoff_left=0.4, time_left=0.4), Action(Step.BACK_OFF, 0.4)),
        (WorkerView(Phase.DOWN, backoff_left=0.4, time_left=0.1), Action(Step.TIME_OUT, 0.1)),
        (WorkerView(Phase.DOWN, backoff_left=0.4, time_left=-2.0), Action(Step.TIME_OUT, 0.0)),
    ],
)
def test_decide_table(view: WorkerView, action: Action) -> None:
    assert decide(view) == action


views = st.builds(
    WorkerView,
    phase=st.sampled_from(Phase),
    exhausted=st.booleans(),
    backoff_left=st.floats(-10, 10, allow_nan=False),
    time_left=st.none() | st.floats(-10, 10, allow_nan=False),
)


@given(views)
def test_waits_are_never_negative_nor_past_the_deadline(view: WorkerView) -> None:
    action = decide(view)
    assert action.wait >= 0.0
    if action.step in (Step.BACK_OFF, Step.TIME_OUT):
        assert view.phase is Phase.DOWN
        assert action.wait <= view.backoff_left
        if view.time_left is not None:
            assert action.wait <= max(view.time_left, 0.0)
    else:
        assert action.wait == 0.0


@given(views)
def test_only_a_ready_worker_serves_and_only_a_down_one_is_restarted_or_given_up(view: WorkerView) -> None:
    step = decide(view).step
    assert (step is Step.SERVE) == (view.phase is Phase.READY)
    assert (step is Step.AWAIT_HELLO) == (view.phase is Phase.LOADING)
    if step in (Step.RESTART, Step.GIVE_UP):
        assert view.phase is Phase.DOWN
    assert (step is Step.GIVE_UP) == (view.phase is Phase.DOWN and view.exhausted)
    if step is Step.RESTART:
        assert view.backoff_left <= 0


@pytest.mark.parametrize(
    ("now", "last_ping", "unanswered_since", "expected"),
    [
        (10.0, 9.0, None, Heartbeat.WAIT),  # pinged a second ago, answered: nothing to do
        (10.0, 5.0, None, Heartbeat.PING),  # an interval since the last ping
        (10.0, 8.0, 8.0, Heartbeat.WAIT),  # unanswered for 2 s of the 3 s allowed
        (10.0, 5.0, 8.0, Heartbeat.PING),  # unanswered, not hung yet, a ping is due
        (10.0, 9.5, 7.0, Heartbeat.HUNG),  # unanswered for the whole 3 s
        (10.0, 9.5, 6.0, Heartbeat.HUNG),
    ],
)
def test_heartbeat_step(now: float, last_ping: float, unanswered_since: float | None, expected: Heartbeat) -> None:
    assert heartbeat_step(now, last_ping, unanswered_since, interval=4.0, timeout=3.0) is expected
