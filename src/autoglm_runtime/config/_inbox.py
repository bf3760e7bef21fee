"""What kazoo's threads and the reconciler tell the config sync thread, and how it becomes events.

Everything reaches the sync thread as an :data:`Item` on one queue: ``("state", (KazooState, zxid))`` from
kazoo's connection thread, ``("data" | "children", path)`` and ``("fetched", (ReadResult, pending))`` from
watch callbacks, ``("synced", generation)`` markers after a re-arm, ``("read", paths)`` from the
reconciler, ``("resync", None)`` for a full read, and :data:`STOP`. :func:`to_events` turns one wake-up's
items into the events :func:`._syncstate.decide` takes.
"""

from __future__ import annotations

import queue
from typing import Any

from kazoo.protocol.states import KazooState

from autoglm_runtime.config import _syncstate as sm

__all__ = ["STOP", "Item", "collect", "to_events"]

Item = tuple[str, Any]
STOP: Item = ("stop", "")


def collect(items: queue.SimpleQueue[Item], *, wait: float = 0.5) -> list[Item]:
    """Wait up to ``wait`` s for a queued item, then take every other one already queued."""
    try:
        out = [items.get(timeout=wait)]
    except queue.Empty:
        out = []
    while True:
        try:
            out.append(items.get_nowait())
        except queue.Empty:
            return out


def to_events(
    items: list[Item], *, can_rearm: bool, connected: bool, recheck_due: bool, self_checked: bool
) -> list[sm.Event]:
    """The items as events, in order, then a ``Wake`` with what the watches asked for."""
    events: list[sm.Event] = []
    fetched: list[Any] = []
    wanted: dict[str, set[str]] = {"data": set(), "children": set()}
    for kind, arg in items:
        if kind == "state":
            state, zxid = arg
            events.append(sm.Connected(can_rearm) if state == KazooState.CONNECTED else sm.Dropped(zxid))
        elif kind == "synced":
            events.append(sm.MarkerArrived(arg))
        elif kind == "read":
            events.append(sm.Unread(frozenset(arg)))
        elif kind == "resync":
            events.append(sm.ResyncRequested())
        elif kind == "fetched":
            fetched.append(arg)
        elif kind in wanted:
            wanted[kind].add(arg)
    events.append(
        sm.Wake(
            connected=connected,
            recheck_due=recheck_due,
            self_checked=self_checked,
            fetched=tuple(fetched),
            data=frozenset(wanted["data"]),
            children=frozenset(wanted["children"]),
        )
    )
    return events
