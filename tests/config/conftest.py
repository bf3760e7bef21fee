"""Helpers for the config unit tests: a clock tests move by hand."""

from __future__ import annotations

import random

import pytest


class FixedRandom(random.Random):
    """A random source whose ``uniform(a, b)`` is always the same point of the range (``fraction`` of it)."""

    def __init__(self, fraction: float = 0.5) -> None:
        super().__init__(0)
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.fraction


class FakeClock:
    """A monotonic clock that only moves when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
