from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoglm_runtime.config.cache import ConfigCache
from autoglm_runtime.config.dispatcher import ConfigChange

from .conftest import FakeClock, FixedRandom


def make(clock: FakeClock, ttl: float = 30.0, fraction: float = 0.5) -> tuple[ConfigCache, list[ConfigChange]]:
    events: list[ConfigChange] = []
    return ConfigCache(ttl=ttl, timer=clock, publish=events.append, rng=FixedRandom(fraction)), events


def test_newer_version_wins_and_older_is_ignored(clock: FakeClock) -> None:
    cache, events = make(clock)
    assert cache.offer("a", 1, b"1", czxid=10, mzxid=10, seq=1) == ConfigChange("a", "added", None, 1, 10)
    assert cache.offer("a", 2, b"2", czxid=10, mzxid=12, seq=2) == ConfigChange("a", "updated", 1, 2, 12)
    assert cache.offer("a", 0, b"0", czxid=10, mzxid=11, seq=3) is None
    assert cache.get("a") == 2
    assert events == [ConfigChange("a", "added", None, 1, 10), ConfigChange("a", "updated", 1, 2, 12)]


def test_delete_and_recreate_is_a_newer_version_even_with_version_counter_reset(clock: FakeClock) -> None:
    # CURATOR-391: the znode "version" restarts at 0 on recreation; czxid/mzxid only grow.
    cache, _ = make(clock)
    cache.offer("a", "old", b'"old"', czxid=5, mzxid=9, seq=1)
    change = cache.offer("a", "new", b'"new"', czxid=20, mzxid=20, seq=2)
    assert change == ConfigChange("a", "updated", "old", "new", 20)
    assert cache.entry("a") is not None
    assert cache.entry("a").version == (20, 20)  # type: ignore[union-attr]


def test_read_issued_before_a_delete_cannot_bring_the_key_back(clock: FakeClock) -> None:
    cache, _ = make(clock)
    cache.offer("a", 1, b"1", czxid=5, mzxid=5, seq=1)
    assert cache.remove("a", seq=10) == ConfigChange("a", "deleted", 1, None, 5)
    # answered after the delete, issued before it (kazoo TreeCache #645 brings it back as "added")
    assert cache.offer("a", 2, b"2", czxid=5, mzxid=7, seq=9) is None
    assert "a" not in cache.snapshot()
    # a genuinely new incarnation read later is applied
    assert cache.offer("a", 3, b"3", czxid=30, mzxid=30, seq=11) == ConfigChange("a", "added", None, 3, 30)


def test_delete_observed_by_an_older_read_is_ignored(clock: FakeClock) -> None:
    cache, _ = make(clock)
    cache.offer("a", 1, b"1", czxid=5, mzxid=5, seq=8)
    assert cache.remove("a", seq=7) is None
    assert cache.get("a") == 1


def test_snapshot_is_immutable_and_consistent(clock: FakeClock) -> None:
    cache, _ = make(clock)
    with cache.batch():
        cache.offer("a", 1, b"1", czxid=1, mzxid=1, seq=1)
        cache.offer("b", 2, b"2", czxid=2, mzxid=2, seq=2)
    view = cache.snapshot()
    cache.offer("a", 5, b"5", czxid=1, mzxid=3, seq=3)
    assert dict(view) == {"a": 1, "b": 2}
    assert dict(cache.snapshot()) == {"a": 5, "b": 2}
    with pytest.raises(TypeError):
        view["a"] = 3  # type: ignore[index]


def test_ttl_deadlines_follow_the_injected_clock(clock: FakeClock) -> None:
    cache, _ = make(clock, ttl=30.0)
    cache.offer("a", 1, b"1", czxid=1, mzxid=1, seq=1)
    clock.advance(10)
    cache.offer("b", 1, b"1", czxid=2, mzxid=2, seq=2)
    assert cache.deadline("a") == 1030.0
    assert cache.expired(limit=10) == []
    clock.advance(20)
    assert cache.expired(limit=10) == ["a"]
    clock.advance(10)
    assert cache.expired(limit=10) == ["a", "b"]
    assert cache.expired(limit=1) == ["a"]
    # confirming "a" by a later read of the same version moves its deadline
    assert cache.known("a", 1, 1, seq=3)
    assert cache.expired(limit=10) == ["b"]
    assert cache.deadline("a") == 1070.0


def test_deadlines_are_jittered_per_entry_within_ten_percent(clock: FakeClock) -> None:
    low, _ = make(clock, ttl=100.0, fraction=0.0)
    high, _ = make(clock, ttl=100.0, fraction=1.0)
    for cache in (low, high):
        cache.offer("a", 1, b"1", czxid=1, mzxid=1, seq=1)
    assert low.deadline("a") == 1090.0
    assert high.deadline("a") == 1110.0
    clock.advance(95)
    assert low.expired(limit=10) == ["a"]
    assert high.expired(limit=10) == []


def test_touch_all_refreshes_every_deadline(clock: FakeClock) -> None:
    cache, _ = make(clock)
    cache.offer("a", 1, b"1", czxid=1, mzxid=1, seq=1)
    cache.offer("b", 1, b"1", czxid=2, mzxid=2, seq=2)
    cache.touch("")
    clock.advance(31)
    assert sorted(cache.expired(limit=10)) == ["", "a", "b"]
    cache.touch_all()
    assert cache.expired(limit=10) == []
    assert cache.deadline("a") == cache.deadline("") == 1061.0


