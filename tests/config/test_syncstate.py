"""The config sync decision, as tables and properties: no server, no kazoo, no thread."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoglm_runtime.config._syncstate import (
    Action,
    ApplyFetched,
    Backoff,
    Basis,
    CatchUp,
    CaughtUp,
    Confirm,
    Confirmed,
    Connected,
    CutShort,
    Dropped,
    Event,
    Failed,
    FullRead,
    FullSyncDone,
    MarkerArrived,
    Plan,
    Read,
    Rearm,
    Resync,
    ResyncRequested,
    RootMissing,
    SelfCheck,
    SyncState,
    Unread,
    Wake,
    decide,
)

LOADED = SyncState(basis=Basis.COMPLETE, generation=1, session=7)
OUTAGE = dataclasses.replace(LOADED, relative=100)
NONE: frozenset[str] = frozenset()


def fetched(*paths: str) -> tuple[Any, ...]:
    return tuple((SimpleNamespace(path=p), "pending") for p in paths)


# --- queue events ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "can_rearm", "due"),
    [
        (OUTAGE, True, Resync.REARM),
        (OUTAGE, False, Resync.FULL),  # the reader was downgraded: setWatches is off
        (LOADED, True, Resync.FULL),  # no zxid to re-arm from
        (dataclasses.replace(OUTAGE, basis=Basis.PARTIAL), True, Resync.FULL),  # a full read was cut short
        (dataclasses.replace(OUTAGE, basis=Basis.NOTHING), True, Resync.FULL),
        (SyncState(), True, Resync.FULL),  # the first connection loads
        (dataclasses.replace(OUTAGE, due=Resync.FULL), True, Resync.FULL),  # a due full read is kept
        (dataclasses.replace(OUTAGE, marker=True), True, Resync.REARM),
    ],
)
def test_connected(before: SyncState, can_rearm: bool, due: Resync) -> None:
    after, plan = decide(before, Connected(can_rearm))
    assert plan is None
    assert after == dataclasses.replace(before, due=due, generation=before.generation + 1, marker=False)


@pytest.mark.parametrize(
    ("relative", "zxid", "kept"),
    [(None, 100, 100), (100, 200, 100), (None, 0, None), (100, 0, 100)],
)
def test_dropped_keeps_the_first_zxid_of_an_outage(relative: int | None, zxid: int, kept: int | None) -> None:
    after, plan = decide(dataclasses.replace(LOADED, relative=relative), Dropped(zxid))
    assert (after, plan) == (dataclasses.replace(LOADED, relative=kept), None)


@pytest.mark.parametrize(("generation", "marker"), [(1, True), (0, False), (2, False)])
def test_a_marker_only_counts_for_its_own_connection(generation: int, marker: bool) -> None:
    assert decide(OUTAGE, MarkerArrived(generation)) == (dataclasses.replace(OUTAGE, marker=marker), None)


def test_a_marker_before_a_reconnect_in_the_same_wake_up_confirms_nothing() -> None:
    state = OUTAGE
    for event in (MarkerArrived(1), Dropped(150), Connected(can_rearm=True)):
        state, _ = decide(state, event)
    state, plan = decide(state, Wake(connected=True))
    assert plan == (CatchUp(full=False), Rearm(100, 2), Read(NONE, NONE))


def test_unread_and_resync_requested() -> None:
    state, plan = decide(dataclasses.replace(LOADED, retry=frozenset({"/r/a"})), Unread(frozenset({"/r/b"})))
    assert state.retry == {"/r/a", "/r/b"}
    assert plan is None
    assert decide(LOADED, ResyncRequested()) == (dataclasses.replace(LOADED, due=Resync.FULL), None)


# --- a wake-up's plan --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "wake", "plan", "after"),
    [
        pytest.param(
            dataclasses.replace(OUTAGE, due=Resync.REARM, marker=True, retry=frozenset({"/r/x"})),
            Wake(connected=False, data=frozenset({"/r/a"})),
            (),
            dataclasses.replace(OUTAGE, due=Resync.REARM, retry=frozenset({"/r/x"})),
            id="disconnected: nothing, the retries are kept",
        ),
        pytest.param(LOADED, Wake(connected=True), (), LOADED, id="fresh and idle"),
        pytest.param(
            LOADED,
            Wake(connected=True, self_checked=False),
            (SelfCheck(),),
            LOADED,
            id="the self-check comes first",
        ),
        pytest.param(
            SyncState(due=Resync.FULL, generation=1),
            Wake(connected=True, self_checked=False, data=frozenset({"/r/a"})),
            (SelfCheck(), CatchUp(full=True), FullRead(resync=False, session=None)),
            SyncState(generation=1),
            id="first load",
        ),
        pytest.param(
            dataclasses.replace(OUTAGE, due=Resync.FULL, marker=True),
            Wake(connected=True, fetched=fetched("/r/a"), children=frozenset({"/r"})),
            (CatchUp(full=True), FullRead(resync=True, session=7)),
            dataclasses.replace(OUTAGE, basis=Basis.PARTIAL),
            id="full resync: the full read replaces everything else",
        ),
        pytest.param(
            LOADED,
            Wake(connected=True, recheck_due=True),
            (CatchUp(full=True), FullRead(resync=True, session=7)),
            dataclasses.replace(LOADED, basis=Basis.PARTIAL),
            id="a due re-check of a lagging server reads everything",
        ),
        pytest.param(
            dataclasses.replace(OUTAGE, due=Resync.REARM),
            Wake(connected=True),
            (CatchUp(full=False), Rearm(100, 1), Read(NONE, NONE)),
            OUTAGE,
            id="re-arm: the read after it takes the unanswered watch events",
        ),
        pytest.param(
            dataclasses.replace(OUTAGE, marker=True, retry=frozenset({"/r/x"})),
            Wake(connected=True, fetched=fetched("/r/a"), data=frozenset({"/r/b"}), children=frozenset({"/r"})),
            (
                ApplyFetched(fetched("/r/a")),
                Read(frozenset({"/r/b", "/r/x"}), frozenset({"/r", "/r/x"})),
                Confirm(),
            ),
            OUTAGE,
            id="marker: fetched, reads with the retries, then confirm",
        ),
        pytest.param(
            dataclasses.replace(LOADED, retry=frozenset({"/r/x"})),
            Wake(connected=True),
            (Read(frozenset({"/r/x"}), frozenset({"/r/x"})),),
            LOADED,
            id="retries alone",
        ),
    ],
)
def test_wake(before: SyncState, wake: Wake, plan: Plan, after: SyncState) -> None:
    state, got = decide(before, wake)
    assert got == plan
    assert state == after


# --- outcomes ----------------------------------------------------------------------------------------


def test_caught_up() -> None:
    running = dataclasses.replace(OUTAGE, marker=False)
    assert decide(running, CaughtUp(regressed=False)) == (running, None)
    state, plan = decide(running, CaughtUp(regressed=True))
    assert plan == (FullRead(resync=True, session=7),)
    assert state == dataclasses.replace(running, basis=Basis.PARTIAL)


@pytest.mark.parametrize(("root_appeared", "due"), [(False, Resync.NONE), (True, Resync.FULL)])
def test_full_sync_done(root_appeared: bool, due: Resync) -> None:
    running = SyncState(basis=Basis.PARTIAL, relative=100, generation=3, retry=frozenset({"/r/a"}), failures=2)
    state, plan = decide(running, FullSyncDone(9, root_appeared=root_appeared))
    assert plan is None
    assert state == SyncState(basis=Basis.COMPLETE, due=due, generation=3, session=9)
    assert state.fresh is (not root_appeared)


def test_root_missing_and_confirmed() -> None:
    assert decide(OUTAGE, RootMissing()) == (dataclasses.replace(OUTAGE, due=Resync.FULL), None)
    assert decide(OUTAGE, Confirmed()) == (LOADED, None)
    assert decide(OUTAGE, Confirmed())[0].fresh


@pytest.mark.parametrize(
    ("before", "can_rearm", "due"),
    [
        (OUTAGE, True, Resync.REARM),  # a timeout during a re-arm: re-arm again from here
        (OUTAGE, False, Resync.FULL),
        (LOADED, True, Resync.NONE),  # a timeout while following: only the lost reads are retried
        (dataclasses.replace(LOADED, due=Resync.FULL), True, Resync.FULL),
        (dataclasses.replace(OUTAGE, basis=Basis.PARTIAL), True, Resync.FULL),
        (SyncState(), True, Resync.FULL),
    ],
)
def test_cut_short(before: SyncState, can_rearm: bool, due: Resync) -> None:
    unstarted: tuple[Action, ...] = (
        ApplyFetched(fetched("/r/f")),
        Read(frozenset({"/r/d"}), frozenset({"/r/c"})),
        Confirm(),
    )
    state, plan = decide(before, CutShort(frozenset({"/r/lost"}), can_rearm, unstarted))
    assert plan == ()
    assert state == dataclasses.replace(before, due=due, retry=frozenset({"/r/lost", "/r/f", "/r/d", "/r/c"}))


def test_failures_back_off_exponentially_up_to_30_s_and_read_everything() -> None:
    state, delays = LOADED, []
    for _ in range(9):
        state, plan = decide(state, Failed())
        assert state.due is Resync.FULL
        assert plan is not None
        [backoff] = plan
        assert isinstance(backoff, Backoff)
        delays.append(backoff.delay)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert state.failures == 9
    state, _ = decide(state, Wake(connected=True))
    state, _ = decide(state, FullSyncDone(7))
    assert state.failures == 0


# --- properties over whole runs ----------------------------------------------------------------------

PATHS = st.sampled_from(["/r", "/r/a", "/r/b", "/r/a/x"])
PATH_SETS = st.frozensets(PATHS, max_size=3)


def outcome(data: st.DataObject, action: Action, state: SyncState) -> tuple[Event | None, bool]:
    """A possible outcome of ``action`` (and whether the action completed), as the executor reports it."""
    trouble = data.draw(st.sampled_from(["ok", "ok", "ok", "cut", "fail"]))
    if trouble == "cut":
        return CutShort(data.draw(PATH_SETS), data.draw(st.booleans())), False
    if trouble == "fail":
        return Failed(), False
    if isinstance(action, CatchUp):
        return CaughtUp(regressed=data.draw(st.booleans())), True
    if isinstance(action, FullRead):
        return FullSyncDone(data.draw(st.sampled_from([1, 2])), root_appeared=data.draw(st.booleans())), True
    if isinstance(action, ApplyFetched | Read):
        return (RootMissing() if data.draw(st.booleans()) else None), True
    if isinstance(action, Confirm):
        return Confirmed(), True
    return None, True


def planned_reads(todo: list[Action]) -> frozenset[str]:
    return frozenset().union(*(a.data & a.children for a in todo if isinstance(a, Read)))


def check_invariants(state: SyncState) -> None:
    if state.due is Resync.REARM:
        assert state.relative is not None
        assert state.basis is Basis.COMPLETE
    if state.fresh:
        assert state.failures == 0


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_new_connection_is_never_fresh_before_a_full_read_or_a_confirmed_rearm(data: st.DataObject) -> None:
    """Drive the decision as the sync thread does, with random events and outcomes; after every step:
    a new connection is followed by a completed full read, or by a re-arm whose marker came back on that
    connection, before the cache counts as fresh; a lost read stays owed until a read or a full read takes it; and the
    structural invariants hold."""
    state = SyncState()
    rearmed: set[int] = set()  # connections whose re-arm was sent
    resynced = True  # since the last connection: a full read completed or a re-arm was confirmed
    owed: set[str] = set()  # paths a cut-short read must read again
    marker_of = -1  # the connection of the last marker that came back
    for _ in range(data.draw(st.integers(1, 40))):
        events: list[Event] = []
        for kind in data.draw(st.lists(st.sampled_from(["connect", "drop", "marker", "unread", "resync"]), max_size=3)):
            if kind == "connect":
                events.append(Connected(can_rearm=data.draw(st.booleans())))
            elif kind == "drop":
                events.append(Dropped(data.draw(st.sampled_from([0, 100, 200]))))
            elif kind == "marker" and rearmed:
                events.append(MarkerArrived(data.draw(st.sampled_from(sorted(rearmed)))))
            elif kind == "unread":
                events.append(Unread(data.draw(PATH_SETS)))
            elif kind == "resync":
                events.append(ResyncRequested())
        events.append(
            Wake(
                connected=data.draw(st.booleans()),
                recheck_due=data.draw(st.booleans()),
                self_checked=data.draw(st.booleans()),
                fetched=fetched(*data.draw(st.lists(PATHS, max_size=2))),
                data=data.draw(PATH_SETS),
                children=data.draw(PATH_SETS),
            )
        )
        plan: Plan = ()
        for queued in events:
            state, replaced = decide(state, queued)
            if isinstance(queued, Connected):
                resynced = False
            if isinstance(queued, MarkerArrived):
                marker_of = queued.generation
            if replaced is not None:
                plan = replaced
        todo = list(plan)
        while todo:
            action = todo.pop(0)
            assert not isinstance(action, FullRead | Backoff) or not todo, "nothing runs after a full read"
            if isinstance(action, Rearm):
                assert action.relative == state.relative or state.relative is None
                assert any(isinstance(a, Read) for a in todo), "a re-arm is followed by a read"
            if isinstance(action, Read):
                owed -= action.data & action.children
            event, done = outcome(data, action, state)
            if isinstance(action, Rearm) and done:
                rearmed.add(action.generation)
            if isinstance(event, FullSyncDone):
                resynced, owed = True, set()
            if isinstance(event, Confirmed):
                resynced = resynced or marker_of == state.generation
            if isinstance(event, CutShort):
                owed |= event.lost
                event = CutShort(event.lost, event.can_rearm, tuple(todo))
                for left in todo:
                    if isinstance(left, Read):
                        owed |= left.data & left.children
            if event is not None:
                state, replaced = decide(state, event)
                if replaced is not None:
                    todo = list(replaced)
            check_invariants(state)
            if state.due is Resync.FULL or any(isinstance(a, FullRead) for a in todo):
                owed.clear()  # a full read is owed instead: it reads everything, and a cut one stays due
            assert owed <= state.retry | planned_reads(todo)
            assert resynced or not state.fresh
        check_invariants(state)
        assert owed <= state.retry
        assert resynced or not state.fresh
