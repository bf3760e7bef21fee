"""What readers ask of a :class:`~autoglm_runtime.config.ConfigClient` beyond ``get()``: typed reads,
waiting for a value, a consistent view plus the changes after it, and an async stream of changes.

Everything here reads the cache (never ZooKeeper) and listens through the client's dispatcher, so it
works the same for every backend.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from autoglm_runtime.config.cache import ConfigCache
from autoglm_runtime.config.dispatcher import ConfigChange, Dispatcher, Listener
from autoglm_runtime.errors import ConfigTimeoutError, ConfigTypeError, UsageError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from autoglm_runtime.config.typed import TypedView

__all__ = ["Reads"]

T = TypeVar("T")
M = TypeVar("M", bound="BaseModel")
_MISSING: Any = object()


class Reads:
    """Mixed into ``ConfigClient``; needs its cache, dispatcher, ``root`` and ``subscribe``."""

    root: str
    _cache: ConfigCache
    _values: dict[str, Any]
    _dispatcher: Dispatcher

    def subscribe(self, prefix: str, fn: Listener) -> Callable[[], None]:
        raise NotImplementedError

    def _refuse_absolute(self, key: object) -> None:
        """Raise for a key or prefix starting with '/': it can never exist, and its reads would silently give
        their defaults for ever (a path with the root in it, or a stray slash)."""
        if isinstance(key, str) and key[:1] == "/":
            raise self._absolute(key)

    def _absolute(self, key: str) -> UsageError:
        relative = key[len(self.root) :] if key.startswith(self.root.rstrip("/") + "/") else key
        return UsageError(
            f"config key {key!r} starts with '/' and can never exist: keys are relative to the client's root "
            f"{self.root}, such as {relative.lstrip('/')!r}"
        )

    # --- typed reads -------------------------------------------------------------------------------

    def _typed(self, key: str, default: Any, kinds: tuple[type, ...], name: str) -> Any:
        value: Any = self._values.get(key, _MISSING)
        if value is _MISSING:
            self._refuse_absolute(key)
            if default is not _MISSING:
                return default
            raise ConfigTypeError(f"config key {key!r} does not exist under {self.root}: no {name} to return")
        # bool is an int in Python, but "true" is not a number of anything: refuse it where a number is asked.
        if isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds):
            found: Any = value
            return float(found) if name == "float" else found
        where = "the config directory" if getattr(self, "hosts", "").startswith("file://") else "ZooKeeper"
        raise ConfigTypeError(
            f"config key {key!r} under {self.root} holds {type(value).__name__} {_short(value)}, not {name}: "
            f"fix the value in {where} or read it with get()"
        )

    def get_int(self, key: str, default: int = _MISSING) -> int:
        """The value of ``key`` if it is an integer (not a bool), else ``default``; without a default, a
        missing key or a value of another type raises :class:`~autoglm_runtime.errors.ConfigTypeError`
        (E0409). Costs one dict read and a type check."""
        return self._typed(key, default, (int,), "int")  # type: ignore[no-any-return]

    def get_float(self, key: str, default: float = _MISSING) -> float:
        """The value of ``key`` as a float (an integer is accepted, a bool is not); see :meth:`get_int`."""
        return self._typed(key, default, (int, float), "float")  # type: ignore[no-any-return]

    def get_bool(self, key: str, default: bool = _MISSING) -> bool:
        """The value of ``key`` if it is a JSON boolean (the string ``"true"`` is refused); see :meth:`get_int`."""
        return self._typed(key, default, (bool,), "bool")  # type: ignore[no-any-return]

    def get_str(self, key: str, default: str = _MISSING) -> str:
        """The value of ``key`` if it is a string; see :meth:`get_int`."""
        return self._typed(key, default, (str,), "str")  # type: ignore[no-any-return]

    # --- waiting and following -----------------------------------------------------------------------

    def wait_for(self, key: str, predicate: Callable[[Any], bool] | None = None, timeout: float = 10.0) -> Any:
        """Wait until ``key`` exists (and ``predicate(value)`` is true) and return its value.

        Raises :class:`~autoglm_runtime.errors.ConfigTimeoutError` (E0409, a ``TimeoutError``) after
        ``timeout`` seconds. Example: ``config.wait_for("rollout/percent", lambda v: v >= 50, timeout=60)``.
        """

        self._refuse_absolute(key)

        def ok(value: Any) -> bool:
            return value is not _MISSING and (predicate is None or bool(predicate(value)))

        changed = threading.Condition()

        def wake(change: ConfigChange) -> None:
            if change.key == key:
                with changed:
                    changed.notify_all()

        unsubscribe = self.subscribe(key, wake)
        try:
            deadline = time.monotonic() + timeout
            with changed:
                # The current value is read after subscribing: a change in between wakes us.
                while not ok(value := self._values.get(key, _MISSING)):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        now = "does not exist" if value is _MISSING else f"is {_short(value)}"
                        raise ConfigTimeoutError(
                            f"config key {key!r} under {self.root} {now}; waited {timeout:g} s for "
                            f"{'it to exist' if predicate is None else 'the awaited value'}"
                        )
                    changed.wait(min(remaining, 0.5))
            return value
        finally:
            unsubscribe()

    def get_and_subscribe(self, prefix: str, fn: Listener) -> tuple[Mapping[str, Any], Callable[[], None]]:
        """Atomically: every key under ``prefix`` with its value now, and a subscription that calls ``fn``
        for exactly the changes applied after that view (none missed, none repeated).

        >>> view, unsubscribe = client.get_and_subscribe("models/", on_change)  # doctest: +SKIP
        """
        # The cache publishes under its lock: holding it, the view and the dispatcher's position agree.
        with self._cache.lock:
            self.subscribe(prefix, lambda change: None)()  # the client's own checks (a stopped client raises)
            view = {k: v for k, v in self._values.items() if k.startswith(prefix)}
            unsubscribe = self._dispatcher.subscribe(prefix, fn, after=self._dispatcher.published)
        return MappingProxyType(view), unsubscribe

    def typed_view(self, prefix: str, model: type[M]) -> TypedView[M]:
        """The keys under ``prefix`` as one pydantic ``model``, validated on every change and last-known-good:
        see :class:`~autoglm_runtime.config.typed.TypedView` (needs the ``typed`` extra)::

            limits = config.typed_view("limits/words-numpy1", Limits)
            limits.get().context_window
        """
        from autoglm_runtime.config.typed import TypedView

        return TypedView(self, prefix, model)  # type: ignore[arg-type]

    async def changes(self, prefix: str = "") -> AsyncIterator[ConfigChange]:
        """The changes under ``prefix`` from now on, as an async iterator on the running event loop::

            async for change in config.changes("models/"):
                print(change.key, change.new)

        Closing the iterator (``break``, cancellation) unsubscribes.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[ConfigChange] = asyncio.Queue()
        unsubscribe = self.subscribe(prefix, lambda change: loop.call_soon_threadsafe(queue.put_nowait, change))
        try:
            while True:
                yield await queue.get()
        finally:
            unsubscribe()


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
