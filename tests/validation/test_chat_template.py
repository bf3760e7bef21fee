"""ChatTemplate renders and counts exactly as transformers' apply_chat_template does, on templates written here."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from tests.validation._helpers import write_chat_model

from autoglm_runtime.errors import ContextWindowExceededError, InvalidRequestError, UsageError
from autoglm_runtime.validation import ChatTemplate, ContextWindowGuard, HFTokenizer, OpenAIExtractor

CHATML = (
    "{{ bos_token }}"
    "{% if tools %}<|im_start|>system\nTools: {{ tools | tojson }}<|im_end|>\n{% endif %}"
    "{% for message in messages %}"
    "{% if message['content'] is string %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% else %}<|im_start|>{{ message['role'] }}\n"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
STRICT = (
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + message['content'] | trim + ' [/INST]' }}"
    "{% else %}{{ ' ' + message['content'] | trim + eos_token }}{% endif %}"
    "{% endfor %}"
)
#: GLM-4's shape: tool results come back as "observation" messages, a role outside OpenAI's six.
GLM = (
    "[gMASK]<sop>"
    "{% for item in messages %}"
    "{% if item['role'] == 'observation' %}<|observation|>\n{{ item['content'] }}"
    "{% else %}<|{{ item['role'] }}|>\n{{ item['content'] }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
CONTROLS = (
    "{% set ns = namespace(seen=0) %}"
    "Year {{ strftime_now('%Y') }}\n"
    "{% for message in messages %}"
    "{% if message['role'] == 'tool' %}{% continue %}{% endif %}"
    "{% set ns.seen = ns.seen + 1 %}"
    "{{ message['role'] }}: {{ message['content'] }}\n"
    "{% if ns.seen > 3 %}{% break %}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)

CONVERSATIONS: list[tuple[list[dict[str, Any]], list[dict[str, Any]] | None]] = [
    ([{"role": "user", "content": "hello world"}], None),
    (
        [
            {"role": "system", "content": "be brief & <polite>"},
            {"role": "user", "content": [{"type": "text", "text": "the quick"}, {"type": "text", "text": " fox"}]},
            {"role": "assistant", "content": "brown"},
            {"role": "user", "content": "ünïcödé 漢字 🙂"},
        ],
        [{"type": "function", "function": {"name": "look", "description": "a <tool>", "parameters": {}}}],
    ),
    (
        [
            {"role": "user", "content": "  one "},
            {"role": "assistant", "content": "two"},
            {"role": "tool", "content": "skipped"},
            {"role": "user", "content": "three"},
        ],
        None,
    ),
]


@pytest.fixture(scope="module")
def transformers_tokenizer() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained


def as_strings(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What vLLM hands a template that never loops over a message's content: its text parts joined by a line break."""
    return [
        {**m, "content": "\n".join(p["text"] for p in m["content"])} if isinstance(m["content"], list) else m
        for m in messages
    ]


