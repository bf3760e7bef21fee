"""The messages a chat template sees, as vLLM's OpenAI server hands them over, and the content format it picks.

vLLM never gives a template the request's messages as they came. It keeps only the keys a template uses, turns every
``content`` into one shape and parses tool call arguments (``vllm/entrypoints/chat_utils.py``,
``parse_chat_messages``):

- the *content format* is read off the template: ``"openai"`` when the template loops over a message's ``content``
  (``{% for part in message['content'] %}``), else ``"string"``;
- in the string format a message's content is its non-empty text parts joined with ``"\\n"`` (``""`` for none,
  also for a null content); in the openai format it is a list of ``{"type": "text", "text": ...}`` and
  ``{"type": "image"}`` (``"audio"``, ``"video"``) parts;
- an assistant's ``tool_calls`` are kept with each call's JSON ``arguments`` parsed into an object (``{}`` when
  empty and for text that is not a JSON object), an empty list is dropped; its ``reasoning`` (or
  ``reasoning_content``) is passed under both names; a tool result keeps its ``tool_call_id`` and, when all its
  parts are text, a string content;
- ``name`` and ``task`` (strings: a participant's name, a model's task marker) are kept, whatever the role; a
  developer message keeps its ``tools``; any other key is dropped;
- the request's ``tools`` reach the template as vLLM's pydantic models dump them (``ChatCompletionToolsParam``,
  ``FunctionDefinition``; ``tool_dicts``): ``type`` first, then ``function`` with its ``name``, ``description``
  and ``parameters`` (``null`` when not sent) and a set ``defer_loading`` (the tool's own when the function sets
  none) before its other keys; a tool's keys besides those two are dropped, but a set ``defer_loading``. A tool
  vLLM's models would refuse is left as it came.

A template that printed a content list would otherwise count the parts' Python text (a base64 image URL included),
and one that printed a null content would count ``None``: neither is what the model reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

from autoglm_runtime.errors import InvalidRequestError
from autoglm_runtime.validation._lax import lax_bool
from autoglm_runtime.validation.request import Chat

__all__ = [
    "ContentFormat",
    "content_format",
    "conversation",
    "not_boolean",
    "template_options",
    "tool_dicts",
    "untyped_kind",
    "with_options",
]

ContentFormat = Literal["string", "openai"]

_TEXT_KEYS = {"text": "text", "input_text": "text", "output_text": "text", "refusal": "refusal", "thinking": "thinking"}
_MODALITIES = {
    "image_url": "image",
    "input_image": "image",
    "image_pil": "image",
    "image_embeds": "image",
    "audio_url": "audio",
    "input_audio": "audio",
    "audio_embeds": "audio",
    "video_url": "video",
}


def content_format(parsed: Any) -> ContentFormat:
    """``"openai"`` when the parsed template (a ``jinja2.nodes.Template``) loops over a message's content."""
    from jinja2 import nodes

    def names_of(root: Any, name: str) -> set[str]:
        """``name`` and the variables assigned from it (``{% set loop_messages = messages[1:] %}``)."""
        found, pending = {name}, [name]
        while pending:
            current = pending.pop()
            for assign in root.find_all(nodes.Assign):
                target = assign.target
                if isinstance(target, nodes.Name) and target.name not in found and _reads(assign.node, current, None):
                    found.add(target.name)
                    pending.append(target.name)
        return found

    messages = names_of(parsed, "messages")
    items = {
        loop.target.name
        for loop in parsed.find_all(nodes.For)
        if isinstance(loop.target, nodes.Name) and any(_reads(loop.iter, name, None) for name in messages)
    }
    for loop in parsed.find_all(nodes.For):
        if any(_reads(loop.iter, item, "content") for item in items):
            return "openai"
    return "string"


