"""A chat request is counted as vLLM's OpenAI server renders it: messages as vLLM hands them to the template (content
parts joined or typed, null content empty, tool call arguments parsed) and the request's own template variables
(add_generation_prompt, continue_final_message, documents, chat_template_kwargs, reasoning_effort,
add_special_tokens). The reference is transformers' apply_chat_template on the messages as vLLM passes them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from tests.validation._helpers import write_chat_model

from autoglm_runtime.errors import ContextWindowExceededError, InvalidRequestError
from autoglm_runtime.validation import ChatTemplate, ContextWindowGuard, HFTokenizer, OpenAIExtractor

TOOLS_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "{% for call in m.tool_calls or [] %}<call>{{ call.function.arguments | tojson }}</call>{% endfor %}"
    "<|im_end|>\n{% endfor %}"
    "{% if documents %}{% for d in documents %}<doc>{{ d.text }}</doc>{% endfor %}{% endif %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)
ARGUMENTS = '{"city":"Paris","days":[1,2,3,4,5,6,7,8,9,10]}'
CHAT = [
    {"role": "user", "content": "hello world"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "look", "arguments": ARGUMENTS}}],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "the quick brown fox"},
]
# What vLLM hands the template for CHAT: a null content is empty, the arguments are an object.
SEEN = [
    CHAT[0],
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "look", "arguments": {"city": "Paris", "days": list(range(1, 11))}},
            }
        ],
    },
    CHAT[2],
]


@pytest.fixture
def model(tmp_path: Path) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    directory = write_chat_model(tmp_path / "model", TOOLS_TEMPLATE)
    return directory, AutoTokenizer.from_pretrained(str(directory))


def judge(directory: Path, body: dict[str, Any], window: int = 4096) -> Any:
    guard = ContextWindowGuard(
        HFTokenizer.from_file(directory / "tokenizer.json"), window, chat_template=ChatTemplate.from_file(directory)
    )
    return guard.judge(OpenAIExtractor().extract(body).guard_input())


def test_tool_call_arguments_are_counted_as_the_object_vllm_renders(model: Any) -> None:
    directory, reference = model
    ids = reference.apply_chat_template(SEEN, tokenize=True, add_generation_prompt=True)["input_ids"]
    result = judge(directory, {"messages": CHAT})
    assert result.prompt == reference.apply_chat_template(SEEN, tokenize=False, add_generation_prompt=True)
    assert '"days": [1, 2, 3' in result.prompt
    assert result.token_ids == (tuple(ids),)
    # The request itself is left as it came (a truncated body is forwarded with the client's JSON text).
    assert CHAT[1]["tool_calls"][0]["function"]["arguments"] == ARGUMENTS
    with pytest.raises(ContextWindowExceededError):
        judge(directory, {"messages": CHAT, "max_tokens": 1}, window=len(ids))


def test_content_parts_reach_a_string_template_as_their_joined_text(model: Any) -> None:
    directory, reference = model
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 50_000}}
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}, image, "world"]}]}
    seen = [{"role": "user", "content": "hello\nworld"}]
    ids = reference.apply_chat_template(seen, tokenize=True, add_generation_prompt=True)["input_ids"]
    result = judge(directory, body, window=len(ids) + 1)  # and one token the model writes
    assert result.token_ids == (tuple(ids),)


@pytest.mark.parametrize(
    ("fields", "kwargs"),
    [
        ({"add_generation_prompt": False}, {"add_generation_prompt": False}),
        (
            {"chat_template_kwargs": {"enable_thinking": False}},
            {"add_generation_prompt": True, "enable_thinking": False},
        ),
        ({"reasoning_effort": "none"}, {"add_generation_prompt": True, "enable_thinking": False}),
        (
            {"documents": [{"title": "a", "text": "one two three"}]},
            {"add_generation_prompt": True, "documents": [{"title": "a", "text": "one two three"}]},
        ),
        (
            {"add_generation_prompt": False, "continue_final_message": True},
            {"add_generation_prompt": False, "continue_final_message": True},
        ),
    ],
    ids=["no-generation-prompt", "thinking-off", "reasoning-effort-none", "documents", "continue-final-message"],
)
def test_the_request_s_template_variables_count(model: Any, fields: dict[str, Any], kwargs: dict[str, Any]) -> None:
    directory, reference = model
    messages = [{"role": "user", "content": "hello world"}, {"role": "assistant", "content": "the quick"}]
    ids = reference.apply_chat_template(messages, tokenize=True, **kwargs)["input_ids"]
    assert judge(directory, {"messages": messages, **fields}).token_ids == (tuple(ids),)


def test_add_special_tokens_adds_the_tokenizer_s_bos_on_top(model: Any) -> None:
    directory, _ = model
    body = {"messages": [{"role": "user", "content": "hello world"}]}
    plain = judge(directory, body).token_ids[0]
    assert judge(directory, {**body, "add_special_tokens": True}).token_ids[0] == (plain[0], *plain)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"add_generation_prompt": "maybe"},
            "add_generation_prompt must be a boolean (true/false; vLLM also reads 'yes'/'no', 'on'/'off', 1/0), got "
            "'maybe': fix the request body",
        ),
        ({"chat_template_kwargs": []}, "chat_template_kwargs must be an object, got list: fix the request body"),
        (
            {"chat_template_kwargs": {"messages": []}},
            "chat_template_kwargs may not set 'messages': send it as the request's own field, or not at all",
        ),
        (
            {"add_special_tokens": 2},
            "add_special_tokens must be a boolean (true/false; vLLM also reads 'yes'/'no', 'on'/'off', 1/0), got 2: "
            "fix the request body",
        ),
        # vLLM types documents list[dict[str, str]] and refuses these; they reached the template before.
        (
            {"documents": ["one two"]},
            "documents[0] must be an object of strings (such as title and text), got str: fix the request body",
        ),
        (
            {"documents": [{"title": "a", "text": "b"}, {"title": "c", "page": 4}]},
            "documents[1].page must be a string (vLLM takes documents of strings only), got int: fix the request body",
        ),
    ],
)
def test_template_variables_of_the_wrong_shape_are_e5010(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        OpenAIExtractor().extract({"messages": [{"role": "user", "content": "hi"}], **fields})
    assert info.value.message == message


@pytest.mark.parametrize(
    ("source", "form"),
    [
        ("{% for m in messages %}{{ m['content'] }}{% endfor %}", "string"),
        ("{% for m in messages %}{% for p in m['content'] %}{{ p.text }}{% endfor %}{% endfor %}", "openai"),
        ("{% for m in messages %}{% for p in m.content | selectattr('text') %}{% endfor %}{% endfor %}", "openai"),
        (
            "{% set rest = messages[1:] %}{% for m in rest %}{% for p in m.content %}{{ p }}{% endfor %}{% endfor %}",
            "openai",
        ),
        ("{% for p in content %}{% endfor %}{% for m in messages %}{{ m.content }}{% endfor %}", "string"),
    ],
)
def test_the_content_format_is_read_off_the_template(source: str, form: str) -> None:
    assert ChatTemplate(source).content_format == form
    assert ChatTemplate(source, content_format="openai").content_format == "openai"


def test_the_client_s_own_private_use_characters_still_count_with_continue_final_message(model: Any) -> None:
    # The guard marks the final message's end with a private-use character; a client sending that character must
    # not get it dropped from the count.
    directory, reference = model
    messages = [{"role": "user", "content": "\U000f0000" * 50}, {"role": "assistant", "content": "the quick"}]
    kwargs = {"add_generation_prompt": False, "continue_final_message": True}
    ids = reference.apply_chat_template(messages, tokenize=True, **kwargs)["input_ids"]
    assert judge(directory, {"messages": messages, **kwargs}).token_ids == (tuple(ids),)


def test_a_continued_final_message_s_trailing_space_counts_as_the_template_trims_it(tmp_path: Path) -> None:
    # A template that trims each message's content drops the final message's trailing whitespace: the prompt ends
    # where its trimmed text ends (transformers cuts there), so a client's trailing newlines do not count.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    trimming = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n{% endfor %}"
    directory = write_chat_model(tmp_path / "model", trimming)
    reference = AutoTokenizer.from_pretrained(str(directory))
    kwargs = {"add_generation_prompt": False, "continue_final_message": True}
    for text in ("the quick \n\n\n", "the quick"):
        messages = [{"role": "user", "content": "hello world"}, {"role": "assistant", "content": text}]
        prompt = reference.apply_chat_template(messages, tokenize=False, **kwargs)
        ids = reference.apply_chat_template(messages, tokenize=True, **kwargs)["input_ids"]
        result = judge(directory, {"messages": messages, **kwargs})
        assert (result.prompt, result.token_ids) == (prompt, (tuple(ids),))


@pytest.mark.parametrize(
    ("fields", "kwargs"),
    [
        ({"chat_template_kwargs": {"add_generation_prompt": False}}, {"add_generation_prompt": True}),
        (
            {"chat_template_kwargs": {"add_generation_prompt": True}, "add_generation_prompt": False},
            {"add_generation_prompt": False},
        ),
        ({"chat_template_kwargs": {"continue_final_message": True}}, {"add_generation_prompt": True}),
    ],
    ids=["kwargs-no-generation-prompt", "field-beats-kwargs", "kwargs-continue-final-message"],
)
def test_the_request_s_own_generation_fields_beat_its_kwargs(
    model: Any, fields: dict[str, Any], kwargs: dict[str, Any]
) -> None:
    # vLLM merges the request's add_generation_prompt and continue_final_message over chat_template_kwargs, and those
    # fields always have a value (true and false by default): the kwargs never set them.
    directory, reference = model
    messages = [{"role": "user", "content": "hello world"}, {"role": "assistant", "content": "the quick"}]
    ids = reference.apply_chat_template(messages, tokenize=True, **kwargs)["input_ids"]
    assert judge(directory, {"messages": messages, **fields}).token_ids == (tuple(ids),)


def test_empty_text_parts_add_no_line_break_to_a_string_template(model: Any) -> None:
    # vLLM keeps only the parts that parse to some text before joining them with "\n": an empty text part is gone.
    directory, reference = model
    parts = [{"type": "text", "text": "hello"}, {"type": "text", "text": ""}, "", {"type": "text", "text": "world"}]
    seen = [{"role": "user", "content": "hello\nworld"}]
    ids = reference.apply_chat_template(seen, tokenize=True, add_generation_prompt=True)["input_ids"]
    assert judge(directory, {"messages": [{"role": "user", "content": parts}]}).token_ids == (tuple(ids),)


def test_continue_final_message_continues_a_user_message_as_transformers_does(model: Any) -> None:
    # transformers (and so vLLM with a Hugging Face tokenizer) continues whatever the final message is; only vLLM's
    # Mistral tokenizer refuses a final message that is not the assistant's. The guard counts the same prompt.
    directory, reference = model
    messages = [{"role": "user", "content": "hello world"}]
    kwargs = {"add_generation_prompt": False, "continue_final_message": True}
    ids = reference.apply_chat_template(messages, tokenize=True, **kwargs)["input_ids"]
    assert judge(directory, {"messages": messages, **kwargs}).token_ids == (tuple(ids),)


def test_tools_reach_the_template_as_vllm_dumps_them(tmp_path: Path) -> None:
    # vLLM hands a template [tool.model_dump() for tool in request.tools]: ChatCompletionToolsParam (type, function)
    # over FunctionDefinition (name, description, parameters, a set defer_loading -- the tool's own when the function
    # sets none -- then other keys). Before, the tools went in as sent, so a template writing them as JSON counted no
    # "description": null, and the client's key order.
    directory = write_chat_model(
        tmp_path / "model", "{{ tools | tojson }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    )
    sent = [
        {"function": {"parameters": {"type": "object"}, "name": "look", "strict": True}, "x_note": "dropped"},
        {"type": "function", "function": {"name": "wait", "description": "Wait."}, "defer_loading": True},
        {"type": "custom", "custom": {"name": "grep"}},  # vLLM refuses this one itself: left as it came
    ]
    result = judge(directory, {"messages": [{"role": "user", "content": "hi"}], "tools": sent})
    assert result.prompt == (
        '[{"type": "function", "function": {"name": "look", "description": null, "parameters": {"type": "object"}, '
        '"strict": true}}, {"type": "function", "function": {"name": "wait", "description": "Wait.", "parameters": '
        'null, "defer_loading": true}, "defer_loading": true}, {"type": "custom", "custom": {"name": "grep"}}]hi'
    )
    assert sent[0] == {
        "function": {"parameters": {"type": "object"}, "name": "look", "strict": True},
        "x_note": "dropped",
    }


def test_only_tools_reach_the_template_not_functions(tmp_path: Path) -> None:
    # vLLM's ChatCompletionRequest has no functions field (ignored as an extra) and renders request.tools alone.
    # Before, functions went to the template as its tools, and replaced tools when a body sent both.
    directory = write_chat_model(
        tmp_path / "model", "{{ tools | tojson }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    )
    tools = [{"type": "function", "function": {"name": "look", "description": "Look.", "parameters": {}}}]
    functions = [{"name": "old", "parameters": {}}]
    messages = [{"role": "user", "content": "hi"}]
    assert judge(directory, {"messages": messages, "functions": functions}).prompt == "nullhi"
    both = judge(directory, {"messages": messages, "tools": tools, "functions": functions})
    assert both.prompt == f"{json.dumps(tools)}hi"
