"""The supervision options of :class:`~autoglm_runtime.isolation.ModelLoader`, checked all at once.

A value no worker can run with (a start timeout of ``-5``, ``max_restarts=-1``, a negative backoff, a ``nan``) is
refused when the loader is made, with every problem in one :class:`~autoglm_runtime.errors.UsageError` (E0001),
instead of failing a load later ("did not finish loading within -5 s") or passing unnoticed.
"""

from __future__ import annotations

import math
import threading

from autoglm_runtime.errors import UsageError

__all__ = ["check_loader_options"]


def _seconds(name: str, value: object, *, zero: bool, what: str = "") -> str | None:
    """A problem unless ``value`` is a finite number of seconds above 0 (or at 0 with ``zero``)."""
    low = ", 0 or more" if zero else " above 0"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (value >= 0 if zero else value > 0):  # type: ignore[operator]
        return None
    return f"{name} must be a number of seconds{low}{what}, got {value!r}"


def check_loader_options(
    *,
    backend: object,
    default_timeout: float | None,
    start_timeout: float,
    max_restarts: int,
    backoff: float,
    max_backoff: float,
    heartbeat_interval: float | None,
    heartbeat_timeout: float,
    retry_after: float,
    unread_timeout: float | None = None,
    max_retry_after: float = 60.0,
) -> None:
    """Raise one UsageError naming every option that no worker could run with."""
    problems: list[str | None] = []
    if heartbeat_interval is not None and not 0 < heartbeat_interval < heartbeat_timeout:
        problems.append(
            "heartbeat_interval must be a positive number of seconds below heartbeat_timeout="
            f"{heartbeat_timeout!r} (or None to turn heartbeats off), got {heartbeat_interval!r}"
        )
    if backend not in ("auto", "process", "subinterp"):
        problems.append(f"backend must be 'auto', 'process' or 'subinterp', got {backend!r}")
    if default_timeout is not None and not 0 < default_timeout <= threading.TIMEOUT_MAX:
        problems.append(
            f"default_timeout must be a positive number of seconds (at most {threading.TIMEOUT_MAX:g}) or None, "
            f"got {default_timeout!r}"
        )
    problems.append(_seconds("start_timeout", start_timeout, zero=False))
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
        problems.append(f"max_restarts must be a whole number, 0 or more (0: never restart), got {max_restarts!r}")
    problems.append(_seconds("backoff", backoff, zero=True))
    problems.append(_seconds("max_backoff", max_backoff, zero=True))
    problems.append(_seconds("heartbeat_timeout", heartbeat_timeout, zero=False))
    problems.append(_seconds("retry_after", retry_after, zero=True, what=" (the Retry-After of E0106)"))
    problems.append(_seconds("max_retry_after", max_retry_after, zero=True, what=" (the longest Retry-After of E0106)"))
    if unread_timeout is not None:
        problems.append(_seconds("unread_timeout", unread_timeout, zero=False, what=" or None"))
    found = [problem for problem in problems if problem is not None]
    if found:
        raise UsageError("; ".join(found))
