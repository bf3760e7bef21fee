"""When a caller refused as overloaded (E0106) should come back: the ``Retry-After`` a pool sends.

A refused call would have waited behind every call in the queue, for a place (replicas serving times
``max_inflight``). Each call holds its place about ``t`` s: an exponentially weighted mean of how long recent calls
held one (streams: until the worker was done with them), which tracks a model whose calls grew slower; before any
call gave its place back (a queue filled at start-up by slow calls), the mean age of the calls holding one, which
each will hold at least that long. A call holding a place now has ``r = max(t - age, 0)`` s of it left (its age
counted from when it took the place); a place none holds, none. With those ``p`` remaining times sorted,
``r[0] <= ... <= r[p-1]``, the ``q`` queued calls take the places as they free up, each for ``t`` s, so the refused
call, the ``q+1``-th, would get one after::

    r[q mod p] + t * (q div p)

seconds: at once behind calls about to end, a whole ``t`` behind calls just started even with the queue shorter
than the places. The hint is whole seconds (``Retry-After`` takes no fraction), rounded up, never below the
loader's ``retry_after`` (also the hint before any call finished or held a place) and never above its
``max_retry_after`` (unless ``retry_after`` is higher): a client told to wait ten minutes would rather be told to
look again. Nor is it ever below 1 s, whatever ``retry_after`` (0 is allowed): ``Retry-After: 0`` tells a client
it may retry at once, which a model that just refused a call for want of room is not ready for (a call "about to
end" by the estimate is one past its typical time, which may well run on); an estimate under a second says "in
a second".

>>> retry_after(queued=7, places=2, held=3.0, ages=[0.0, 0.0], least=1.0, most=60.0)     # 3 + 3 * 3
12
>>> retry_after(queued=1, places=4, held=10.0, ages=[0.5] * 4, least=1.0, most=60.0)     # 9.5 left, queue or not
10
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

__all__ = ["HeldTime", "retry_after"]

#: The weight of the newest call in the mean: about the last ten calls count.
WEIGHT = 0.2


class HeldTime:
    """How long calls hold a place on a replica: :attr:`mean`, exponentially weighted (s; ``None`` until one gave
    its place back), and when each call holding one now took it. Not thread-safe: the pool uses it under its lock.

    >>> held = HeldTime()
    >>> first = held.take(now=100.0)
    >>> held.typical(now=104.0)        # none gave its place back yet: the age of those holding one
    4.0
    >>> held.ages(now=104.0)
    [4.0]
    >>> held.give(first, now=110.0)
    >>> held.typical(now=200.0)
    10.0
    """

    __slots__ = ("_holding", "_tokens", "mean")

    def __init__(self) -> None:
        self.mean: float | None = None
        self._holding: dict[int, float] = {}  # token -> when its call took its place
        self._tokens = itertools.count()

    def take(self, now: float) -> int:
        """A call took a place at ``now``; the token to :meth:`give` it back with."""
        token = next(self._tokens)
        self._holding[token] = now
        return token

    def give(self, token: int, now: float) -> None:
        """The call of ``token`` gave its place back at ``now``: its time counts in the mean."""
        self.add(now - self._holding.pop(token))

    def forget_holders(self) -> None:
        """(In a forked child) the calls holding places are the parent's: they never give them back here. The mean
        stays: what the parent saw of the model holds for the child's workers too."""
        self._holding = {}

    def add(self, seconds: float) -> None:
        """Count one call that held its place ``seconds``."""
        seconds = max(seconds, 0.0)  # (an injected clock may step back)
        self.mean = seconds if self.mean is None else self.mean + WEIGHT * (seconds - self.mean)

    def ages(self, now: float) -> list[float]:
        """How long (s) each call holding a place now has held it (never below 0: an injected clock may step back)."""
        return [max(now - taken, 0.0) for taken in self._holding.values()]

    def typical(self, now: float) -> float | None:
        """The time (s) a call holds its place: the mean, or before any gave it back the mean age of those holding one
        (``None`` when none does either)."""
        if self.mean is not None:
            return self.mean
        ages = self.ages(now)
        return sum(ages) / len(ages) if ages else None


def retry_after(
    *, queued: int, places: int, held: float | None, ages: Sequence[float], least: float, most: float
) -> int:
    """Whole seconds a refused caller should wait for a place behind ``queued`` calls: ``r[queued mod places] + held
    * (queued div places)`` rounded up, where ``r`` are the places' remaining times sorted (``max(held - age, 0)``
    for each of ``ages``, the calls holding one; 0 for a place none holds; the ``places`` shortest should more calls
    hold one), within ``[max(ceil(least), 1), floor(most)]`` (the low end alone while ``held`` is ``None``): never
    0, which would tell HTTP clients to retry at once."""
    low = max(math.ceil(least), 1)
    high = max(math.floor(most), low)
    if held is None or places <= 0:
        return low
    remaining = sorted(max(held - age, 0.0) for age in ages)[:places]
    remaining = [0.0] * (places - len(remaining)) + remaining
    rounds, place = divmod(queued, places)
    return min(max(math.ceil(remaining[place] + held * rounds), low), high)
