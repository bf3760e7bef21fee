"""Streams the garbage collector finds dropped without being closed are closed on a thread of their own.

A stream whose last reference goes is closed inline, on the dropping line. But the garbage collector finds a
stream in a reference cycle (a traceback holding the frame that iterated it, say) wherever it happens to run,
which can be a thread in the middle of a connection's, a replica pool's or a metric's critical section. Closing
inline there would take a lock that same thread holds and wait for ever. So such a stream's ``__del__`` hands it
to the closer thread and waits for it to be closed (its cancel sent, as on the dropping line), and only when
the collecting thread holds a lock the close needs does it go on after :data:`CLOSE_WAIT` seconds, the close
completing once it lets go. (Handing every dropped stream over was slow where threads contend for the GIL:
up to a second per drop, against milliseconds inline.)"""

from __future__ import annotations

import contextlib
import gc
import os
import queue
import sys
import threading
from collections.abc import Callable

from autoglm_runtime._fork import after_fork_in_child

__all__ = ["CLOSE_WAIT", "close_dropped", "dropped", "ensure_started", "pid"]

#: How long a stream's ``__del__`` waits for the closer thread to close it (in the normal case microseconds).
CLOSE_WAIT = 1.0

_queue: queue.SimpleQueue[tuple[Callable[[], object], threading.Event]] = queue.SimpleQueue()
_thread: threading.Thread | None = None
_start_lock = threading.Lock()
_collecting: int | None = None  # the thread a garbage collection runs on, while it runs
_pid = os.getpid()


def _note_collection(phase: str, info: dict[str, int]) -> None:
    global _collecting
    _collecting = threading.get_ident() if phase == "start" else None


gc.callbacks.append(_note_collection)


def ensure_started() -> None:
    """Start the closer thread if it is not running in this process (called when a stream opens, never from
    ``__del__``; a forked child starts its own)."""
    global _thread
    thread = _thread
    if thread is not None and thread.is_alive():
        return
    with _start_lock:
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_run, name="autoglm-stream-closer", daemon=True)
            _thread.start()


def dropped(close: Callable[[], object]) -> None:
    """Run ``close`` (a stream's ``__del__``'s): inline, unless the garbage collector runs it on this thread
    (then :func:`close_dropped`)."""
    if _collecting == threading.get_ident():
        close_dropped(close)
        return
    with contextlib.suppress(Exception):  # a stream that cannot be closed is one whose worker went away
        close()


def close_dropped(close: Callable[[], object]) -> None:
    """Run ``close`` (a dropped stream's) on the closer thread, waiting up to :data:`CLOSE_WAIT` s for it.

    Only :class:`queue.SimpleQueue` and a fresh event are touched here, both safe wherever ``__del__`` runs. On
    the closer thread itself (a stream dropped while it closes another) ``close`` is queued without waiting. It
    runs inline where no closer can: at interpreter shutdown, and with no closer thread running (no stream was
    opened in this process).
    """
    thread = _thread
    if sys.is_finalizing() or thread is None or not thread.is_alive():
        with contextlib.suppress(Exception):
            close()
        return
    done = threading.Event()
    _queue.put((close, done))
    if thread is not threading.current_thread():
        done.wait(CLOSE_WAIT)


def pid() -> int:
    """This process's id, kept current by the fork hook below: a stream compares it with the id of the process
    that opened it at every chunk, where ``os.getpid()`` would be a system call each time."""
    return _pid


def _run() -> None:
    while True:
        close, done = _queue.get()
        try:
            with contextlib.suppress(Exception):  # a stream that cannot be closed is one whose worker went away
                close()
        finally:
            del close  # the stream (and the chunks it buffered) goes with its dropping line, not the next drop
            done.set()


@after_fork_in_child
def _forget_parent() -> None:
    """In a forked child: the parent's closer thread does not run here, and the closes it had queued are the
    parent's (run here, they would cancel the parent's calls on the sockets both share, or wait for ever for a
    lock held at the fork); the child starts its own closer with its first stream."""
    global _queue, _thread, _start_lock, _pid
    _pid = os.getpid()
    _queue = queue.SimpleQueue()
    _thread = None
    _start_lock = threading.Lock()  # (held at the fork by a thread that does not exist here)