def _reads(node: Any, name: str, key: str | None) -> bool:
    """Whether ``node`` is ``name`` (or ``name[key]`` / ``name.key``), maybe sliced, filtered or tested."""
    from jinja2 import nodes

    while isinstance(node, nodes.Filter | nodes.Test) or (
        isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Slice)
    ):
        if node.node is None:
            return False
        node = node.node
    if key is not None:
        item = isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and node.arg.value == key
        if not (item or (isinstance(node, nodes.Getattr) and node.attr == key)):
            return False
        node = node.node
    return isinstance(node, nodes.Name) and node.ctx == "load" and node.name == name


def _parts(content: Any) -> Iterator[dict[str, Any]]:
    """Each part of ``content`` as ``{"type": "text", "text": ...}``, ``{"type": modality}`` or
    ``{"type": "tool_reference", "name": ...}`` (a deferred tool the template expands); others dropped."""
    if content is None:
        return
    if isinstance(content, str):
        yield {"type": "text", "text": content}
        return
    if not isinstance(content, Sequence):
        return
    for part in content:
        if isinstance(part, str):
            yield {"type": "text", "text": part}
            continue
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        if kind is None:
            kind = untyped_kind(part)
        key = _TEXT_KEYS.get(kind) if isinstance(kind, str) else None
        if key is not None:
            if isinstance(part.get(key), str):
                yield {"type": "text", "text": part[key]}
        elif isinstance(kind, str) and kind in _MODALITIES:
            yield {"type": _MODALITIES[kind]}
        elif kind == "tool_reference" and isinstance(part.get("name"), str):
            yield {"type": "tool_reference", "name": part["name"]}


def untyped_kind(part: Mapping[str, Any]) -> str | None:
    """The kind vLLM reads a content part without a ``type`` as: by its keys (``{"image_url": ...}``)."""
    if "text" in part:
        return "text"
    return next((kind for kind in (*_MODALITIES, "tool_reference") if kind in part), None)


def _text(part: Mapping[str, Any]) -> str | None:
    """The text a string-format template reads for one of :func:`_parts`' parts (a tool reference's name)."""
    return part.get("text") if part["type"] == "text" else part.get("name")


def _arguments(value: Any) -> Any:
    # vLLM (_postprocess_messages): empty arguments become {}, JSON text is parsed, and what is not a JSON object
    # becomes {} (refusing text that is not JSON would fail every later turn of a conversation that holds it).
    # Arguments that are not text never get here: vLLM refuses them (check_tool_calls).
    if not value:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def _parsed_call(call: Any) -> Any:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict):
        return call
    return {**call, "function": {**function, "arguments": _arguments(function.get("arguments"))}}


def conversation(messages: Sequence[Mapping[str, Any]], form: ContentFormat) -> list[dict[str, Any]]:
    """``messages`` as vLLM hands them to a chat template in the content format ``form`` (see the module)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        parts = list(_parts(message.get("content")))
        # vLLM keeps a string template's parts only when they parse to some text: an empty one adds no line break.
        content: Any = parts if form == "openai" else "\n".join(t for p in parts if (t := _text(p)))
        item: dict[str, Any] = {"role": role, "content": content}
        if role == "assistant":
            calls = message.get("tool_calls")
            if isinstance(calls, list) and calls:
                # New dicts: the request's own calls keep their JSON text (a truncated body is forwarded as it is).
                item["tool_calls"] = [_parsed_call(call) for call in calls]
            reasoning = message.get("reasoning")
            if reasoning is None:
                reasoning = message.get("reasoning_content")
            if reasoning is not None:
                item["reasoning"] = item["reasoning_content"] = reasoning
        elif role == "tool":
            if "tool_call_id" in message:
                item["tool_call_id"] = message["tool_call_id"]
            if form == "openai" and all(p["type"] == "text" for p in parts):
                item["content"] = "\n".join(p["text"] for p in parts)
        if isinstance(message.get("name"), str):
            item["name"] = message["name"]
        if isinstance(message.get("task"), str):  # (a model's task marker: vLLM passes it on for DeepSeek V4)
            item["task"] = message["task"]
        if role == "developer":
            item["tools"] = message.get("tools")
        out.append(item)
    return out


_FUNCTION_FIELDS = ("name", "description", "parameters", "defer_loading")
_REFUSED = object()


def tool_dicts(tools: Sequence[Any]) -> list[Any]:
    """``tools`` as vLLM hands them to a chat template: each one's ``model_dump()`` (see the module)."""
    out: list[Any] = []
    for tool in tools:
        dumped = _dumped_tool(tool)
        out.append(tool if dumped is None else dumped)  # None: vLLM refuses the request, nothing to count as it would
    return out


