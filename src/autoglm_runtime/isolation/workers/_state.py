"""What a call does about its model's worker before sending itself: a pure decision on one look.

:meth:`WorkerProcess._ensure_running` looks at the worker (under its state lock: the process is polled and
a death recorded first), reduces what it saw to a :class:`WorkerView` -- a :class:`Phase` plus the restart
policy's numbers and the call's time left -- and asks :func:`decide` for the next :class:`Action`. It runs
that action and looks again, until the action serves the call or raises. Nothing here does I/O or reads a
clock: the table is tested in ``tests/isolation/workers/test_state.py``.

Promises of the decision:

* a closed worker, then a given-up one, wins over everything else;
* a call is only served by a worker that is ready, alive and past its handshake;
* a loading worker's handshake is awaited, never restarted over;
* a down worker is given up on once the restart policy is exhausted, restarted once its backoff passed,
  and otherwise waited for -- never longer than the call's time left, which then times out.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

__all__ = ["Action", "Heartbeat", "Phase", "Step", "WorkerView", "decide", "heartbeat_step", "phase_of"]


class Phase(enum.Enum):
    """Where a worker is, as far as a call is concerned."""

    CLOSED = "closed"  #: close() ran: the model must be loaded again
    FAILED = "failed"  #: given up on after too many failures in a row
    READY = "ready"  #: running, its handshake read: calls go to it
    LOADING = "loading"  #: running, its handshake not read yet
    DOWN = "down"  #: no usable process: it died, was stopped, or failed to load


@dataclass(frozen=True)
class WorkerView:
    """One look at a worker: its phase and what a restart depends on."""

    phase: Phase
    #: More failures in a row than the restart policy allows.
    exhausted: bool = False
    #: Seconds until the backoff after the last failure ends (zero or less: a restart may start now).
    backoff_left: float = 0.0
    #: Seconds until the call's deadline (``None``: the call waits for ever).
    time_left: float | None = None


class Step(enum.Enum):
    """What to do next."""

    SERVE = "serve"  #: send the call to the worker
    AWAIT_HELLO = "await_hello"  #: read the handshake (within the call's deadline) and serve; look again if it failed
    RESTART = "restart"  #: stop what is left of the process, spawn a new one, look again
    BACK_OFF = "back_off"  #: wait ``Action.wait`` s (a close() ends it early), look again
    TIME_OUT = "time_out"  #: wait ``Action.wait`` s (a close() ends it early), then fail the call: out of time
    GIVE_UP = "give_up"  #: mark the worker failed, stop it, fail the call
    RAISE_FAILED = "raise_failed"  #: fail the call: the worker was given up on earlier
    RAISE_CLOSED = "raise_closed"  #: fail the call: the worker was closed


@dataclass(frozen=True)
class Action:
    """A step, and for the waiting steps how long to wait (s)."""

    step: Step
    wait: float = 0.0


def phase_of(
    *,
    closing: bool,
    state: Literal["starting", "ready", "restarting", "dead", "failed"],
    awaiting_hello: bool,
    alive: bool,
) -> Phase:
    """The phase of a worker in public ``state`` whose process is ``alive`` (exists, not exited)."""
    if closing:
        return Phase.CLOSED
    if state == "failed":
        return Phase.FAILED
    if state == "ready" and not awaiting_hello and alive:
        return Phase.READY
    if awaiting_hello and alive:
        return Phase.LOADING
    return Phase.DOWN


def decide(view: WorkerView) -> Action:
    """The next step for a call that found its worker as ``view`` says."""
    if view.phase is Phase.CLOSED:
        return Action(Step.RAISE_CLOSED)
    if view.phase is Phase.FAILED:
        return Action(Step.RAISE_FAILED)
    if view.phase is Phase.READY:
        return Action(Step.SERVE)
    if view.phase is Phase.LOADING:
        return Action(Step.AWAIT_HELLO)
    if view.exhausted:
        return Action(Step.GIVE_UP)
    if view.backoff_left <= 0:
        return Action(Step.RESTART)
    if view.time_left is not None and view.time_left < view.backoff_left:
        return Action(Step.TIME_OUT, max(view.time_left, 0.0))
    return Action(Step.BACK_OFF, view.backoff_left)


class Heartbeat(enum.Enum):
    """What the heartbeat thread does about one ready worker."""

    WAIT = "wait"  #: nothing now
    PING = "ping"  #: send a ping
    HUNG = "hung"  #: a ping went unanswered too long: kill and restart the worker


def heartbeat_step(
    now: float, last_ping: float, unanswered_since: float | None, interval: float, timeout: float
) -> Heartbeat:
    """The heartbeat's next step: ``unanswered_since`` is when the oldest ping not answered yet was sent.

    A worker is hung once a ping stayed unanswered for ``timeout`` s; so one that stops answering is
    killed between ``timeout`` and ``timeout + interval`` s after its last answer (plus the thread's own
    tick, a quarter of ``interval``).
    """
    if unanswered_since is not None and now - unanswered_since >= timeout:
        return Heartbeat.HUNG
    if now - last_ping >= interval:
        return Heartbeat.PING
    return Heartbeat.WAIT
