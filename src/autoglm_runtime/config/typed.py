"""A prefix of the config tree as one pydantic model, validated on every change, last-known-good.

``client.typed_view("limits/words-numpy1", Limits)`` maps the keys under the prefix onto a mapping (``a/b``
becomes ``{"a": {"b": ...}}``; a key with keys below it is the mapping of those, its own value is not used)
and validates it with ``Limits.model_validate``. A tree that does not validate is refused as a whole: the view
keeps serving the last model that did (logged once per refused state as E0409, and kept in
:attr:`TypedView.error`), so a half-written group of keys never reaches the server. Needs the ``typed`` extra
(pydantic 2).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from autoglm_runtime.config.dispatcher import require_callable
from autoglm_runtime.errors import ConfigTypeError, UsageError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from autoglm_runtime.config.client import ConfigClient
    from autoglm_runtime.config.dispatcher import ConfigChange

__all__ = ["TypedView", "nest"]

log = logging.getLogger("autoglm_runtime.config")

M = TypeVar("M", bound="BaseModel")


def nest(prefix: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The keys under ``prefix`` (``""``: all) as nested dicts: ``a/b`` -> ``{"a": {"b": value}}``.

    A key with keys below it becomes the mapping of those; its own value (an intermediate znode's, usually
    empty) is not used.
    """
    base = prefix.strip("/")
    start = len(base) + 1 if base else 0
    out: dict[str, Any] = {}
    for key in sorted(values, key=lambda k: k.count("/"), reverse=True):  # deepest first: parents find children
        if base and not key.startswith(base + "/"):
            continue
        *parents, name = key[start:].split("/")
        node = out
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        if name not in node:
            node[name] = values[key]
    return out


class TypedView(Generic[M]):
    """The keys under ``prefix`` of ``client`` validated as ``model``; see the module docstring.

    Create it with :meth:`ConfigClient.typed_view`. :meth:`get` is a reference read; listeners added with
    :meth:`subscribe` get each new valid model on the client's dispatcher thread. :meth:`close` (or ``with``)
    unsubscribes it from the client.
    """

    def __init__(self, client: ConfigClient, prefix: str, model: type[M]) -> None:
        try:
            from pydantic import BaseModel
        except ImportError as exc:
            raise UsageError("typed views need pydantic: pip install 'autoglm-runtime[typed]' (pydantic>=2)") from exc
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise UsageError(f"typed_view needs a pydantic BaseModel subclass, got {model!r}")
        self.prefix = prefix.strip("/")
        self.model = model
        self._client = client
        self._lock = threading.Lock()
        self._value: M | None = None
        self._listeners: list[Callable[[M], None]] = []
        #: Why the current tree is not what :meth:`get` serves (None while it validates).
        self.error: ConfigTypeError | None = None
        self._refused: Any = None  # the last state refused (logged once)
        watched = self.prefix + "/" if self.prefix else ""
        view, self._unsubscribe = client.get_and_subscribe(watched, self._on_change)
        self._values = dict(view)  # the keys under the prefix, kept up to date by the changes that follow
        self._rebuild(self._values)

    def get(self) -> M:
        """The last model the tree validated as; :class:`~autoglm_runtime.errors.ConfigTypeError` (E0409) if it
        never did."""
        value = self._value
        if value is None:
            assert self.error is not None
            raise self.error
        return value

    def subscribe(self, fn: Callable[[M], None]) -> Callable[[], None]:
        """Call ``fn(model)`` for each new valid model; returns a callable that removes ``fn``."""
        require_callable(fn, "TypedView.subscribe", self.model.__name__)
        with self._lock:
            self._listeners.append(fn)

        def remove() -> None:
            with self._lock:
                if fn in self._listeners:
                    self._listeners.remove(fn)

        return remove

    def close(self) -> None:
        self._unsubscribe()

    def __enter__(self) -> TypedView[M]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_change(self, change: ConfigChange) -> None:
        if change.kind == "deleted":
            self._values.pop(change.key, None)
        else:
            self._values[change.key] = change.new
        self._rebuild(self._values)

    def _rebuild(self, values: Mapping[str, Any]) -> None:
        from pydantic import ValidationError

        data = nest(self.prefix, values)
        try:
            value = self.model.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()[:3]
            )
            more = f" (and {exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
            keeping = "keeping the last valid one" if self._value is not None else "no valid one yet"
            self.error = ConfigTypeError(
                f"config under {self.prefix or '/'!r} of {self._client.root} is not a valid {self.model.__name__}: "
                f"{problems}{more}; {keeping}"
            )
            if data != self._refused:
                self._refused = data
                log.warning(self.error.message, extra={"error_code": "E0409", "prefix": self.prefix})
            return
        with self._lock:
            changed = value != self._value
            self._value, self.error, self._refused = value, None, None
            listeners = list(self._listeners) if changed else []
        for fn in listeners:
            fn(value)