def _dumped_tool(tool: Any) -> dict[str, Any] | None:
    function = tool.get("function") if isinstance(tool, Mapping) else None
    if not (
        isinstance(function, Mapping)
        and tool.get("type", "function") == "function"
        and isinstance(function.get("name"), str)
        and isinstance(function.get("description"), str | None)
        and isinstance(function.get("parameters"), dict | None)
    ):
        return None
    outer, inner = _defer_loading(tool), _defer_loading(function)
    if outer is _REFUSED or inner is _REFUSED:
        return None
    # ChatCompletionToolsParam hands its defer_loading down to a function that sets none; both are dumped unless
    # None, the function's among its fields (before its other keys).
    inner = outer if inner is None else inner
    dumped = {name: function.get(name) for name in _FUNCTION_FIELDS[:3]}
    if inner is not None:
        dumped["defer_loading"] = inner
    dumped.update((key, value) for key, value in function.items() if key not in _FUNCTION_FIELDS)
    item: dict[str, Any] = {"type": "function", "function": dumped}
    if outer is not None:
        item["defer_loading"] = outer
    return item


def _defer_loading(holder: Mapping[str, Any]) -> Any:
    """``holder``'s ``defer_loading`` as vLLM's ``bool | None`` field reads it, ``_REFUSED`` for what it refuses."""
    value = holder.get("defer_loading")
    if value is None:
        return None
    read = lax_bool(value)
    return _REFUSED if read is None else read


#: Chat request fields vLLM passes to the template, with the types it accepts.
_OPTION_FIELDS: dict[str, tuple[type, ...]] = {
    "add_generation_prompt": (bool,),
    "continue_final_message": (bool,),
    "documents": (list,),
    "reasoning_effort": (str,),
}
_RESERVED = ("messages", "tools", "chat_template", "tokenize")
_REQUEST_ONLY = ("add_generation_prompt", "continue_final_message")


def template_options(body: Mapping[str, Any], *, generation_prompt: bool = True) -> dict[str, Any]:
    """The template variables a chat request sets, merged as vLLM merges them.

    ``chat_template_kwargs`` first (less ``add_generation_prompt`` and ``continue_final_message``: vLLM always
    overrides them with the request's own, defaults included), then the request's ``add_generation_prompt``,
    ``continue_final_message``, ``documents`` and ``reasoning_effort`` where sent, and ``enable_thinking`` (false
    for ``reasoning_effort`` ``"none"``) unless the kwargs set it. Booleans are read as vLLM's pydantic models read
    them (``"no"`` and ``0`` are false). A field of the wrong type is E5010, as is a kwarg naming the messages, the
    tools or the template itself. ``generation_prompt`` is ``add_generation_prompt``'s default: true for a chat
    completion, false for an embedding's chat (vLLM's ``EmbeddingChatRequest``).

    >>> template_options({"chat_template_kwargs": {"enable_thinking": False}, "add_generation_prompt": False})
    {'enable_thinking': False, 'add_generation_prompt': False}
    """
    kwargs = body.get("chat_template_kwargs")
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict):
        raise InvalidRequestError(
            f"chat_template_kwargs must be an object, got {type(kwargs).__name__}: fix the request body",
            param="chat_template_kwargs",
        )
    for name in _RESERVED:
        if name in kwargs:
            raise InvalidRequestError(
                f"chat_template_kwargs may not set {name!r}: send it as the request's own field, or not at all",
                param="chat_template_kwargs",
            )
    # The request's own add_generation_prompt and continue_final_message always have a value in vLLM (true and false
    # by default) and are merged over the kwargs: the kwargs never set them.
    options = {name: value for name, value in kwargs.items() if name not in _REQUEST_ONLY}
    # (an embedding's chat is rendered without the generation prompt unless the request sends it: set below)
    options.update({} if generation_prompt else {"add_generation_prompt": False})
    for name, kinds in _OPTION_FIELDS.items():
        value = body.get(name)
        if value is None:
            continue
        if kinds == (bool,):
            # vLLM's pydantic models read "no", "false", 0 as false (lax mode): so does the template.
            flag = lax_bool(value)
            if flag is None:
                raise not_boolean(name, value)
            options[name] = flag
        elif value != "auto":
            if not isinstance(value, kinds):
                raise InvalidRequestError(
                    f"{name} must be a {kinds[0].__name__}, got {type(value).__name__}: fix the request body",
                    param=name,
                )
            _SHAPE_CHECKS.get(name, _no_check)(value)
            options[name] = value
    effort = body.get("reasoning_effort")
    if isinstance(effort, str) and "enable_thinking" not in kwargs:
        options["enable_thinking"] = effort != "none"
    if options.get("continue_final_message") or body.get("continue_final_message"):
        _check_continue(body, options)
    return options


