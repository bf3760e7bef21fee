"""When a caller refused as overloaded (E0106) should come back: the ``Retry-After`` a pool sends.

A refused call would have waited behind every call in the queue. The queue moves ``places`` calls (replicas serving
times ``max_inflight``) per call's time on a replica, so the wait for a place is about that time times
``(queued + 1) / places``. The time is an exponentially weighted mean of how long recent calls held their place
(streams: until the worker was done with them), which tracks a model whose calls grew slower. The hint is whole
seconds (``Retry-After`` takes no fraction), never below the loader's ``retry_after`` (also the hint before any call
finished) and never above its ``max_retry_after`` (unless ``retry_after`` is higher): a client told to wait ten
minutes would rather be told to look again.

>>> retry_after(queued=7, places=2, held=3.0, least=1.0, most=60.0)
12
"""

from __future__ import annotations

import math

__all__ = ["HeldTime", "retry_after"]

#: The weight of the newest call in the mean: about the last ten calls count.
WEIGHT = 0.2


class HeldTime:
    """The exponentially weighted mean time (s) calls held a place on a replica; ``None`` until one gave it back.
    Not thread-safe: the pool updates it under its lock."""

    __slots__ = ("mean",)

    def __init__(self) -> None:
        self.mean: float | None = None

    def add(self, seconds: float) -> None:
        """Count one call that held its place ``seconds``."""
        seconds = max(seconds, 0.0)  # (an injected clock may step back)
        self.mean = seconds if self.mean is None else self.mean + WEIGHT * (seconds - self.mean)


def retry_after(*, queued: int, places: int, held: float | None, least: float, most: float) -> int:
    """Whole seconds a refused caller should wait: ``held * (queued + 1) / places`` rounded up, within
    ``[ceil(least), floor(most)]`` (``least`` alone while ``held`` is ``None``)."""
    low = math.ceil(least)
    high = max(math.floor(most), low)
    if held is None or places <= 0:
        return low
    return min(max(math.ceil(held * (queued + 1) / places), low), high)
