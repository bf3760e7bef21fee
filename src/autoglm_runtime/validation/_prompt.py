"""A completion's ``prompt`` as vLLM's ``CompletionRequest`` reads it.

vLLM types the field ``list[int >= 0] | list[list[int >= 0]] | str | list[str]``, and pydantic reads such a union in
smart mode: an exact (strict) match with a member first, then the first member, in that order, the value passes in
lax mode. So ``[1.0, 2.0]``, ``[true, 2]`` and ``[1, "2"]`` are the token ids 1, 2 and ``["5", "6"]`` a batch of
two strings, while a negative token id, or strings mixed with token ids in one list, is refused (E5010 here). A list
of strings or of token id lists is a batch: each prompt is judged on its own. The tests check this reading against
pydantic itself.
"""

from __future__ import annotations

import functools
from itertools import repeat
from typing import Any

from autoglm_runtime.errors import InvalidRequestError
from autoglm_runtime.validation._lax import lax_int
from autoglm_runtime.validation._message_text import Path, TextField, shape_error, too_many

__all__ = ["read_prompt"]


def _is_ids(value: Any) -> bool:
    # One pass in C over the element types; bool is a distinct type, so True/False are no exact token ids.
    return isinstance(value, list) and (not value or (set(map(type, value)) == {int} and min(value) >= 0))


@functools.lru_cache(maxsize=32)
def _index_paths(base: Path, count: int) -> tuple[Path, ...]:
    """``(*base, 0)`` to ``(*base, count - 1)``, built once per field and size class rather than once per request."""
    return tuple((*base, index) for index in range(count))


def _paths_for(base: Path, count: int) -> tuple[Path, ...]:
    """The first ``count`` index paths of ``base``, from a cached run of the next power of two: never more than twice
    what a request needs (a run as long as ``max_prompts`` was built whatever the batch, all of memory for a limit
    set very high)."""
    return _index_paths(base, 1 << (count - 1).bit_length())[:count]


def _lax_ids(items: list[Any]) -> tuple[int, ...] | None:
    """``items`` as the token ids pydantic's lax mode reads (``None`` when it refuses one)."""
    ids: list[int] = []
    for item in items:
        number = lax_int(item)
        if number is None or number < 0:
            return None
        ids.append(number)
    return tuple(ids)


def read_prompt(name: str, value: Any, max_prompts: int) -> tuple[list[TextField], bool]:
    """The prompt field ``name`` (``value``) as text fields, and whether it is a batch; E5010 for what vLLM
    refuses, an empty list (vLLM: "please provide at least one prompt"), or a batch of more than ``max_prompts``."""
    base: Path = tuple(name.split("."))
    if isinstance(value, str):
        return [TextField(base, value)], False
    if not isinstance(value, list):
        raise shape_error(name, "a string, a list of strings or a list of token ids", value)
    if not value:
        raise InvalidRequestError(
            f'{name} is an empty list: send at least one prompt (vLLM: "please provide at least one prompt")',
            param=name,
        )
    if type(value[0]) is int and _is_ids(value):
        # One tokenized prompt (however long), not a batch.
        return [TextField(base, tuple(value))], False
    kinds = set(map(type, value))
    if kinds <= {str, list} and len(value) > max_prompts:
        raise too_many(
            "prompts",
            len(value),
            max_prompts,
            option="max_prompts",
            param=name,
            advice=", splitting the batch over several requests",
        )
    if kinds == {str}:
        # The usual batch: no per-element check, and the index paths come from a shared tuple.
        paths = _paths_for(base, len(value))
        return list(map(tuple.__new__, repeat(TextField), zip(paths, value, strict=True))), True
    if kinds == {list} and all(map(_is_ids, value)):
        return [TextField((*base, index), tuple(item)) for index, item in enumerate(value)], True
    # No exact match: the first member pydantic's lax mode takes, token ids before lists of them.
    ids = _lax_ids(value)
    if ids is not None:
        return [TextField(base, ids)], False
    if kinds == {list}:
        batch = [_lax_ids(item) for item in value]
        if all(item is not None for item in batch):
            return [TextField((*base, index), item) for index, item in enumerate(batch) if item is not None], True
    raise _refusal(name, value)


def _refusal(name: str, value: list[Any]) -> InvalidRequestError:
    """Why vLLM refuses the list ``value``: the first element that is no prompt piece, else the mix of kinds."""
    for index, item in enumerate(value):
        where = f"{name}[{index}]"
        tokens = item if isinstance(item, list) else [] if isinstance(item, str) else [item]
        for number, token in enumerate(tokens):
            place = f"{where}[{number}]" if isinstance(item, list) else where
            read = lax_int(token)
            if read is None:
                expected = (
                    "a token id (a whole number)" if isinstance(item, list) else "a string or a list of token ids"
                )
                return shape_error(place, expected, token)
            if read < 0:
                return InvalidRequestError(
                    f"{place} is {token!r:.20}, not a token id: token ids are whole numbers of at least 0 (vLLM "
                    "refuses others): fix the request body",
                    param=place,
                )
    present = [
        kind
        for kind, test in (("strings", str), ("token ids", None), ("lists of token ids", list))
        if any(isinstance(item, test) if test else not isinstance(item, str | list) for item in value)
    ]
    return InvalidRequestError(
        f"{name} mixes {' and '.join(present)}: vLLM takes a string, a list of strings, token ids or a list of token "
        "id lists, one kind at a time (so does OpenAI): send one kind",
        param=name,
    )
