"""Judging a request from the start of a long text: the start of a JSON value's text, and the guard's verdict on it.

Serializing a multi-megabyte tool definition costs several times what parsing it did. When the text is longer than
a guard's :meth:`~ContextWindowGuard.text_limit`, its first characters are all the guard needs to reject it: with a
sound characters-per-token bound by length alone, without one by counting the start with early exit (the whole text
holds at least the start's tokens less one cut's slack; :meth:`~ContextWindowGuard.least_tokens` does either). When
the start proves nothing, the guard raises :class:`IncompleteInput` and the caller judges the whole text.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from autoglm_runtime.validation._overflow import overflow_error
from autoglm_runtime.validation._truncation import pinned_error
from autoglm_runtime.validation.limits import Limits
from autoglm_runtime.validation.request import GuardInput, IncompleteInput, Segment

if TYPE_CHECKING:
    from autoglm_runtime.validation.context_window import ContextWindowGuard

__all__ = ["json_prefix", "reject_partial"]


def _string_chars(value: Any, limit: int) -> int:
    """The characters of the strings (keys too) in ``value``, counted until they pass ``limit``."""
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            total += sum(len(key) for key in item if isinstance(key, str))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return total


class _Collision(Exception):
    """A key cut short equals a key before it."""


def _reduced(value: Any, room: list[int]) -> Any:
    """``value`` up to the string character where ``room[0]`` runs out, in the order JSON writes it."""
    if isinstance(value, str):
        kept = value[: room[0]]
        room[0] -= len(kept)
        return kept
    if isinstance(value, list):
        items = []
        for item in value:
            if room[0] <= 0:
                break
            items.append(_reduced(item, room))
        return items
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if room[0] <= 0:
                break
            name = _reduced(key, room) if isinstance(key, str) else key
            if name in out:  # a cut key equal to an earlier one would move the text: copy no further
                raise _Collision
            out[name] = _reduced(item, room) if room[0] > 0 else None
        return out
    return value


def json_prefix(value: Any, limit: int) -> str | None:
    """The first ``limit + 1`` characters of ``json.dumps(value, ensure_ascii=False)`` when that text is longer
    than ``limit`` characters by its strings alone, else ``None``.

    Everything before the string character where ``limit + 1`` string characters have been written is serialized
    exactly as in the whole text, and escaping never shortens a string, so the prefix is the whole text's.

    >>> json_prefix([{"d": "y" * 10}], 5)
    '[{"d":'
    >>> json_prefix([{"d": "short"}], 50) is None
    True
    """
    if _string_chars(value, limit) <= limit:
        return None
    try:
        reduced = _reduced(value, [limit + 1])
    except (RecursionError, _Collision):  # nested too deeply, or keys in the way: the caller serializes it whole
        return None
    return json.dumps(reduced, ensure_ascii=False)[: limit + 1]


def reject_partial(
    guard: ContextWindowGuard,
    request: GuardInput,
    segments: list[Segment],
    output: int,
    limits: Limits,
    *,
    truncating: bool,
) -> None:
    """E0513 when the start of the partial segments already proves the overflow; else :class:`IncompleteInput`.

    The partial pieces are weighed alone: they are pinned, so with truncation on the rest could still be cut to fit,
    and the rejection then says that the pieces never truncated leave no room.
    """
    if guard.chat_template is None:
        budget = limits.context_window - output - request.fixed_tokens
        starts = [text for index in sorted(request.partial) if isinstance(text := segments[index], str)]
        least = guard.least_tokens(starts, budget)
        if least > budget:
            exc = overflow_error(
                least + request.fixed_tokens,
                output,
                limits.context_window,
                request,
                at_least=True,
            )
            raise pinned_error(exc, request, limits.context_window) if truncating else exc
    raise IncompleteInput(f"segments {sorted(request.partial)} hold only the start of their text")
