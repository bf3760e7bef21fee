"""Change events and the thread that delivers them to listeners.

Listeners run on one dispatcher thread owned by the client, never on kazoo's threads and never while the
cache lock is held: a slow listener delays only the listeners after it, never the cache, and a listener
that raises is logged (E0409) while the others still run. Events are delivered in the order the cache
applied them, so each key's events arrive in version order.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from autoglm_runtime.errors import UsageError

__all__ = ["ChangeKind", "ConfigChange", "Dispatcher", "Listener"]

log = logging.getLogger(__name__)

ChangeKind = Literal["added", "updated", "deleted"]


def require_callable(fn: object, where: str, argument: str) -> None:
    """Refuse a listener that cannot be called (E0001) now, rather than on the dispatcher thread at a change."""
    if not callable(fn):
        raise UsageError(
            f"{where} was given {fn!r} (of type {type(fn).__name__}) as its listener, which is not callable: pass a "
            f"function taking one {argument}"
        )


@dataclass(frozen=True)
class ConfigChange:
    """One key's change as seen by the cache.

    ``version`` is the znode's mzxid after the change (for ``"deleted"``, the mzxid of the value that
    vanished). ``old`` is ``None`` for ``"added"``; ``new`` is ``None`` for ``"deleted"``.
    """

    key: str
    kind: ChangeKind
    old: Any
    new: Any
    version: int


class Listener(Protocol):
    """A subscriber: called with each change whose key starts with the subscribed prefix."""

    def __call__(self, change: ConfigChange, /) -> object: ...


_STOP = object()


class Dispatcher:
    """Delivers :class:`ConfigChange` events to subscribers on a named thread of its own."""

    def __init__(self, name: str = "autoglm-config-dispatch") -> None:
        self._name = name
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._subscribers: tuple[tuple[int, str, Listener, int], ...] = ()
        self._live: set[int] = set()  # the idents in _subscribers, for the check before each call
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        # The subscription whose listener runs now (0: none), and the dispatcher thread's ident: unsubscribe()
        # waits for that call to end, except on the dispatcher thread (a listener unsubscribing itself).
        self._calling = 0
        self._call_done = threading.Condition(self._lock)
        self._waiting = 0  # unsubscribe() calls waiting on _call_done (notified only then: it costs per call)
        self._dispatching: int | None = None
        self._thread: threading.Thread | None = None
        self._idle = threading.Condition()
        self._queued = 0
        self._done = 0

    @property
    def published(self) -> int:
        """How many changes were published so far (a position for :meth:`subscribe`'s ``after``)."""
        return self._queued

    def subscribe(self, prefix: str, fn: Listener, *, after: int = 0) -> Callable[[], None]:
        """Call ``fn`` for every change whose key starts with ``prefix`` published after the first ``after``
        ones (default: every change not yet delivered); returns the unsubscribe callable.

        Once the unsubscribe callable returns, ``fn`` is never called again and no call of it is running:
        from another thread it waits for a call in progress to end (so it must not be called while holding
        what ``fn`` waits for); from within a listener (on the dispatcher thread) it returns at once: the call
        in progress (perhaps of ``fn`` itself) finishes, and no other call of ``fn`` starts.
        """
        require_callable(fn, f"subscribe({prefix!r}, ...)", "ConfigChange")
        ident = next(self._ids)
        with self._lock:
            self._subscribers = (*self._subscribers, (ident, prefix, fn, after))
            self._live.add(ident)

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = tuple(s for s in self._subscribers if s[0] != ident)
                self._live.discard(ident)
                if threading.get_ident() != self._dispatching and self._calling == ident:
                    self._waiting += 1
                    try:
                        self._call_done.wait_for(lambda: self._calling != ident)
                    finally:
                        self._waiting -= 1

        return unsubscribe

    def publish(self, change: ConfigChange) -> None:
        """Queue ``change`` for delivery; never blocks and never calls a listener itself."""
        with self._idle:
            self._queued += 1
            position = self._queued
        self._queue.put((position, change))

    def start(self) -> None:
        """Start the dispatcher thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Deliver what is queued, then end the thread."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every event published so far was delivered; ``False`` on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._done >= self._queued, timeout)

    def _run(self) -> None:
        self._dispatching = threading.get_ident()
        lock, live = self._lock, self._live  # (locals: this loop is the per-listener cost of every change)
        while True:
            got = self._queue.get()
            if got is _STOP:
                return
            assert isinstance(got, tuple)
            position, item = got
            for ident, prefix, fn, after in self._subscribers:
                if position > after and item.key.startswith(prefix):
                    with lock:
                        # Unsubscribed since this round began: its unsubscribe() has returned, so no more calls.
                        if ident not in live:
                            continue
                        self._calling = ident
                    try:
                        fn(item)
                    except BaseException:  # sys.exit() too: it would end this thread, and every later delivery
                        log.exception(
                            "config listener raised; the other listeners still run",
                            extra={"error_code": "E0409", "key": item.key, "listener": repr(fn)},
                        )
                    finally:
                        with lock:
                            self._calling = 0
                            if self._waiting:
                                self._call_done.notify_all()
            with self._idle:
                self._done += 1
                self._idle.notify_all()
