"""A forked child leaves its parent's workers to the parent and starts workers of its own.

A prefork server (``gunicorn --preload``, ``os.fork()`` after models were loaded, multiprocessing's ``fork``) gives
the child a copy of every loaded model: its workers' sockets, pipes, locks and bookkeeping, but none of the threads
that read them. Used from the child, a parent's socket would carry two processes' calls under the same ids (each
reads the other's replies, both time out and kill the worker); closed from the child, ``shutdown`` and ``killpg``
would stop the parent's workers. So right after a fork, in the child, every object registered here forgets what
it inherited (``forget_parent``): the child's copies of the workers' descriptors are closed (only the child's: the
parent's workers go on serving it, and still exit when the parent goes, while the child lives), locks that a
thread of the parent may have held at the fork are made afresh, and each replica is marked down, so that the
child's first call to a model starts a worker of the child's own (as after a death, but counted as neither a
failure nor a restart). Streams the child inherited stay the parent's (see ``streams.py``).
"""

from __future__ import annotations

import weakref
from typing import Protocol

from autoglm_runtime._fork import after_fork_in_child

__all__ = ["Inherited", "track", "track_worker"]


class Inherited(Protocol):
    """An object holding state a forked child must not share with its parent."""

    def forget_parent(self) -> None:
        """(In a forked child, right after the fork) drop what belongs to the parent; no I/O but closing the child's
        copies of descriptors, no logging, no waiting."""


_workers: weakref.WeakSet[Inherited] = weakref.WeakSet()
_owners: weakref.WeakSet[Inherited] = weakref.WeakSet()  # pools and loaders: they start threads that use workers


def track_worker(worker: Inherited) -> None:
    """Have ``worker`` forget its parent's process in a forked child (before any owner does)."""
    _workers.add(worker)


def track(owner: Inherited) -> None:
    """Have ``owner`` (a replica pool, a loader) forget its parent's state in a forked child, after the workers."""
    _owners.add(owner)


@after_fork_in_child
def _in_child() -> None:
    failed: Exception | None = None
    for inherited in [*_workers, *_owners]:  # workers first: owners start threads that use them
        try:
            inherited.forget_parent()
        except Exception as exc:  # (one that fails must not leave the others shared with the parent)
            failed = failed or exc
    if failed is not None:
        raise failed  # reported by os.fork as unraisable, once every other object forgot its parent
