"""What the config sync thread does next: a pure decision on an explicit state.

The sync thread (:mod:`._sync`) collects events -- connection changes from kazoo's connection thread,
setWatches markers, re-reads the reconciler could not finish, and, once per wake-up, a :class:`Wake` with
what the watches asked for -- and feeds them, one at a time, to :func:`decide`. Each answer is the new
:class:`SyncState` and, where the event changes what to do, the plan: a tuple of actions that replaces
whatever was left of the previous one. Executing an action yields an outcome event (:class:`CaughtUp`,
:class:`FullSyncDone`, :class:`RootMissing`, :class:`Confirmed`, :class:`CutShort`, :class:`Failed`)
that goes through :func:`decide` the same way. Nothing here does I/O or reads a clock.

The promises the decision keeps (tested in ``tests/config/test_syncstate.py``):

* every new connection leads to a full read or a watch-relative re-arm (``setWatches`` from the last
  zxid seen before the drop) before the cache counts as :attr:`SyncState.fresh` again;
* a re-arm is only planned on top of a complete load made since the last interrupted full read, and with
  a zxid to re-arm from; anything else reads the whole tree;
* a read a connection loss cut short is done again later (``retry``), including reads of the plan that
  never started;
* an unexpected failure always leads to a full read after a backoff of 0.5, 1, 2 ... 30 s.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Action", "Basis", "Event", "Plan", "Resync", "SyncState", "decide"]


class Resync(enum.IntEnum):
    """The resync that is due; a larger one includes a smaller one."""

    NONE = 0
    REARM = 1  #: setWatches relative to the last zxid seen before the drop, re-read only what fired
    FULL = 2  #: read the whole tree again and diff it against the cache


class Basis(enum.Enum):
    """What the cache rests on."""

    NOTHING = "nothing"  #: nothing was loaded yet
    PARTIAL = "partial"  #: loaded once, but a full read started since did not complete
    COMPLETE = "complete"  #: the last full read completed: watches can be re-armed relative to a zxid


@dataclass(frozen=True)
class SyncState:
    """Everything the sync thread decides on."""

    basis: Basis = Basis.NOTHING
    due: Resync = Resync.NONE
    #: The last zxid seen before the connection dropped, until the resync after that drop completed.
    relative: int | None = None
    #: Connections so far: a setWatches marker confirms the re-arm of its own connection only.
    generation: int = 0
    #: The marker of this connection's re-arm arrived: its firings were all handled, confirm the resync.
    marker: bool = False
    #: Paths whose reads a connection loss interrupted (kept across drops).
    retry: frozenset[str] = frozenset()
    #: Unexpected failures in a row (exponential backoff).
    failures: int = 0
    #: The session of the last complete load (to tell a session expiry from a reconnect in the log).
    session: int | None = None

    @property
    def fresh(self) -> bool:
        """The cache follows the tree: loaded completely, no resync due or running (drift is real drift)."""
        return self.basis is Basis.COMPLETE and self.due is Resync.NONE and self.relative is None


# --- events ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Connected:
    """kazoo reported CONNECTED; ``can_rearm``: the reader may use setWatches."""

    can_rearm: bool


@dataclass(frozen=True)
class Dropped:
    """kazoo reported SUSPENDED or LOST; ``zxid`` is the last one it had seen (0: none)."""

    zxid: int


@dataclass(frozen=True)
class MarkerArrived:
    """The marker sent after the setWatches of connection ``generation`` came through the callback queue."""

    generation: int


@dataclass(frozen=True)
class Unread:
    """Paths the reconciler found leading to more reads, or that must be read again."""

    paths: frozenset[str]


@dataclass(frozen=True)
class ResyncRequested:
    """Read the whole tree again and diff it against the cache (as after an interrupted load)."""


@dataclass(frozen=True)
class Wake:
    """The end of one wake-up's events: what the connection looks like and what the watches asked for.

    ``fetched`` are reads kazoo's callback thread already issued (opaque here), ``data``/``children`` paths
    whose value or child list must be read again.
    """

    connected: bool
    recheck_due: bool = False
    self_checked: bool = True
    fetched: tuple[Any, ...] = ()
    data: frozenset[str] = frozenset()
    children: frozenset[str] = frozenset()


@dataclass(frozen=True)
class CaughtUp:
    """The zxid check after a new session (or a due re-check) finished; ``regressed``: the ensemble's zxids
    went backwards and the cache forgot its versions."""

    regressed: bool


@dataclass(frozen=True)
class FullSyncDone:
    """A full read completed in ``session``; ``root_appeared``: the root was missing, then created meanwhile."""

    session: int | None
    root_appeared: bool = False


@dataclass(frozen=True)
class RootMissing:
    """A read found the root gone."""


@dataclass(frozen=True)
class Confirmed:
    """The re-arm's resync was confirmed: the outage is over."""


