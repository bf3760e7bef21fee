from __future__ import annotations

import random

from autoglm_runtime.config.cache import ConfigCache
from autoglm_runtime.config.reconciler import Reconciler

from .conftest import FakeClock, FixedRandom


def filled(clock: FakeClock, count: int, ttl: float = 30.0) -> ConfigCache:
    cache = ConfigCache(ttl=ttl, timer=clock, rng=FixedRandom(0.5))
    for i in range(count):
        cache.offer(f"k{i:03d}", i, b"", czxid=i + 1, mzxid=i + 1, seq=i + 1)
    return cache


def test_rereads_only_expired_entries(clock: FakeClock) -> None:
    cache = filled(clock, 5)
    batches: list[list[str]] = []

    def reread(keys: list[str]) -> int:
        batches.append(keys)
        for key in keys:
            cache.touch(key)
        return len(keys)

    reconciler = Reconciler(cache=cache, reread=reread, timer=clock, rate=1000, jitter=0)
    assert reconciler.run_once() == 0
    clock.advance(29.9)
    assert reconciler.run_once() == 0
    clock.advance(0.1)
    assert reconciler.run_once() == 5
    assert batches == [[f"k{i:03d}" for i in range(5)]]
    assert reconciler.run_once() == 0  # confirmed entries got a fresh deadline


def test_rate_limit_spreads_reads_over_time(clock: FakeClock) -> None:
    cache = filled(clock, 100)
    issued: list[int] = []

    def reread(keys: list[str]) -> int:
        for key in keys:
            cache.touch(key)
        issued.append(2 * len(keys))  # data and children for each key
        return 2 * len(keys)

    reconciler = Reconciler(cache=cache, reread=reread, timer=clock, rate=20, jitter=0, reads_per_key=2)
    clock.advance(31)
    total = 0
    for _ in range(10):  # ten seconds at 20 reads/s; the burst is one second's worth of reads, not of keys
        total += reconciler.run_once()
        clock.advance(1.0)
    assert issued == [20] * 10
    assert total == 100


def test_jitter_waits_a_random_delay_before_each_batch(clock: FakeClock) -> None:
    cache = filled(clock, 1)
    calls: list[list[str]] = []
    reconciler = Reconciler(
        cache=cache, reread=lambda keys: calls.append(keys) or 0, timer=clock, jitter=0.001, rng=random.Random(4)
    )
    clock.advance(31)
    assert reconciler.run_once() == 1
    assert calls == [["k000"]]
