"""A chat's messages are taken and handed to the template as vLLM's chat parser takes and hands them over.

References (vllm-project/vllm, vllm/entrypoints/chat_utils.py): ``ChatCompletionMessageParam`` (openai's message
params, ``CustomChatCompletionMessageParam`` with ``task: str | None``, harmony's ``Message``), read by pydantic in
the request model; ``_parse_chat_message_content`` (an assistant's ``tool_calls`` listed, which validates each call
against openai's ``ChatCompletionMessageToolCallUnionParam``; ``name`` and ``task`` copied when strings). A call
that fails that validation raises pydantic's ``ValidationError``, a ``ValueError``: vLLM answers it with a 400.
The models below copy vLLM's over the installed openai types.
"""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.chat import ChatCompletionFunctionToolParam, ChatCompletionMessageToolCallParam
from openai.types.chat import ChatCompletionMessageParam as OpenAIMessage
from pydantic import TypeAdapter, ValidationError
from typing_extensions import Required, TypedDict

from autoglm_runtime.errors import InvalidRequestError
from autoglm_runtime.validation import ChatTemplate, OpenAIExtractor


class _VllmCustomMessage(TypedDict, total=False):
    role: Required[str]
    content: str | list[Any]
    name: str
    tool_call_id: str | None
    tool_calls: list[ChatCompletionMessageToolCallParam] | None
    reasoning: str | None
    tools: list[ChatCompletionFunctionToolParam] | None
    task: str | None


_VLLM_MESSAGE: TypeAdapter[Any] = TypeAdapter(OpenAIMessage | _VllmCustomMessage)


def vllm_takes(message: dict[str, Any]) -> bool:
    """Whether vLLM's server gets past this message: the request model's validation, then the chat parser's
    listing of an assistant's tool calls (lazily validated)."""
    try:
        parsed = _VLLM_MESSAGE.validate_python(message)
        if parsed["role"] == "assistant" and parsed.get("tool_calls") is not None:
            list(parsed["tool_calls"])
    except ValidationError:
        return False
    return True


FUNCTION = {"name": "look", "arguments": "{}"}


@pytest.mark.parametrize(
    ("kind", "what"),
    [
        ("function", None),
        ("custom", "is 'custom', not 'function'"),
        ("Function", "is 'Function', not 'function'"),
        ("tool", "is 'tool', not 'function'"),
        (None, "is None, not 'function'"),
        (5, "is 5, not 'function'"),
        ("missing", "is missing"),
    ],
)
def test_a_tool_call_whose_type_is_not_function_is_refused_as_vllm_refuses_it(kind: Any, what: str | None) -> None:
    # Before: passed through to the backend, which answers 400.
    call: dict[str, Any] = {"id": "c1", "function": FUNCTION}
    if kind != "missing":
        call["type"] = kind
    message = {"role": "assistant", "content": None, "tool_calls": [{**call, "type": "function"}, call]}
    assert vllm_takes(message) is (what is None)
    body = {"messages": [{"role": "user", "content": "hi"}, message]}
    if what is None:
        assert OpenAIExtractor().extract(body).chat is not None
        return
    with pytest.raises(InvalidRequestError) as info:
        OpenAIExtractor().extract(body)
    assert (info.value.code, info.value.param, info.value.message) == (
        "E5010",
        "messages[1].tool_calls[1].type",
        f"messages[1].tool_calls[1].type {what}: the server takes only function tool calls in a conversation, as "
        'vLLM does; send "type": "function"',
    )


_CALL: dict[str, Any] = {"id": "c1", "type": "function", "function": FUNCTION}