@dataclass(frozen=True)
class CutShort:
    """A read or request was cut short by a drop or a timeout.

    ``lost``: paths whose reads did not complete; ``unstarted``: what was left of the plan;
    ``can_rearm``: the reader may (still) use setWatches.
    """

    lost: frozenset[str]
    can_rearm: bool
    unstarted: tuple[Action, ...] = ()


@dataclass(frozen=True)
class Failed:
    """An action failed unexpectedly (a bug, or an answer nobody expected)."""


Event = (
    Connected
    | Dropped
    | MarkerArrived
    | Unread
    | ResyncRequested
    | Wake
    | CaughtUp
    | FullSyncDone
    | RootMissing
    | Confirmed
    | CutShort
    | Failed
)

# --- actions -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SelfCheck:
    """Verify, once, the kazoo internals bulk reads and re-arming rely on."""


@dataclass(frozen=True)
class CatchUp:
    """On a new session, ``sync`` and compare zxids; ``full``: a full read is due (a re-check may be owed)."""

    full: bool


@dataclass(frozen=True)
class FullRead:
    """Read the whole tree, apply it in one batch, drop what it no longer has.

    ``resync``: something was loaded before; ``session``: the session of that load.
    """

    resync: bool
    session: int | None


@dataclass(frozen=True)
class Rearm:
    """setWatches relative to zxid ``relative`` on every known path, then a marker for ``generation``.

    The paths whose watch events were never answered are read with the :class:`Read` that follows.
    """

    relative: int
    generation: int


@dataclass(frozen=True)
class ApplyFetched:
    """Finish and apply the reads kazoo's callback thread issued, in order."""

    fetched: tuple[Any, ...]

    def paths(self) -> frozenset[str]:
        return frozenset(result.path for result, _ in self.fetched)


@dataclass(frozen=True)
class Read:
    """Read the values of ``data`` and the child lists of ``children``, and what they lead to."""

    data: frozenset[str]
    children: frozenset[str]


@dataclass(frozen=True)
class Confirm:
    """The re-arm is complete: touch every entry, mark the cache synced, log the resync."""


@dataclass(frozen=True)
class Backoff:
    """Report the ``failures``-th failure in a row, mark the cache stale and wait ``delay`` s."""

    delay: float
    failures: int


Action = SelfCheck | CatchUp | FullRead | Rearm | ApplyFetched | Read | Confirm | Backoff
Plan = tuple[Action, ...]


# --- the decision ------------------------------------------------------------------------------------


def decide(state: SyncState, event: Event) -> tuple[SyncState, Plan | None]:
    """The new state, and the plan that replaces what is left of the current one (``None``: keep it)."""
    return _RULES[type(event)](state, event)


def _connected(state: SyncState, event: Connected) -> tuple[SyncState, Plan | None]:
    rearm = state.basis is Basis.COMPLETE and event.can_rearm and state.relative is not None
    due = max(state.due, Resync.REARM if rearm else Resync.FULL)
    # A marker of an earlier connection confirms nothing about this one.
    return dataclasses.replace(state, generation=state.generation + 1, due=due, marker=False), None


def _dropped(state: SyncState, event: Dropped) -> tuple[SyncState, Plan | None]:
    # Keep the first zxid of an outage: kazoo forgets it when it resets a lost session.
    if event.zxid and state.relative is None:
        return dataclasses.replace(state, relative=event.zxid), None
    return state, None


def _marker(state: SyncState, event: MarkerArrived) -> tuple[SyncState, Plan | None]:
    if event.generation == state.generation:
        return dataclasses.replace(state, marker=True), None
    return state, None


