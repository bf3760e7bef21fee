"""wait_until: returns once the condition holds, fails with the condition's name at the deadline."""

from __future__ import annotations

import pytest

from autoglm_runtime.testing import wait_until


class Steps:
    """A clock that moves one second per reading, so deadlines pass without sleeping."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_returns_as_soon_as_the_condition_holds() -> None:
    answers = iter([False, False, True])
    calls: list[bool] = []

    def condition() -> bool:
        calls.append(True)
        return next(answers)

    wait_until(condition, timeout=100, interval=0, timer=Steps())
    assert len(calls) == 3


def test_fails_naming_what_it_waited_for() -> None:
    with pytest.raises(AssertionError, match=r"^the new window not reached within 3 s$"):
        wait_until(lambda: False, timeout=3, what="the new window", interval=0, timer=Steps())
