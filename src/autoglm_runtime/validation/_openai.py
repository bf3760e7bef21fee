"""Text extraction from OpenAI-style JSON bodies, and the OpenAI-shaped error body.

``prompt`` may be a string, a list of strings, a list of token ids or a list of such lists; each
``messages[*].content`` a string or a list of parts, of which ``{"type": "text", "text": ...}`` parts count.
Field names are configurable (dotted for nesting, e.g. ``parameters.max_new_tokens`` for TGI).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from autoglm_runtime.errors import AutoGLMRuntimeError, InvalidRequestError
from autoglm_runtime.validation.context_window import GuardResult, Segment

__all__ = ["ExtractedInput", "OpenAIExtractor", "TextField", "error_body"]

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class TextField:
    """One piece of input and where it sits in the body (``("messages", 0, "content")``)."""

    path: Path
    value: Segment


@dataclass(frozen=True)
class ExtractedInput:
    """The input pieces of one request, the output budget it asks for, and the field to blame on errors."""

    fields: tuple[TextField, ...]
    max_output_tokens: int | None
    param: str | None

    @property
    def segments(self) -> list[Segment]:
        """The pieces in body order, as a guard counts them."""
        return [field.value for field in self.fields]


def _is_ids(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in value)


def _dotted(body: dict[str, Any], name: str) -> Any:
    value: Any = body
    for part in name.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _shape_error(where: str, expected: str, value: Any, param: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"{where} must be {expected}, got {type(value).__name__}: fix the request body", param=param
    )


class OpenAIExtractor:
    """Finds the text a model will read in an OpenAI-style request body.

    >>> OpenAIExtractor().extract({"prompt": "hi", "max_tokens": 5}).segments
    ['hi']
    """

    def __init__(
        self,
        *,
        prompt_fields: Sequence[str] = ("prompt",),
        messages_fields: Sequence[str] = ("messages",),
        max_tokens_fields: Sequence[str] = ("max_tokens", "max_completion_tokens", "max_new_tokens"),
    ) -> None:
        self.prompt_fields = tuple(prompt_fields)
        self.messages_fields = tuple(messages_fields)
        self.max_tokens_fields = tuple(max_tokens_fields)

    def extract(self, body: Any) -> ExtractedInput:
        """The input of ``body``; raises :class:`InvalidRequestError` (E5010) for fields of the wrong shape."""
        if not isinstance(body, dict):
            raise InvalidRequestError(
                f"the request body must be a JSON object, got {type(body).__name__}: send a JSON object"
            )
        fields: list[TextField] = []
        param: str | None = None
        for name in self.prompt_fields:
            value = _dotted(body, name)
            if value is not None:
                param = param or name
                fields.extend(self._prompt(name, value))
        for name in self.messages_fields:
            value = _dotted(body, name)
            if value is not None:
                param = param or name
                fields.extend(self._messages(name, value))
        return ExtractedInput(tuple(fields), self._max_tokens(body), param)

    def _prompt(self, name: str, value: Any) -> list[TextField]:
        base: Path = tuple(name.split("."))
        if isinstance(value, str):
            return [TextField(base, value)]
        if _is_ids(value) and value:
            return [TextField(base, tuple(value))]
        if isinstance(value, list):
            out: list[TextField] = []
            for index, item in enumerate(value):
                if isinstance(item, str):
                    out.append(TextField((*base, index), item))
                elif _is_ids(item):
                    out.append(TextField((*base, index), tuple(item)))
                else:
                    where = f"{name}[{index}]"
                    raise _shape_error(where, "a string or a list of token ids", item, name)
            return out
        raise _shape_error(name, "a string, a list of strings or a list of token ids", value, name)

    def _messages(self, name: str, value: Any) -> list[TextField]:
        base: Path = tuple(name.split("."))
        if not isinstance(value, list):
            raise _shape_error(name, "a list of messages", value, name)
        out: list[TextField] = []
        for index, message in enumerate(value):
            if not isinstance(message, dict):
                raise _shape_error(f"{name}[{index}]", "an object", message, name)
            content = message.get("content")
            if content is None:
                continue
            if isinstance(content, str):
                out.append(TextField((*base, index, "content"), content))
                continue
            if not isinstance(content, list):
                where = f"{name}[{index}].content"
                raise _shape_error(where, "a string or a list of content parts", content, name)
            for part_index, part in enumerate(content):
                if isinstance(part, dict) and part.get("type") == "text":
                    text = part.get("text")
                    if not isinstance(text, str):
                        where = f"{name}[{index}].content[{part_index}].text"
                        raise _shape_error(where, "a string", text, name)
                    out.append(TextField((*base, index, "content", part_index, "text"), text))
        return out

    def _max_tokens(self, body: dict[str, Any]) -> int | None:
        for name in self.max_tokens_fields:
            value = _dotted(body, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidRequestError(
                    f"{name} must be a non-negative integer, got {value!r:.40}: fix the request body", param=name
                )
            return value
        return None

    def apply(self, body: Any, extracted: ExtractedInput, result: GuardResult) -> Any:
        """``body`` (changed in place) with each input piece replaced by the guard's possibly truncated one."""
        for field, segment in zip(extracted.fields, result.segments, strict=True):
            if segment == field.value:
                continue
            target: Any = body
            for key in field.path[:-1]:
                target = target[key]
            target[field.path[-1]] = list(segment) if isinstance(segment, tuple) else segment
        return body


def error_body(exc: AutoGLMRuntimeError) -> dict[str, Any]:
    """The OpenAI error shape carrying our code: ``{"error": {"message", "type", "param", "code"}}``."""
    return {
        "error": {
            "message": exc.message,
            "type": "invalid_request_error",
            "param": getattr(exc, "param", None),
            "code": exc.code,
        }
    }