def _unread(state: SyncState, event: Unread) -> tuple[SyncState, Plan | None]:
    return dataclasses.replace(state, retry=state.retry | event.paths), None


def _resync_requested(state: SyncState, event: ResyncRequested) -> tuple[SyncState, Plan | None]:
    return dataclasses.replace(state, due=Resync.FULL), None


def _full(state: SyncState) -> tuple[SyncState, FullRead]:
    """Start a full read: until it completes the cache rests on no complete load."""
    read = FullRead(resync=state.basis is not Basis.NOTHING, session=state.session)
    basis = Basis.PARTIAL if state.basis is Basis.COMPLETE else state.basis
    return dataclasses.replace(state, due=Resync.NONE, basis=basis, marker=False), read


def _wake(state: SyncState, event: Wake) -> tuple[SyncState, Plan | None]:
    if not event.connected:
        # What the watches asked for is answered by the resync that follows the reconnect.
        return dataclasses.replace(state, marker=False), ()
    if event.recheck_due:
        state = dataclasses.replace(state, due=Resync.FULL)
    plan: list[Action] = [] if event.self_checked else [SelfCheck()]
    if state.due is not Resync.NONE:
        plan.append(CatchUp(full=state.due is Resync.FULL))
    if state.due is Resync.FULL:
        state, read = _full(state)
        return state, (*plan, read)
    rearm = state.due is Resync.REARM
    if rearm:
        assert state.relative is not None  # REARM is only ever due with a zxid to re-arm from
        plan.append(Rearm(state.relative, state.generation))
    if event.fetched:
        plan.append(ApplyFetched(event.fetched))
    data, children = event.data | state.retry, event.children | state.retry
    if data or children or rearm:
        plan.append(Read(data, children))
    if state.marker:
        plan.append(Confirm())
    return dataclasses.replace(state, due=Resync.NONE, retry=frozenset(), marker=False), tuple(plan)


def _caught_up(state: SyncState, event: CaughtUp) -> tuple[SyncState, Plan | None]:
    if not event.regressed:
        return state, None
    state, read = _full(state)
    return state, (read,)


def _full_sync_done(state: SyncState, event: FullSyncDone) -> tuple[SyncState, Plan | None]:
    return (
        SyncState(
            basis=Basis.COMPLETE,
            due=Resync.FULL if event.root_appeared else Resync.NONE,
            generation=state.generation,
            session=event.session,
        ),
        None,
    )


def _root_missing(state: SyncState, event: RootMissing) -> tuple[SyncState, Plan | None]:
    return dataclasses.replace(state, due=Resync.FULL), None


def _confirmed(state: SyncState, event: Confirmed) -> tuple[SyncState, Plan | None]:
    return dataclasses.replace(state, relative=None), None


def _cut_short(state: SyncState, event: CutShort) -> tuple[SyncState, Plan | None]:
    lost = set(event.lost)
    for action in event.unstarted:
        if isinstance(action, Read):
            lost |= action.data | action.children
        elif isinstance(action, ApplyFetched):
            lost |= action.paths()
    due = state.due
    if state.basis is not Basis.COMPLETE or not event.can_rearm:
        due = Resync.FULL
    elif state.relative is not None:
        # A drop brings a CONNECTED that decides again; a timeout without a drop re-arms from here.
        due = max(due, Resync.REARM)
    return dataclasses.replace(state, due=due, retry=state.retry | lost), ()


def _failed(state: SyncState, event: Failed) -> tuple[SyncState, Plan | None]:
    failures = state.failures + 1
    delay = min(30.0, 0.5 * 2 ** (failures - 1))
    return dataclasses.replace(state, due=Resync.FULL, failures=failures), (Backoff(delay, failures),)


_RULES: dict[type, Callable[[SyncState, Any], tuple[SyncState, Plan | None]]] = {
    Connected: _connected,
    Dropped: _dropped,
    MarkerArrived: _marker,
    Unread: _unread,
    ResyncRequested: _resync_requested,
    Wake: _wake,
    CaughtUp: _caught_up,
    FullSyncDone: _full_sync_done,
    RootMissing: _root_missing,
    Confirmed: _confirmed,
    CutShort: _cut_short,
    Failed: _failed,
}