@pytest.mark.parametrize("template", [CHATML, STRICT, CONTROLS], ids=["chatml", "strict", "controls"])
@pytest.mark.parametrize("conversation", range(len(CONVERSATIONS)))
def test_rendering_and_counts_match_transformers(
    tmp_path: Path, transformers_tokenizer: Any, template: str, conversation: int
) -> None:
    directory = write_chat_model(tmp_path / "model", template)
    reference = transformers_tokenizer(str(directory))
    messages, tools = CONVERSATIONS[conversation]
    ours = ChatTemplate.from_file(directory / "tokenizer_config.json")
    assert ours.content_format == ("openai" if template == CHATML else "string")
    seen = messages if template == CHATML else as_strings(messages)
    try:
        expected = reference.apply_chat_template(seen, tools=tools, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # the template rejects this conversation: ours must reject it too, coded
        refusal = str(exc)
    else:
        refusal = None
    if refusal is not None:
        with pytest.raises(InvalidRequestError) as info:
            ours.render(messages, tools=tools)
        assert refusal in info.value.message
        return
    assert ours.render(messages, tools=tools) == expected
    ids = reference.apply_chat_template(seen, tools=tools, tokenize=True, add_generation_prompt=True)["input_ids"]
    guard = ContextWindowGuard(HFTokenizer.from_file(directory / "tokenizer.json"), 4096, chat_template=ours)
    body: dict[str, Any] = {"messages": messages, **({"tools": tools} if tools else {})}
    result = guard.judge(OpenAIExtractor().extract(body).guard_input())
    assert result.token_ids == (tuple(ids),)
    assert (result.input_tokens, result.prompt) == (len(ids), expected)
    with pytest.raises(ContextWindowExceededError) as overflow:
        ContextWindowGuard(HFTokenizer.from_file(directory / "tokenizer.json"), len(ids), chat_template=ours).judge(
            OpenAIExtractor().extract({**body, "max_tokens": 1}).guard_input()
        )
    assert f"However, you requested {len(ids) + 1} tokens ({len(ids)} in the input" in overflow.value.message


def test_truncation_drops_the_oldest_turns_and_counts_what_transformers_renders(
    tmp_path: Path, transformers_tokenizer: Any
) -> None:
    directory = write_chat_model(tmp_path / "model", CHATML)
    reference = transformers_tokenizer(str(directory))
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello world " * 20},
        {"role": "assistant", "content": "the quick brown fox " * 20},
        {"role": "user", "content": "one two three"},
    ]
    kept = [messages[0], messages[3]]
    kept_ids = reference.apply_chat_template(kept, tokenize=True, add_generation_prompt=True)["input_ids"]
    window = len(kept_ids) + 10
    guard = ContextWindowGuard(
        HFTokenizer.from_file(directory / "tokenizer.json"),
        window,
        truncate_on_overflow=True,
        chat_template=ChatTemplate.from_file(directory),
    )
    extractor = OpenAIExtractor()
    body = {"messages": [dict(m) for m in messages], "max_tokens": 10}
    extracted = extractor.extract(body)
    result = guard.judge(extracted.guard_input())
    assert result.dropped_messages == (1, 2)
    assert result.token_ids == (tuple(kept_ids),)
    full = reference.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)["input_ids"]
    assert result.removed_tokens == len(full) - len(kept_ids)
    assert extractor.apply(body, extracted, result)["messages"] == kept


def test_the_sandbox_refuses_attribute_escapes(tmp_path: Path) -> None:
    template = ChatTemplate("{{ messages.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(InvalidRequestError) as info:
        template.render([{"role": "user", "content": "x"}])
    assert info.value.code == "E5010"
    assert "unsafe" in info.value.message or "access to attribute" in info.value.message


def test_strftime_now_uses_the_injected_clock() -> None:
    template = ChatTemplate("{{ strftime_now('%d %b %Y') }}", now=lambda: datetime(2024, 7, 1))
    assert template.render([]) == "01 Jul 2024"


def test_named_templates_and_separate_jinja_files(tmp_path: Path) -> None:
    config = tmp_path / "tokenizer_config.json"
    config.write_text(
        json.dumps(
            {
                "chat_template": [
                    {"name": "tool_use", "template": "T"},
                    {"name": "default", "template": "D{{ eos_token }}"},
                ],
                "eos_token": "</s>",
            }
        ),
        encoding="utf-8",
    )
    assert ChatTemplate.from_file(config).render([]) == "D</s>"
    (tmp_path / "chat_template.jinja").write_text("J{{ eos_token }}", encoding="utf-8")
    assert ChatTemplate.from_file(tmp_path).render([]) == "J</s>"


def test_a_config_without_a_template_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "tokenizer_config.json"
    config.write_text(json.dumps({"bos_token": "<s>"}), encoding="utf-8")
    with pytest.raises(UsageError) as info:
        ChatTemplate.from_file(config)
    assert info.value.message == (
        f"{str(config)!r} holds no chat template (no 'chat_template' string or 'default' entry): point to the "
        "model's tokenizer_config.json or chat_template.jinja"
    )


TOOL_CHAT = [
    {"role": "user", "content": "look it up " * 30},
    {
        "role": "assistant",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "look", "arguments": "{}"}}],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "found it " * 30},
    {"role": "user", "content": "and now?"},
]


