"""Wait for a condition in a test without sleeping a fixed time: poll it until a deadline.

from autoglm_runtime.testing import wait_until

wait_until(lambda: config.get("limits/window") == 2048, timeout=10, what="the new window")
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["wait_until"]


def wait_until(
    condition: Callable[[], object],
    timeout: float = 20.0,
    what: str = "condition",
    *,
    interval: float = 0.01,
    timer: Callable[[], float] = time.monotonic,
) -> None:
    """Return once ``condition()`` is true; raise ``AssertionError`` naming ``what`` after ``timeout`` seconds.

    The condition is checked once more after the deadline passes, so a condition that became true while the
    last poll slept is not reported as missed.
    """
    deadline = timer() + timeout
    while not condition():
        if timer() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:g} s")
        time.sleep(interval)
