"""The text a chat request's messages carry, and where each piece sits in the body.

Every message's text is read: a string ``content``, its ``text``, ``input_text``, ``output_text`` and untyped parts
with ``text``, ``refusal`` and ``thinking`` parts, a ``tool_reference`` part's ``name``, ``reasoning_content`` and
``reasoning``, and its tool calls (as the JSON the template writes). Parts of a kind that carries no text (images,
audio, files, their embeddings) are skipped; a part of an unknown kind that carries text is rejected with E5010
rather than left uncounted. System and developer messages, an assistant's tool calls with the results that answer
them, and tool reference names are pinned: counted, never cut apart.

Every message needs a string ``role``, as both OpenAI and vLLM require (vLLM's ``CustomChatCompletionMessageParam``
has ``role: Required[str]``). Any string is taken by default, as vLLM takes it ("custom roles", left to the chat
template, such as GLM's ``observation``); a list of roles (OpenAI's: :data:`OPENAI_ROLES`) restricts them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from autoglm_runtime.errors import InvalidRequestError
from autoglm_runtime.validation._conversation import untyped_kind
from autoglm_runtime.validation.request import Chat, Segment

__all__ = [
    "OPENAI_ROLES",
    "Path",
    "TextField",
    "check_roles",
    "check_tool_calls",
    "read_messages",
    "shape_error",
    "too_many",
]

Path = tuple[str | int, ...]

#: The roles OpenAI's chat API takes, in the order its "Supported values are: ..." error lists them.
OPENAI_ROLES = ("system", "assistant", "user", "function", "tool", "developer")
#: How many messages without a valid role one error names before it just counts the rest.
_NAMED_PROBLEMS = 5
_JSON_TYPES = {bool: "a boolean", int: "an integer", float: "a decimal", list: "an array", dict: "an object"}

_TEXT_PARTS = frozenset({"text", "input_text", "output_text"})
#: Media parts (vLLM's, with the embeddings it takes under --enable-mm-embeds, and OpenAI's): no text to count.
_NO_TEXT_PARTS = frozenset(
    {
        *("image_url", "input_image", "image", "image_pil", "image_embeds"),
        *("input_audio", "audio", "audio_url", "audio_embeds"),
        *("file", "input_file", "video", "video_url"),
    }
)
_PINNED_ROLES = frozenset({"system", "developer"})
_MESSAGE_TEXT = ("reasoning_content", "reasoning")
_MESSAGE_JSON = ("tool_calls", "function_call")
_RESULT_ROLES = frozenset({"tool", "function"})
_CONTENT: tuple[str | int, ...] = ("content",)


class TextField(NamedTuple):
    """One piece of input and where it sits in the body (``("messages", 0, "content")``)."""

    path: Path
    value: Segment


def shape_error(where: str, expected: str, value: Any) -> InvalidRequestError:
    """E5010 for a value of the wrong shape; ``param`` names the element at fault (``messages[0].content``), as
    OpenAI's API does and as the guard's other errors on the same element do."""
    return InvalidRequestError(
        f"{where} must be {expected}, got {type(value).__name__}: fix the request body", param=where
    )


def too_many(what: str, count: int, limit: int, *, option: str, param: str, advice: str) -> InvalidRequestError:
    """E5010 for a request with more ``what`` than the server's ``option`` takes, worded for the client, who cannot
    change the limit (the setting is named for the operator reading the same words in the log)."""
    return InvalidRequestError(
        f"the request has {count} {what}, more than the {limit} this server takes in one request: send at most "
        f"{limit} {what}{advice} (the limit is the server's {option} setting)",
        param=param,
    )


def read_messages(  # noqa: PLR0912  (one branch per message shape, kept flat on the hot path)
    name: str,
    value: Any,
    fields: list[TextField],
    pinned: set[int],
    *,
    max_messages: int,
    max_parts: int,
    roles: Sequence[str] | None = None,
) -> Chat:
    """The chat of the messages field ``name`` (``value``): each text the model reads is appended to ``fields``
    (where it sits, and the text), the indexes of those never truncated added to ``pinned``; E5010 for a wrong
    shape, a message whose role is missing, not a string or not one of ``roles`` (any string for ``None``), or
    past ``max_messages`` messages or ``max_parts`` content parts.
    """
    base: Path = tuple(name.split("."))
    if not isinstance(value, list):
        raise shape_error(name, "a list of messages", value)
    if len(value) > max_messages:
        raise too_many(
            "messages", len(value), max_messages, option="max_messages", param=name, advice=", dropping older turns"
        )
    check_roles(name, value, roles)
    turns: list[int] = [-1] * len(fields)
    places: list[Path] = [()] * len(fields)
    parts_seen = 0
    answering = False  # the messages so far end with an assistant's tool calls and their results
    for index, message in enumerate(value):
        if not isinstance(message, dict):
            raise shape_error(f"{name}[{index}]", "an object", message)
        content = message.get("content")
        found: list[tuple[Path, Segment]]
        if isinstance(content, str):
            found = [(_CONTENT, content)]
        elif content is None:
            found = []
        elif isinstance(content, list):
            parts_seen += len(content)
            if parts_seen > max_parts:
                raise too_many(
                    "content parts",
                    parts_seen,
                    max_parts,
                    option="max_parts",
                    param=name,
                    advice=" (counted over all messages), merging text parts or dropping older turns",
                )
            found = []
            for part_index, part in enumerate(content):
                place = _part(name, index, part_index, part)
                if place is not None:
                    found.append((("content", part_index, *place), _text_at(part, place)))
        else:
            raise shape_error(f"{name}[{index}].content", "a string or a list of content parts", content)
        # Any key besides role and content may carry text the model reads (tool_calls often come without content).
        extra = len(message) > ("role" in message) + ("content" in message)
        if extra:
            found.extend(((key,), message[key]) for key in _MESSAGE_TEXT if isinstance(message.get(key), str))
        role = message.get("role")
        if extra and role == "assistant":
            _check_calls(f"{name}[{index}].tool_calls", message.get("tool_calls"))
        # A tool result stays with the call it answers (pinned below): dropping one alone breaks the chat.
        keep = role in _PINNED_ROLES or (answering and role in _RESULT_ROLES)
        answering = (extra and role == "assistant" and any(message.get(key) for key in _MESSAGE_JSON)) or (
            answering and role in _RESULT_ROLES
        )
        for place, text in found:
            if keep or place[-1:] == ("name",):  # (a tool reference's name is not cut: it names a tool)
                pinned.add(len(fields))
            fields.append(TextField((*base, index, *place), text))
            turns.append(index)
            places.append(place)
        if extra:
            for key in _MESSAGE_JSON:
                if message.get(key) is not None:
                    # Counted as the JSON the template writes; pinned, so a cut never leaves broken JSON behind.
                    pinned.add(len(fields))
                    fields.append(TextField((*base, index, key), json.dumps(message[key], ensure_ascii=False)))
                    turns.append(index)
                    places.append((key,))
    return Chat(tuple(value), tuple(turns), tuple(places))


def check_roles(name: str, messages: Sequence[Any], roles: Sequence[str] | None) -> None:
    """E5010 naming every message of ``messages`` (the field ``name``) whose role is missing, not a string, or not
    one of ``roles`` (any string for ``None``), with OpenAI's words for the first; messages that are not objects
    are left to the shape check."""
    allowed = None if roles is None else frozenset(roles)
    problems: list[tuple[int, str, str]] = []  # (index, what is wrong, OpenAI's words)
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            continue
        role = message.get("role")
        if type(role) is str and (allowed is None or role in allowed):
            continue
        where = f"{name}[{index}].role"
        if "role" not in message:
            problems.append((index, "is missing", f"Missing required parameter: '{where}'."))
        elif not isinstance(role, str):
            kind = "null" if role is None else _JSON_TYPES.get(type(role), type(role).__name__)
            problems.append(
                (
                    index,
                    f"is {kind}, not a string",
                    f"Invalid type for '{where}': expected a string, but got {kind} instead.",
                )
            )
        else:
            assert roles is not None
            problems.append(
                (
                    index,
                    f"is {role[:40]!r}, not a role the server takes",
                    f"Invalid value: {role[:40]!r}. Supported values are: {_listed(roles)}.",
                )
            )
    if not problems:
        return
    first, what, openai = problems[0]
    message = f'{name}[{first}].role {what} (OpenAI: "{openai}")'
    if len(problems) > 1:
        others = [f"{name}[{index}].role {what}" for index, what, _ in problems[1 : _NAMED_PROBLEMS + 1]]
        more = len(problems) - 1 - len(others)
        message += "; " + ", ".join(others) + (f", and {more} more messages have no valid role" if more else "")
    advice = " (a string)" if roles is None else f", one of {_listed(roles, 'or')}"
    raise InvalidRequestError(f"{message}: give every message a role{advice}", param=f"{name}[{first}].role")


def _check_calls(where: str, calls: Any) -> None:
    # vLLM iterates an assistant's tool_calls (pydantic's Iterable): a call object alone, text or a number is a 400
    # there; None, an empty "" or {} lists no call.
    if isinstance(calls, list):
        check_tool_calls(where, calls)
    elif calls is not None and not (isinstance(calls, str | dict) and not calls):
        raise shape_error(where, "a list of tool calls", calls)


def check_tool_calls(where: str, calls: list[Any]) -> None:
    """E5010 for an assistant's tool call vLLM refuses with a 400, or cannot hand to a chat template.

    vLLM's chat parser lists an assistant's ``tool_calls`` (``_parse_chat_message_content``), which validates each
    against openai's ``ChatCompletionMessageToolCallParam``: an object with a string ``id``, ``"type":
    "function"`` and a ``function`` object holding a string ``name`` and string ``arguments`` (a pydantic
    ``ValidationError``, answered 400). So a call that is not an object with a ``function`` object, whose ``type``
    is missing or not ``"function"``, or whose ``id``, ``function.name`` or ``function.arguments`` is missing or
    not a string (``arguments`` as an object, not JSON text) is refused here too, ``param`` naming the field. Text
    ``arguments`` are never refused, JSON or not: vLLM's ``_postprocess_messages`` gives the template ``{}`` for
    text that is not a JSON object, so that a malformed call in a conversation's history does not fail every later
    turn."""
    for number, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            shown = call if not isinstance(call, dict) else function
            raise InvalidRequestError(
                f"{where}[{number}] must be an object with a 'function' object (its name and arguments), got "
                f"{type(shown).__name__}{'' if isinstance(call, dict) else ' as the call'}: fix the request body",
                param=f"{where}[{number}]",
            )
        kind = call.get("type")
        if kind != "function":
            what = "is missing" if "type" not in call else f"is {kind!r:.40}, not 'function'"
            raise InvalidRequestError(
                f"{where}[{number}].type {what}: the server takes only function tool calls in a conversation, as "
                'vLLM does; send "type": "function"',
                param=f"{where}[{number}].type",
            )
        for field, holder, key, advice in (
            ("id", call, "id", "the call's id, as the model's reply gave it"),
            ("function.name", function, "name", "the function's name"),
            ("function.arguments", function, "arguments", 'its arguments as JSON text, such as \'{"city": "Paris"}\''),
        ):
            value = holder.get(key)
            if isinstance(value, str):
                continue
            what = "is missing" if key not in holder else f"must be a string, got {type(value).__name__}"
            raise InvalidRequestError(
                f"{where}[{number}].{field} {what}: vLLM refuses such a tool call in a conversation, as OpenAI "
                f"types it; send {advice}",
                param=f"{where}[{number}].{field}",
            )


def _listed(names: Sequence[str], last: str = "and") -> str:
    """``'a', 'b', and 'c'``, as OpenAI lists supported values."""
    quoted = [repr(item) for item in names]
    if len(quoted) < 3:
        return f" {last} ".join(quoted)
    return f"{', '.join(quoted[:-1])}, {last} {quoted[-1]}"


def _part(name: str, index: int, part_index: int, part: Any) -> Path | None:
    """Where the text of one content part is (``("text",)``), or ``None`` for a part without text."""
    where = f"{name}[{index}].content[{part_index}]"
    if isinstance(part, str):
        return ()
    if not isinstance(part, dict):
        raise shape_error(where, "an object", part)
    kind = part.get("type")
    if kind is None:
        kind = untyped_kind(part)
    elif not isinstance(kind, str):
        # A list or an object here cannot even be looked up among the kinds (unhashable): a 500 before.
        raise shape_error(f"{where}.type", "a string", kind)
    if kind in _TEXT_PARTS:
        if not isinstance(part.get("text"), str):
            raise shape_error(f"{where}.text", "a string", part.get("text"))
        return ("text",)
    if kind in ("refusal", "thinking") and isinstance(part.get(kind), str):
        return (kind,)
    if kind in _NO_TEXT_PARTS:
        return None
    if kind == "tool_reference" and isinstance(part.get("name"), str):
        return ("name",)  # vLLM gives a string template the name as text; an openai one the reference to expand
    carried = [key for key, item in part.items() if key != "type" and isinstance(item, str)]
    if carried:
        raise InvalidRequestError(
            f"{where} is a content part of type {kind!r} carrying text in {carried[0]!r}, which the guard cannot "
            "count: send it as a {'type': 'text', 'text': ...} part",
            param=where,
        )
    return None


def _text_at(part: Any, place: Path) -> str:
    value = part
    for key in place:
        value = value[key]
    assert isinstance(value, str)
    return value
