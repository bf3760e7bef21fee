"""Streams whose consumer stopped reading: closed once a chunk waited ``unread_timeout`` s unread, their replica
given back -- and their worker killed and restarted should the model's current step not return soon after (the
worker can close the generator only between two steps)."""

from __future__ import annotations

import contextvars
import functools
import logging
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from autoglm_runtime.errors import ModelTimeoutError
from autoglm_runtime.isolation.workers._calls import watch

if TYPE_CHECKING:
    from autoglm_runtime.isolation.workers.streams import _StreamState

__all__ = ["UnreadWatch", "give_up"]

_log = logging.getLogger("autoglm_runtime.isolation.workers.process")


class UnreadWatch:
    """Gives a stream up once a chunk waited unread for ``unread`` s: looked at every ``unread`` s on the watch thread
    (no cost per chunk), it closes the stream when a chunk waited at both of two looks and none was taken between.
    It holds the stream only weakly: a stream dropped meanwhile is closed by its ``__del__``."""

    context: contextvars.Context | None = None  # (no call's: what it logs names the stream's method)

    def __init__(self, state: _StreamState, queued: Callable[[], int], unread: float) -> None:
        self.method = state.method
        self._state = weakref.ref(state)
        self._queued = weakref.WeakMethod(queued)
        self._unread = unread
        self._seen = -1  # chunks taken at the last look, if a chunk waited then; -1 if none did
        watch(time.monotonic() + unread, self)

    def late(self) -> None:
        state, queued = self._state(), self._queued()
        if state is None or queued is None or state.finished or not state.holding:
            return  # gone, closed, or ended by the worker: its place is back already
        waiting = queued() > 0
        if waiting and state.consumed == self._seen:
            give_up(state, self._unread)
            return
        self._seen = state.consumed if waiting else -1
        watch(time.monotonic() + self._unread, self)


def give_up(state: _StreamState, unread: float) -> None:
    """(On the watch thread) the consumer left a chunk unread for ``unread`` s: close the stream (the worker closes the
    generator and the place goes back, as on ``close()``); the consumer's next read raises E0305.

    The worker can close the generator only once the model's current step returns: should it not return within
    ``unread`` s (or the stream's idle timeout, if shorter), the worker is killed and restarted, as for a late call --
    with no timeout, nothing else would ever give the replica back."""
    name = state.worker.spec.name
    error = ModelTimeoutError(
        f"the stream of {state.method}() on model '{name}' was closed after a chunk waited {unread:g} s without its "
        "consumer reading it (unread_timeout): its worker closed the generator and serves other calls; read a "
        "stream steadily or close it, or raise unread_timeout"
    )
    within = unread if state.timeout is None else min(state.timeout, unread)
    if state.finish(cancel=True, error=error, within=within, on_late=functools.partial(_kill, state, within)):
        _log.warning(
            "model %s: a chunk of the stream of %s() waited %g s unread; closed the stream",
            name,
            state.method,
            unread,
            extra={"error_code": ModelTimeoutError.code, "model": name},
        )


def _kill(state: _StreamState, within: float) -> None:
    """(On the watch thread) the worker did not close the generator of a stream given up unread within ``within`` s:
    kill and restart it; reading the stream raises that kill's error from now on."""
    state.fail_with(
        state.worker.timed_out(
            state.conn, state.method, within, " of closing its stream, which its consumer had left unread"
        )
    )
