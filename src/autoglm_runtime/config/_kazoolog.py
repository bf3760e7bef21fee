"""kazoo's own log lines during an outage: coded (E0409) and at a bounded rate.

kazoo logs every failed connection attempt (dozens of lines in seconds while ZooKeeper is down). The
``KazooClient`` a ConfigClient builds logs through :class:`OutageLog`, an adapter over the
``autoglm_runtime.config.kazoo`` logger: warnings and errors carry ``error_code`` E0409 and the hosts,
and each message template passes at most once per ``interval`` seconds; the next one that passes says
how many were held back. Debug and info lines pass as they are.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, MutableMapping
from typing import Any

__all__ = ["OutageLog"]

_LOGGER = logging.getLogger("autoglm_runtime.config.kazoo")


class OutageLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """What a ConfigClient's ``KazooClient`` logs through (``KazooClient(logger=OutageLog(hosts))``)."""

    def __init__(self, hosts: str, *, interval: float = 30.0, timer: Callable[[], float] = time.monotonic) -> None:
        super().__init__(_LOGGER, {"hosts": hosts})
        self._interval = interval
        self._timer = timer
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    @property
    def held_back(self) -> int:
        """Lines held back since each template last passed."""
        with self._lock:
            return sum(self._held.values())

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if level >= logging.WARNING:
            template = str(msg)
            now = self._timer()
            with self._lock:
                last = self._last.get(template)
                if last is not None and now - last < self._interval:
                    self._held[template] = self._held.get(template, 0) + 1
                    return
                self._last[template] = now
                held = self._held.pop(template, 0)
            if held:
                msg = f"{msg} ({held} more like it in the last {self._interval:g} s)"
            kwargs["extra"] = {**(kwargs.get("extra") or {}), "error_code": "E0409"}
        super().log(level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**self.extra, **(kwargs.get("extra") or {})}  # type: ignore[dict-item]
        return msg, kwargs
