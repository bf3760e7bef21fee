"""Request fields read as vLLM's OpenAI server reads them: pydantic v2 models in lax (Python) mode.

vLLM validates a request body's JSON with pydantic models that are not strict, so ``"max_tokens": "16"``,
``16.0`` and ``true`` are the integers 16, 16 and 1, and ``"add_generation_prompt": "no"`` is false. A guard that
refused them would refuse requests the backend runs; one that skipped them would count a budget other than the one
the backend uses. Only the shapes a JSON body can hold are read (no bytes, no ``Decimal``); the tests check these
readers against pydantic itself.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["lax_bool", "lax_int"]

#: A whole number as pydantic parses one from text: ASCII digits, ``_`` between digits, an optional ``.0...``.
#: pydantic skips leading zeros together with any underscores among them, so ``"0__1"`` is 1 but ``"1__2"`` fails.
_INT_TEXT = re.compile(r"[+-]?(?:0[0_]*)?[0-9]+(?:_[0-9]+)*(?:\.0+)?")
#: Python's own limit on the digits of an integer read from text (pydantic refuses longer ones too).
_MAX_DIGITS = 4300
_FLOAT_END = 2.0**63
#: Unicode's White_Space, which pydantic trims around a number (str.strip would also take U+001C to U+001F).
_WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
)
_TRUE_TEXT = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE_TEXT = frozenset({"0", "off", "f", "false", "n", "no"})


def lax_int(value: Any) -> int | None:
    """``value`` as the integer pydantic's lax mode makes of it, or ``None`` where pydantic refuses it.

    >>> [lax_int(v) for v in (16, "16", " +16 ", "16.0", 16.0, True, 16.5, "1e3")]
    [16, 16, 16, 16, 16, 1, None, None]
    """
    kind = type(value)
    if kind is int:
        return value  # type: ignore[no-any-return]
    if kind is bool:
        return int(value)
    if kind is float:
        # pydantic reads a float only within a 64-bit integer's range, both ends left out.
        return int(value) if math.isfinite(value) and value.is_integer() and -_FLOAT_END < value < _FLOAT_END else None
    if kind is str:
        text = value.strip(_WHITE_SPACE)
        if len(text) > _MAX_DIGITS or _INT_TEXT.fullmatch(text) is None:
            return None
        return int(text.partition(".")[0].replace("_", ""))
    return None


def lax_bool(value: Any) -> bool | None:
    """``value`` as the boolean pydantic's lax mode makes of it, or ``None`` where pydantic refuses it.

    >>> [lax_bool(v) for v in (True, "no", "Yes", 1, 0.0, 2, "nope")]
    [True, False, True, True, False, None, None]
    """
    kind = type(value)
    if kind is bool:
        return value  # type: ignore[no-any-return]
    if kind is int or kind is float:
        return bool(value) if value in (0, 1) else None
    if kind is str:
        lowered = value.lower()
        if lowered in _TRUE_TEXT:
            return True
        if lowered in _FALSE_TEXT:
            return False
    return None
