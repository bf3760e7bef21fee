"""Which watch events are still to be answered by a read: :class:`PendingPaths`.

A difference the reconciler finds at a path whose event is pending is that event's change on its way, not drift.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["PendingPaths"]


class PendingPaths:
    """Paths whose watch fired and whose re-read has not been applied yet (a difference there is not drift).

    An event marks what it asks to read again -- the value, the child list, or both -- with a number from the
    reader's sequence, so reads issued after the event carry larger ones. A read unmarks only what it read,
    and only marks not newer than itself: neither the re-read of an earlier event nor a read of the value
    alone forgets a later event, whose change the reconciler would otherwise take for drift. kazoo's callback
    thread marks; the sync thread unmarks.
    """

    def __init__(self, next_seq: Callable[[], int]) -> None:
        self._next_seq = next_seq
        self._lock = threading.Lock()
        self._marks: dict[str, list[int]] = {}  # path -> [value mark, child-list mark]; 0: not marked

    def mark(self, path: str, *, data: bool, children: bool, seq: int | None = None) -> None:
        """An event asks to read the value (``data``) and/or the child list of ``path`` again; ``seq``: the
        number of the read already issued for it (default: a new number, for a read still to be issued)."""
        seq = self._next_seq() if seq is None else seq
        with self._lock:
            marks = self._marks.setdefault(path, [0, 0])
            if data:
                marks[0] = max(marks[0], seq)
            if children:
                marks[1] = max(marks[1], seq)

    def answer(self, path: str, seq: int, *, data: bool, children: bool) -> None:
        """A read of ``path`` numbered ``seq`` (of its value if ``data``, its child list if ``children``) is being
        applied: unmark what it answers."""
        with self._lock:
            marks = self._marks.get(path)
            if marks is None:
                return
            if data and marks[0] <= seq:
                marks[0] = 0
            if children and marks[1] <= seq:
                marks[1] = 0
            if marks == [0, 0]:
                del self._marks[path]

    def __contains__(self, path: object) -> bool:
        return path in self._marks

    def paths(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._marks)

    def answer_all(self, seq: int) -> None:
        """A full read whose reads are all numbered after ``seq`` is being applied: unmark everything marked
        up to ``seq``, not what was marked since (those events' re-reads are still to come)."""
        with self._lock:
            for path in [p for p, marks in self._marks.items() if max(marks) <= seq]:
                del self._marks[path]
            for marks in self._marks.values():
                marks[:] = [0 if mark <= seq else mark for mark in marks]