def _tool_guard(directory: Path, window: int, template: bool) -> ContextWindowGuard:
    return ContextWindowGuard(
        HFTokenizer.from_file(directory / "tokenizer.json"),
        window,
        truncate_on_overflow=True,
        chat_template=ChatTemplate.from_file(directory) if template else None,
    )


def test_with_a_template_a_tool_call_and_its_result_are_dropped_together(tmp_path: Path) -> None:
    directory = write_chat_model(tmp_path / "model", CHATML)
    extractor = OpenAIExtractor()

    def tokens(messages: list[dict[str, Any]]) -> int:
        extracted = extractor.extract({"messages": messages, "max_tokens": 4})
        return _tool_guard(directory, 100_000, True).judge(extracted.guard_input()).input_tokens

    # Room for the tool result and the question, not for the call too: a prefix cut would keep a result whose
    # call is gone; the call and its result must go together.
    window = tokens(TOOL_CHAT[2:]) + 4
    assert window < tokens(TOOL_CHAT[1:]) + 4
    extracted = extractor.extract({"messages": TOOL_CHAT, "max_tokens": 4})
    result = _tool_guard(directory, window, True).judge(extracted.guard_input())
    assert result.dropped_messages == (0, 1, 2)


def test_without_a_template_a_tool_result_stays_with_its_call(tmp_path: Path) -> None:
    directory = write_chat_model(tmp_path / "model", CHATML)
    extracted = OpenAIExtractor().extract({"messages": TOOL_CHAT, "max_tokens": 4})
    tool_fields = {
        i for i, field in enumerate(extracted.fields) if field.path[:2] in (("messages", 1), ("messages", 2))
    }
    assert tool_fields
    assert tool_fields <= set(extracted.pinned)
    full = _tool_guard(directory, 100_000, False).judge(extracted.guard_input()).input_tokens
    result = _tool_guard(directory, full - 20, False).judge(extracted.guard_input())
    assert result.dropped_messages == (0,)


def test_a_glm_observation_is_taken_by_default_and_counted_as_transformers_renders_it(
    tmp_path: Path, transformers_tokenizer: Any
) -> None:
    # Before, the default roles were OpenAI's six: this chat, which vLLM runs through GLM's template, was E5010.
    directory = write_chat_model(tmp_path / "model", GLM)
    reference = transformers_tokenizer(str(directory))
    messages = [
        {"role": "user", "content": "the quick brown fox?"},
        {"role": "assistant", "content": "one"},
        {"role": "observation", "content": "two three"},
    ]
    expected = reference.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = reference.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)["input_ids"]
    guard = ContextWindowGuard(
        HFTokenizer.from_file(directory / "tokenizer.json"),
        4096,
        chat_template=ChatTemplate.from_file(directory / "tokenizer_config.json"),
    )
    result = guard.judge(OpenAIExtractor().extract({"messages": messages}).guard_input())
    assert "<|observation|>\ntwo three" in expected
    assert (result.prompt, result.token_ids, result.input_tokens) == (expected, (tuple(ids),), len(ids))
    with pytest.raises(InvalidRequestError) as info:  # OpenAI's six, opted into
        OpenAIExtractor(roles=OpenAIExtractor.OPENAI_ROLES).extract({"messages": messages})
    assert info.value.param == "messages[2].role"


@pytest.mark.parametrize("message", [{"role": "user"}, {"role": "user", "content": None}], ids=["missing", "null"])
def test_a_message_without_content_reaches_the_template_empty_as_in_vllm(message: dict[str, Any]) -> None:
    # vLLM hands every message over with a content (an empty one here), so such a template renders it.
    template = ChatTemplate("{% for m in messages %}<{{ m.role }}>{{ m['content'] + '|' }}{% endfor %}")
    assert template.render([{"role": "system", "content": "be brief"}, message]) == "<system>be brief|<user>|"


def test_a_template_failing_for_another_reason_keeps_its_words() -> None:
    template = ChatTemplate("{% for m in messages %}{{ raise_exception('no ' + m.role) }}{% endfor %}")
    with pytest.raises(InvalidRequestError) as info:
        template.render([{"role": "user"}])
    assert info.value.message == "the model's chat template rejected the messages: no user: fix the conversation"
    assert info.value.param == "messages"