def _check_documents(documents: list[Any]) -> None:
    """E5010 unless every document is an object of strings, as vLLM types them (``list[dict[str, str]]``)."""
    for index, document in enumerate(documents):
        where = f"documents[{index}]"
        if not isinstance(document, dict):
            raise InvalidRequestError(
                f"{where} must be an object of strings (such as title and text), got {type(document).__name__}: fix "
                "the request body",
                param=where,
            )
        for key, text in document.items():
            if not isinstance(text, str):
                raise InvalidRequestError(
                    f"{where}.{key} must be a string (vLLM takes documents of strings only), got "
                    f"{type(text).__name__}: fix the request body",
                    param=f"{where}.{key}",
                )


def _no_check(value: Any) -> None:
    return None


#: What vLLM's request model checks inside a template variable of the right type.
_SHAPE_CHECKS: dict[str, Callable[[Any], None]] = {"documents": _check_documents}


def _check_continue(body: Mapping[str, Any], options: Mapping[str, Any]) -> None:
    """Refuse what vLLM refuses with ``continue_final_message``.

    vLLM's request model refuses both flags when both raw values are true in Python (``"no"`` is a true string
    there, before pydantic reads it); with the flag read true and ``add_generation_prompt`` true, sent or by
    default, transformers' ``apply_chat_template`` refuses the pair.
    """
    raw = bool(body.get("continue_final_message")) and bool(body.get("add_generation_prompt"))
    if raw or (options.get("continue_final_message") and options.get("add_generation_prompt", True)):
        raise InvalidRequestError(
            "Cannot set both `continue_final_message` and `add_generation_prompt` to True (add_generation_prompt is "
            "true unless the request sends false): send add_generation_prompt false to continue the final message",
            param="continue_final_message",
        )


def not_boolean(name: str, value: Any) -> InvalidRequestError:
    return InvalidRequestError(
        f"{name} must be a boolean (true/false; vLLM also reads 'yes'/'no', 'on'/'off', 1/0), got {value!r:.40}: fix "
        "the request body",
        param=name,
    )


def with_options(chat: Chat, body: dict[str, Any], *, generation_prompt: bool = True) -> Chat:
    """``chat`` with the request's template variables and ``add_special_tokens`` (vLLM's chat fields);
    ``generation_prompt`` is ``add_generation_prompt``'s default (see :func:`template_options`)."""
    sent = body.get("add_special_tokens", False)
    special = lax_bool(sent)
    if special is None:
        raise not_boolean("add_special_tokens", sent)
    options = template_options(body, generation_prompt=generation_prompt)
    if options.get("continue_final_message") and not chat.messages:
        # transformers' apply_chat_template refuses it, and so vLLM.
        raise InvalidRequestError(
            "continue_final_message is set but the conversation is empty: send the message to continue",
            param="continue_final_message",
        )
    return replace(chat, options=options, add_special_tokens=special)