def test_snapshot_entries_lose_to_any_zookeeper_read(clock: FakeClock) -> None:
    """A snapshot from an ensemble with larger zxids must not hide what the current ensemble says."""
    cache, _ = make(clock)
    high = (5 << 32) | 100
    cache.offer("model", "old", b'"old"', czxid=high, mzxid=high, seq=0)
    cache.offer("gone", 1, b"1", czxid=high, mzxid=high, seq=0)
    assert cache.max_mzxid == 0
    assert not cache.known("model", 7, 9, seq=1)
    change = cache.offer("model", "new", b'"new"', czxid=7, mzxid=9, seq=1)
    assert change == ConfigChange("model", "updated", "old", "new", 9)
    assert cache.offer("model", "older", b'"older"', czxid=7, mzxid=8, seq=2) is None
    assert cache.max_mzxid == 9
    cache.remove("gone", seq=3)
    assert cache.offer("gone", 2, b"2", czxid=10, mzxid=10, seq=4) == ConfigChange("gone", "added", None, 2, 10)


def test_snapshot_entry_confirmed_by_zookeeper_gives_no_event(clock: FakeClock) -> None:
    cache, events = make(clock)
    cache.offer("a", 1, b"1", czxid=3, mzxid=4, seq=0)
    events.clear()
    assert cache.offer("a", 1, b"1", czxid=3, mzxid=4, seq=1) is None
    assert events == []
    assert cache.entry("a").seq == 1  # type: ignore[union-attr]
    assert cache.offer("a", 0, b"0", czxid=3, mzxid=2, seq=2) is None


def test_forget_versions_lets_a_regressed_ensemble_win(clock: FakeClock) -> None:
    cache, _ = make(clock)
    cache.offer("a", 1, b"1", czxid=500, mzxid=600, seq=1)
    cache.offer("b", 1, b"1", czxid=501, mzxid=501, seq=2)
    cache.remove("b", seq=3)
    assert cache.max_mzxid == 600
    cache.forget_versions()
    assert cache.max_mzxid == 0
    assert cache.offer("a", 2, b"2", czxid=5, mzxid=6, seq=4) == ConfigChange("a", "updated", 1, 2, 6)
    assert cache.offer("b", 3, b"3", czxid=7, mzxid=7, seq=5) == ConfigChange("b", "added", None, 3, 7)


def test_rejected_version_is_known_until_a_newer_one_arrives(clock: FakeClock) -> None:
    cache, _ = make(clock)
    cache.offer("a", 1, b"1", czxid=1, mzxid=1, seq=1)
    cache.reject("a", 1, 4)
    assert cache.known("a", 1, 4, seq=2)
    assert not cache.known("a", 1, 5, seq=3)
    assert cache.get("a") == 1


ops = st.lists(
    st.tuples(st.sampled_from("abc"), st.booleans(), st.integers(0, 4), st.integers(0, 40)),
    max_size=60,
)


@given(ops)
def test_listeners_never_see_a_key_go_back(sequence: list[tuple[str, bool, int, int]]) -> None:
    """Whatever order reads are answered in, per key the versions delivered only grow."""
    clock = FakeClock()
    cache, events = make(clock)
    for seq, (key, delete, generation, bump) in enumerate(sequence, start=1):
        czxid = generation * 100 + 1
        if delete:
            cache.remove(key, seq=seq)
        else:
            cache.offer(key, (czxid, czxid + bump), b"x", czxid=czxid, mzxid=czxid + bump, seq=seq)
    last: dict[str, tuple[int, int]] = defaultdict(lambda: (-1, -1))
    for event in events:
        if event.kind != "deleted":
            version = event.new
            assert version > last[event.key]
            last[event.key] = version
    for key, value in cache.snapshot().items():
        assert cache.entry(key).version == value  # type: ignore[union-attr]


@st.composite
def reordered_reads(draw: st.DrawFn) -> tuple[list[tuple[str, tuple[int, int] | None, int]], list[int]]:
    """A true history of two keys, reads of it issued at random moments, and a random delivery order.

    Returns ``(reads, order)``: each read is ``(key, (czxid, mzxid) or None if absent, seq)`` in issue order.
    """
    zxid = 0
    state: dict[str, tuple[int, int] | None] = {"a": None, "b": None}
    reads: list[tuple[str, tuple[int, int] | None, int]] = []
    for _ in range(draw(st.integers(1, 25))):
        key = draw(st.sampled_from("ab"))
        if draw(st.booleans()):
            reads.append((key, state[key], len(reads) + 1))  # a read issued now sees the state now
            continue
        zxid += 1
        current = state[key]
        if current is None:
            state[key] = (zxid, zxid)  # created
        elif draw(st.booleans()):
            state[key] = (current[0], zxid)  # updated
        else:
            state[key] = None  # deleted
    order = draw(st.permutations(range(len(reads))))
    return reads, list(order)


@given(reordered_reads())
def test_reads_answered_in_any_order_never_go_back_and_converge(
    case: tuple[list[tuple[str, tuple[int, int] | None, int]], list[int]],
) -> None:
    """Reads of one history delivered in any order: per key the versions listeners see only grow, and the
    cache ends as the latest-issued read of each key saw it."""
    reads, order = case
    cache, events = make(FakeClock())
    for index in order:
        key, version, seq = reads[index]
        if version is None:
            cache.remove(key, seq=seq)
        else:
            cache.offer(key, version, b"x", czxid=version[0], mzxid=version[1], seq=seq)
    last: dict[str, tuple[int, int]] = defaultdict(lambda: (-1, -1))
    for event in events:
        if event.kind != "deleted":
            assert event.new > last[event.key]
            last[event.key] = event.new
    latest = {key: version for key, version, _ in reads}  # issue order: the last one wins
    assert dict(cache.snapshot()) == {k: v for k, v in latest.items() if v is not None}