@pytest.mark.parametrize(
    ("call", "param", "what", "advice"),
    [
        (_CALL, None, None, None),
        ({**_CALL, "function": {**FUNCTION, "arguments": "not JSON"}}, None, None, None),
        ({**_CALL, "function": {**FUNCTION, "arguments": ""}}, None, None, None),
        ({"type": "function", "function": FUNCTION}, "id", "is missing", "the call's id, as the model's reply gave it"),
        ({**_CALL, "id": 7}, "id", "must be a string, got int", "the call's id, as the model's reply gave it"),
        ({**_CALL, "id": None}, "id", "must be a string, got NoneType", "the call's id, as the model's reply gave it"),
        ({**_CALL, "function": {"arguments": "{}"}}, "function.name", "is missing", "the function's name"),
        ({**_CALL, "function": {"name": 5, "arguments": "{}"}}, "function.name", "must be a string, got int", None),
        ({**_CALL, "function": {"name": "look"}}, "function.arguments", "is missing", None),
        ({**_CALL, "function": {"name": "look", "arguments": {"city": "Paris"}}}, "function.arguments", "dict", None),
        ({**_CALL, "function": {"name": "look", "arguments": {}}}, "function.arguments", "dict", None),
        ({**_CALL, "function": {"name": "look", "arguments": [1]}}, "function.arguments", "list", None),
        ({**_CALL, "function": {"name": "look", "arguments": None}}, "function.arguments", "NoneType", None),
        ({**_CALL, "function": {"name": "look", "arguments": 5}}, "function.arguments", "int", None),
        ({**_CALL, "function": {"name": "look", "arguments": True}}, "function.arguments", "bool", None),
    ],
)
def test_a_tool_call_vllm_refuses_is_refused_naming_its_field(
    call: dict[str, Any], param: str | None, what: str | None, advice: str | None
) -> None:
    # vLLM validates each listed call against openai's ChatCompletionMessageToolCallParam (id, function.name and
    # function.arguments required strings) and answers a 400; before, the guard passed such calls (and counted an
    # object's arguments as if vLLM parsed them), and its docs said vLLM took them.
    message = {"role": "assistant", "content": None, "tool_calls": [_CALL, call]}
    assert vllm_takes(message) is (param is None)
    body = {"messages": [{"role": "user", "content": "hi"}, message]}
    if param is None:
        assert OpenAIExtractor().extract(body).chat is not None
        return
    with pytest.raises(InvalidRequestError) as info:
        OpenAIExtractor().extract(body)
    assert (info.value.code, info.value.param) == ("E5010", f"messages[1].tool_calls[1].{param}")
    if what in ("dict", "list", "NoneType", "int", "bool"):
        what = f"must be a string, got {what}"
    assert info.value.message.startswith(
        f"messages[1].tool_calls[1].{param} {what}: vLLM refuses such a tool call in a conversation, as OpenAI "
        "types it; send "
    )
    if advice is not None:
        assert info.value.message.endswith(f"; send {advice}")
    if param == "function.arguments":
        assert info.value.message.endswith("""; send its arguments as JSON text, such as '{"city": "Paris"}'""")


TEMPLATE = ChatTemplate(
    "{% for m in messages %}<{{ m['role'] }}{% for key in m if key not in ('role', 'content') %} {{ key }}="
    "{{ m[key] }}{% endfor %}>{{ m['content'] }}{% endfor %}"
)


@pytest.mark.parametrize("role", ["user", "assistant", "system", "observation"])
def test_a_message_task_reaches_the_template_as_vllm_hands_it_over(role: str) -> None:
    # vLLM copies a string task (DeepSeek V4's task marker) onto the message it gives the template, whatever the
    # role; a task of another type and keys it does not know are dropped. Before, the guard dropped every task, so
    # a template writing it counted fewer tokens than the backend read.
    for message, shown in (
        ({"role": role, "content": "hi", "task": "summarize", "x_note": "dropped"}, " task=summarize"),
        ({"role": role, "content": "hi", "task": 5}, ""),
        ({"role": role, "content": "hi", "task": None}, ""),
    ):
        # (vLLM refuses a task of another type in a custom role's message, whose only model types it as a string;
        # the guard leaves that to the backend.)
        assert vllm_takes(message) is (role != "observation" or message["task"] != 5)
        extracted = OpenAIExtractor().extract({"messages": [message]})
        assert extracted.chat is not None
        rendered = TEMPLATE.render(extracted.chat.messages, options={"add_generation_prompt": False})
        assert rendered == f"<{role}{shown}>hi"


@pytest.mark.parametrize("calls", [{"id": "1", "type": "function", "function": FUNCTION}, "x", 5, 0, True, {"a": 1}])
def test_tool_calls_that_are_not_a_list_are_refused_as_vllm_refuses_them(calls: Any) -> None:
    # Before, anything but a list was passed (and dropped from the conversation): vLLM answers it with a 400.
    message = {"role": "assistant", "content": "hi", "tool_calls": calls}
    assert not vllm_takes(message)
    with pytest.raises(InvalidRequestError) as info:
        OpenAIExtractor().extract({"messages": [message]})
    assert (info.value.code, info.value.param) == ("E5010", "messages[0].tool_calls")
    assert info.value.message.startswith("messages[0].tool_calls must be a list of tool calls, got ")


@pytest.mark.parametrize("calls", [None, [], {}, ""])
def test_tool_calls_listing_no_call_pass_as_vllm_passes_them(calls: Any) -> None:
    message = {"role": "assistant", "content": "hi", "tool_calls": calls}
    assert vllm_takes(message)
    extracted = OpenAIExtractor().extract({"messages": [message]})
    assert extracted.chat is not None
    assert list(extracted.chat.messages) == [message]
