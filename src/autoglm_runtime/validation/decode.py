"""DecodeGuard: input that is not clean UTF-8 text is rejected with E5009 before a tokenizer sees it.

Two routes lead to text a tokenizer mangles: raw bytes that are not UTF-8, and JSON whose ``"\\ud800"`` escape
(a lone surrogate) ``json.loads`` accepts and turns into a ``str`` no UTF-8 encoder can write. tiktoken silently
replaces such a character with U+FFFD; other tokenizers raise from deep inside. The guard catches both::

    guard = DecodeGuard()
    body = guard.check_json(raw_bytes)      # parsed JSON, every string in it checked
    text = guard.check_text(text, param="prompt")
"""

from __future__ import annotations

import json
from typing import Any

from autoglm_runtime.errors import InputDecodeError

__all__ = ["DecodeGuard"]


# A lone surrogate can only enter parsed JSON through a "\\udXXX" escape (strict UTF-8 rejects encoded ones), so a
# body without one needs no look at its strings.
def _may_hold_surrogates(text: str) -> bool:
    # The one-character test is a fast memchr and settles most bodies.
    return "\\" in text and ("\\ud" in text or "\\uD" in text)


def _describe_position(index: int, where: str | None) -> str:
    return f"at character {index} of {where}" if where else f"at character {index}"


class DecodeGuard:
    """Rejects invalid UTF-8, malformed JSON and lone surrogates with :class:`InputDecodeError` (E5009).

    >>> DecodeGuard().check_text("fine")
    'fine'
    >>> DecodeGuard().check_json(b'{"prompt": "\\\\ud800"}')
    Traceback (most recent call last):
    ...
    autoglm_runtime.errors.InputDecodeError: E5009: the input contains a lone surrogate U+D800 at character 0 \
of prompt, which no tokenizer can encode: send well-formed Unicode text
    """

    def check_bytes(self, data: bytes, *, param: str | None = None) -> str:
        """``data`` decoded as strict UTF-8 (surrogates encoded in UTF-8 are invalid too)."""
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = data[exc.start : exc.start + 1].hex()
            raise InputDecodeError(
                f"the input is not valid UTF-8: byte 0x{bad} at offset {exc.start} cannot be decoded "
                f"({exc.reason}): send UTF-8 encoded text",
                param=param,
            ) from exc

    def check_text(self, text: str, *, param: str | None = None) -> str:
        """``text`` itself, after making sure it holds no lone surrogate."""
        return self._check(text, param, param)

    def _check(self, text: str, param: str | None, where: str | None) -> str:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InputDecodeError(
                f"the input contains a lone surrogate U+{ord(text[exc.start]):04X} "
                f"{_describe_position(exc.start, where)}, which no tokenizer can encode: send well-formed Unicode text",
                param=param,
            ) from exc
        return text

    def check_json(self, data: bytes) -> Any:
        """Parse ``data`` as JSON and check every string in it (keys too) for lone surrogates.

        The encoding is found as ``json.loads`` finds it for bytes, which is how Starlette's and FastAPI's
        ``request.json()`` (vLLM's server, and most apps behind the middleware) read a body: UTF-8, with or without a
        byte order mark, or UTF-16 / UTF-32. Each is decoded strictly.
        """
        encoding = json.detect_encoding(data)
        if encoding in ("utf-8", "utf-8-sig"):
            text = self.check_bytes(data).removeprefix("\ufeff")  # (only "utf-8-sig" data starts with one)
        else:
            try:
                text = data.decode(encoding)
            except UnicodeDecodeError as exc:
                raise InputDecodeError(
                    f"the input is not valid {encoding.upper()}: the bytes at offset {exc.start} cannot be decoded "
                    f"({exc.reason}): send UTF-8 encoded text",
                ) from exc
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputDecodeError(
                f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}: "
                "send a well-formed JSON object",
            ) from exc
        except RecursionError as exc:
            raise InputDecodeError(
                "the request body is not valid JSON: it is nested too deeply to parse: send a flatter JSON object",
            ) from exc
        except ValueError as exc:  # e.g. an integer longer than Python's int_max_str_digits
            raise InputDecodeError(
                "the request body is not valid JSON: a value in it cannot be converted (such as an integer too long "
                "to parse): send a well-formed JSON object",
            ) from exc
        if _may_hold_surrogates(text) and _has_lone_surrogate(value):
            self.check_value(value)
        return value

    def check_value(self, value: Any) -> None:
        """Check every string inside a parsed JSON value; the error names where the bad string is."""
        stack: list[tuple[Any, str]] = [(value, "")]
        while stack:
            item, path = stack.pop()
            if isinstance(item, str):
                self._check(item, path or None, path or None)
            elif isinstance(item, dict):
                children: list[tuple[Any, str]] = []
                for key, child in item.items():
                    self._check(key, path or None, f"a key in {path}" if path else "a key")
                    children.append((child, f"{path}.{key}" if path else key))
                stack.extend(reversed(children))
            elif isinstance(item, list):
                stack.extend(reversed([(child, f"{path}[{index}]") for index, child in enumerate(item)]))


def _has_lone_surrogate(value: Any) -> bool:
    """Whether any string in ``value`` (keys too) cannot be written as UTF-8; builds no path on the way.

    Strings are checked many at a time (joined, then encoded once): Python never merges two lone surrogates into a
    pair, so a join fails to encode exactly when one of its parts does.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            texts = [key for key in item if isinstance(key, str)]
            texts.extend(child for child in item.values() if isinstance(child, str))
            stack.extend(child for child in item.values() if isinstance(child, dict | list))
        elif isinstance(item, list):
            texts = [child for child in item if type(child) is str]
            if len(texts) < len(item):
                stack.extend(child for child in item if type(child) is dict or type(child) is list)
        elif isinstance(item, str):
            texts = [item]
        else:
            continue
        joined = "".join(texts)
        if not joined.isascii():
            try:
                joined.encode("utf-8")
            except UnicodeEncodeError:
                return True
    return False
