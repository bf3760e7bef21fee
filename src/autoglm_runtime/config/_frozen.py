"""Read-only containers for cached values: one decoded value is shared by every reader and listener.

``get()`` must stay one dict read, so values are frozen once, when they are decoded, not copied on every
read. :class:`FrozenDict` and :class:`FrozenList` are ``dict`` and ``list`` subclasses (so ``==``,
``isinstance``, ``json.dumps`` and iteration behave as before) whose mutating methods raise
:class:`ReadOnlyValueError`; ``dict(value)``, ``list(value)``, ``value.copy()`` and ``copy.deepcopy(value)``
give a mutable copy. Sets become ``frozenset``. Other objects a custom codec returns are left as they are.
"""

from __future__ import annotations

from typing import Any, NoReturn

from autoglm_runtime.errors import ReadOnlyValueError

__all__ = ["FrozenDict", "FrozenList", "freeze", "thaw"]


def _refuse(self: object, *args: object, **kwargs: object) -> NoReturn:
    kind = "dict" if isinstance(self, dict) else "list"
    raise ReadOnlyValueError(
        f"config values are read-only (every reader and listener shares the same {kind}): make a copy to "
        f"change it, e.g. {kind}(value) or copy.deepcopy(value)"
    )


class FrozenDict(dict[str, Any]):
    """A ``dict`` that refuses changes; ``copy()``, ``copy.copy()`` and ``copy.deepcopy()`` give mutable ones."""

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return thaw(self)  # type: ignore[no-any-return]

    def copy(self) -> dict[str, Any]:
        return dict(self)

    __copy__ = copy  # copy.copy(value), like value.copy(), gives a mutable (shallow) copy


class FrozenList(list[Any]):
    """A ``list`` that refuses changes; ``copy()``, ``copy.copy()`` and ``copy.deepcopy()`` give mutable ones."""

    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenList, (list(self),))

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return thaw(self)  # type: ignore[no-any-return]

    def copy(self) -> list[Any]:
        return list(self)

    __copy__ = copy


def freeze(value: Any) -> Any:
    """``value`` with every dict, list and set inside it replaced by a read-only one (scalars as they are)."""
    if isinstance(value, dict):
        return FrozenDict({key: freeze(item) for key, item in value.items()})
    if isinstance(value, list | tuple) and not isinstance(value, FrozenList):
        frozen = [freeze(item) for item in value]
        return tuple(frozen) if isinstance(value, tuple) else FrozenList(frozen)
    if isinstance(value, set):
        return frozenset(freeze(item) for item in value)
    return value


def thaw(value: Any) -> Any:
    """A mutable deep copy of a frozen value: plain dicts and lists."""
    if isinstance(value, dict):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, list):
        return [thaw(item) for item in value]
    return value
