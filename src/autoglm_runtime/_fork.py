"""Module state a forked child must make afresh: what a thread of the parent holds or runs does not exist there."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

__all__ = ["after_fork_in_child"]


def after_fork_in_child(reset: Callable[[], None]) -> Callable[[], None]:
    """Have ``reset`` run in every child forked from now on, right after the fork (``os.register_at_fork``; nothing
    on a platform without fork). A decorator::

        _watch = _Watch()

        @after_fork_in_child
        def _forget_parent() -> None:
            global _watch
            _watch = _Watch()   # the parent's watch thread does not run in the child
    """
    with contextlib.suppress(AttributeError):  # no fork on this platform
        os.register_at_fork(after_in_child=reset)
    return reset
