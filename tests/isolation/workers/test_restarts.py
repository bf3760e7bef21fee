"""The crash-loop policy on an injected clock: backoff, giving up, and what messages promise next."""

from __future__ import annotations

from autoglm_runtime.isolation.workers._restarts import RestartPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_up_to_its_maximum() -> None:
    clock = Clock()
    policy = RestartPolicy(max_restarts=10, backoff=0.5, max_backoff=3.0, timer=clock)
    delays = []
    for _ in range(5):
        policy.record("exited with status 1")
        delays.append(policy.delay())
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert policy.wait() == 3.0
    clock.now += 2.5
    assert policy.wait() == 0.5
    clock.now += 1.0
    assert policy.wait() == -0.5


def test_more_than_max_restarts_failures_in_a_row_give_up() -> None:
    policy = RestartPolicy(max_restarts=2, backoff=0.1, max_backoff=5.0, timer=Clock())
    steps = []
    for description in ("killed by signal 9 (SIGKILL)", "timed out in hang() after 0.5 s", "exited with status 3"):
        policy.record(description)
        steps.append((policy.exhausted, policy.next_step(during_call=True)))
    assert steps == [
        (False, "the next call restarts it"),
        (False, "the next call restarts it"),
        (
            True,
            "it has failed 3 times in a row, more than max_restarts=2, and will not be restarted: fix it and load "
            "it again",
        ),
    ]
    assert policy.gave_up("m").message == (
        "model 'm' failed 3 times in a row (last: exited with status 3); gave up after 2 restarts: read its stderr "
        "in the logs, fix it and load it again"
    )


def test_a_successful_call_starts_the_count_again() -> None:
    policy = RestartPolicy(max_restarts=1, backoff=0.1, max_backoff=5.0, timer=Clock())
    policy.record("exited with status 3")
    policy.succeeded()
    policy.record("exited with status 3")
    assert (policy.failures, policy.exhausted, policy.delay()) == (1, False, 0.1)


def test_a_failure_during_the_handshake_means_the_model_was_not_loaded() -> None:
    policy = RestartPolicy(max_restarts=5, backoff=0.1, max_backoff=5.0, timer=Clock())
    policy.record("exited with status 9")
    assert policy.next_step(during_call=False) == "the model was not loaded: read its stderr, fix it and load it again"
