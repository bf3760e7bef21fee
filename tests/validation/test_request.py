"""Judging whole requests: output budgets, batch prompts, pinned system prompts, every text-bearing field."""

from __future__ import annotations

from typing import Any

import pytest
from tests.validation._helpers import char_tok

from autoglm_runtime.errors import ContextWindowExceededError, InvalidRequestError, UsageError
from autoglm_runtime.validation import ContextWindowGuard, GuardResult, OpenAIExtractor
from autoglm_runtime.validation._conversation import _MODALITIES as MODALITIES


class Recording:
    """One token per character, remembering how many characters it was asked to encode."""

    def __init__(self, max_token_chars: int | None) -> None:
        self.max_token_chars = max_token_chars
        self.encoded = 0

    def encode(self, text: str) -> list[int]:
        self.encoded += len(text)
        return [ord(c) for c in text]

    def decode(self, ids: Any) -> str:
        return "".join(map(chr, ids))


def judge(body: dict[str, Any], window: int, *, truncate: bool = False, message_tokens: int = 0) -> GuardResult:
    guard = ContextWindowGuard(char_tok(), window, truncate_on_overflow=truncate, message_tokens=message_tokens)
    # These bodies name their budgets themselves: no completions default of 16 output tokens.
    return guard.judge(OpenAIExtractor(prompt_max_tokens=None).extract(body).guard_input())


def rejection(body: dict[str, Any], window: int, **kwargs: Any) -> ContextWindowExceededError:
    with pytest.raises(ContextWindowExceededError) as info:
        judge(body, window, **kwargs)
    return info.value


# 1. The budget vLLM uses is judged: a chat's max_completion_tokens before its max_tokens (vLLM's
# ChatCompletionRequest.build_tok_params); a completion has only max_tokens (CompletionRequest has no other).
def test_the_budget_vllm_uses_is_judged() -> None:
    chat = {"messages": [{"role": "user", "content": "hello"}]}
    error = rejection({**chat, "max_tokens": 5, "max_completion_tokens": 1_000_000}, 100)
    assert error.param == "max_completion_tokens"
    assert error.message == (
        "This model's maximum context length is 100 tokens. However, max_completion_tokens asks for 1000000 output "
        "tokens, more than the context window of 100 tokens on its own: lower max_completion_tokens to at most 100 "
        "minus the input's tokens"
    )
    extracted = OpenAIExtractor().extract({**chat, "max_tokens": 9, "max_completion_tokens": 3})
    assert (extracted.max_output_tokens, extracted.output_param) == (3, "max_completion_tokens")
    # Before this, the larger was judged: a chat vLLM runs with 3 output tokens was refused for its max_tokens.
    assert judge({**chat, "max_tokens": 10**6, "max_completion_tokens": 3}, 100).output_tokens == 3
    extracted = OpenAIExtractor().extract({**chat, "max_tokens": 9, "max_completion_tokens": None})
    assert (extracted.max_output_tokens, extracted.output_param) == (9, "max_tokens")
    for body in ({"prompt": "x", "max_tokens": 9, "max_completion_tokens": 3}, {"prompt": "x", "max_tokens": 9}):
        extracted = OpenAIExtractor().extract(body)
        assert (extracted.max_output_tokens, extracted.output_param) == (9, "max_tokens")
    # A completion's max_completion_tokens is ignored, as vLLM ignores it: the default of 16 applies.
    extracted = OpenAIExtractor().extract({"prompt": "x", "max_completion_tokens": 3})
    assert (extracted.max_output_tokens, extracted.output_param, extracted.output_defaulted) == (16, "max_tokens", True)


def test_a_completions_body_without_a_budget_asks_for_vllm_s_default_of_16_tokens() -> None:
    # vLLM's (and OpenAI's) /v1/completions default max_tokens to 16; a chat has no default (it may run to the window).
    guard = ContextWindowGuard(char_tok(), 100)
    with pytest.raises(ContextWindowExceededError) as info:
        guard.judge(OpenAIExtractor().extract({"prompt": "x" * 90}).guard_input())
    # The client sent no max_tokens: the default is said to be one, not blamed on a field never sent.
    assert info.value.message.endswith(
        "you requested 106 tokens (90 in the input, 16 for the completion by default, as the request sets no "
        "max_tokens), more than the context window of 100 tokens: shorten the input, or send a lower max_tokens"
    )
    with pytest.raises(ContextWindowExceededError) as sent:
        guard.judge(OpenAIExtractor().extract({"prompt": "x" * 90, "max_tokens": 16}).guard_input())
    assert "16 in the completion asked for by max_tokens" in sent.value.message
    assert guard.judge(OpenAIExtractor().extract({"prompt": "x" * 84}).guard_input()).output_tokens == 16
    assert [
        OpenAIExtractor().extract(body).max_output_tokens for body in ({"prompt": ["a", "b"]}, {"prompt": [1, 2]})
    ] == [
        16,
        16,
    ]
    # An explicit null is no budget, as vLLM reads it; a chat, or a body sending any budget field, keeps its own.
    assert OpenAIExtractor().extract({"prompt": "x", "max_tokens": None}).max_output_tokens is None
    assert OpenAIExtractor().extract({"prompt": "x", "max_tokens": 3}).max_output_tokens == 3
    assert OpenAIExtractor().extract({"messages": [{"role": "user", "content": "x"}]}).max_output_tokens is None
    assert OpenAIExtractor(prompt_max_tokens=None).extract({"prompt": "x"}).max_output_tokens is None
    with pytest.raises(UsageError):
        OpenAIExtractor(prompt_max_tokens=-1)


def test_a_budget_that_fits_alone_but_not_with_the_input_names_the_field_sent() -> None:
    error = rejection({"messages": [{"role": "user", "content": "x" * 30}], "max_completion_tokens": 80}, 100)
    assert error.param == "messages"
    assert error.message == (
        "This model's maximum context length is 100 tokens. However, you requested 110 tokens (30 in the input, 80 "
        "in the completion asked for by max_completion_tokens), more than the context window of 100 tokens: shorten "
        "the input or lower max_completion_tokens"
    )


# 6. An output budget over the window is the budget's fault, not the prompt's.
@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens", "max_new_tokens"])
def test_an_absurd_output_budget_blames_its_own_field(field: str) -> None:
    error = rejection({"messages": [{"role": "user", "content": "hi"}], field: 10**9}, 8192)
    assert error.param == field
    assert error.message.startswith(
        f"This model's maximum context length is 8192 tokens. However, {field} asks for 1000000000 output tokens"
    )
    assert "at least" not in error.message


# 2. A list prompt is a batch: each prompt has the whole window.
def test_batch_prompts_are_judged_one_by_one() -> None:
    result = judge({"prompt": ["a" * 10_000, "b" * 10_000], "max_tokens": 100}, 16_384)
    assert [r.input_tokens for r in result.batch] == [10_000, 10_000]
    assert (result.input_tokens, result.output_tokens) == (20_000, 100)
    assert result.token_ids[1][:2] == (ord("b"), ord("b"))


def test_a_batch_error_names_the_prompt() -> None:
    error = rejection({"prompt": ["fits", "y" * 40, "fits too"], "max_tokens": 5}, 30)
    assert error.param == "prompt[1]"
    assert error.message.startswith("This model's maximum context length is 30 tokens. However, you requested 45")


def test_batch_truncation_cuts_only_the_prompt_that_overflows() -> None:
    result = judge({"prompt": ["a" * 10, "b" * 30, "ccc"], "max_tokens": 1}, 21, truncate=True)
    assert result.segments == ("a" * 10, "b" * 20, "ccc")
    assert [r.removed_tokens for r in result.batch] == [0, 10, 0]
    assert result.removed_tokens == 10
    # (A batch mixing strings and token ids is refused, as vLLM refuses it: test_vllm_parity.py.)
    ids = judge({"prompt": [[1] * 10, [2] * 30, [3] * 3], "max_tokens": 1}, 21, truncate=True)
    assert ids.segments == ((1,) * 10, (2,) * 20, (3,) * 3)
    assert [r.removed_tokens for r in ids.batch] == [0, 10, 0]


def test_a_suffix_counts_with_every_batch_prompt() -> None:
    error = rejection({"prompt": ["a" * 10, "b" * 10], "suffix": "s" * 15, "max_tokens": 1}, 25)
    assert error.param == "prompt[0]"
    assert error.message.startswith("This model's maximum context length is 25 tokens. However, you requested 26")


# 3. System and developer content is never cut; the oldest other turns go first.
def test_truncation_keeps_the_system_prompt_and_cuts_the_user_message() -> None:
    body = {"messages": [{"role": "system", "content": "S" * 10}, {"role": "user", "content": "u" * 30}]}
    result = judge(body, 26, truncate=True)  # 25 for the input, 1 for the token the model writes at least
    assert result.segments == ("S" * 10, "u" * 15)
    assert (result.input_tokens, result.removed_tokens) == (25, 15)


def test_truncation_drops_the_oldest_turns_whole_before_cutting() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "S" * 5},
            {"role": "user", "content": "old question"},
            {"role": "assistant", "content": "old answer"},
            {"role": "developer", "content": "D" * 5},
            {"role": "user", "content": "q" * 20},
        ]
    }
    result = judge({**body, "max_completion_tokens": 1}, 33, truncate=True, message_tokens=1)
    assert result.dropped_messages == (1, 2)
    # 5 + 5 + 20 characters plus 1 token for each of the 3 messages left and 1 for the reply.
    assert result.input_tokens == 34 - 2
    assert result.segments == ("S" * 5, "", "", "D" * 5, "q" * 18)
    extractor = OpenAIExtractor()
    extracted = extractor.extract(body)
    rewritten = extractor.apply(body, extracted, result)
    assert [m["role"] for m in rewritten["messages"]] == ["system", "developer", "user"]
    assert rewritten["messages"][2]["content"] == "q" * 18


def test_a_system_prompt_that_alone_overflows_is_rejected_even_with_truncation() -> None:
    body = {"messages": [{"role": "system", "content": "S" * 40}, {"role": "user", "content": "hi"}]}
    error = rejection(body, 30, truncate=True)
    assert error.code == "E0513"
    # Before, the count was the guard's whole E0513 in parentheses, with its own parentheses and "shorten the input"
    # inside: the fix that truncation already tried.
    assert error.message == (
        "This model's maximum context length is 30 tokens. However, the system and developer messages, tool "
        "definitions and other pieces that are never truncated leave no room for the rest of the input. With them "
        "alone, you requested 41 tokens (40 in the input, 1 for the completion by default, as the request sets no "
        "max_completion_tokens), more than the context window of 30 tokens: shorten them"
    )
    error = rejection({**body, "max_tokens": 5}, 30, truncate=True)
    assert error.message.endswith("more than the context window of 30 tokens: shorten them or lower max_tokens")


# 4. Everything the model reads is counted.
@pytest.mark.parametrize(
    ("body", "tokens"),
    [
        ({"messages": [{"role": "user", "content": [{"type": "input_text", "text": "x" * 40}]}]}, 40),
        ({"messages": [{"role": "user", "content": [{"text": "x" * 40}]}]}, 40),
        ({"messages": [{"role": "user", "content": [{"type": "refusal", "refusal": "x" * 40}]}]}, 40),
        ({"messages": [{"role": "assistant", "content": "x" * 10, "reasoning_content": "r" * 30}]}, 40),
        # vLLM's own names: a "thinking" part is text to it, "reasoning" what it renames reasoning_content to.
        ({"messages": [{"role": "user", "content": [{"type": "thinking", "thinking": "x" * 40}]}]}, 40),
        ({"messages": [{"role": "assistant", "content": "x" * 10, "reasoning": "r" * 30}]}, 40),
        ({"prompt": "x" * 10, "suffix": "y" * 30}, 40),
    ],
)
def test_every_text_bearing_field_counts(body: dict[str, Any], tokens: int) -> None:
    assert judge(body, 1000).input_tokens == tokens
    rejection(body, tokens - 1)


def test_tool_definitions_and_calls_count_as_the_json_the_model_reads() -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    call = [{"id": "1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]
    body = {"messages": [{"role": "assistant", "content": None, "tool_calls": call}], "tools": tools}
    import json

    expected = len(json.dumps(tools, ensure_ascii=False)) + len(json.dumps(call, ensure_ascii=False))
    assert judge(body, 10_000).input_tokens == expected
    assert judge({"prompt": "", "functions": tools}, 10_000).input_tokens == len(json.dumps(tools))


def test_empty_messages_still_cost_the_template_tokens() -> None:
    body = {"messages": [{"role": "user", "content": ""}] * 4000, "max_tokens": 1}
    error = rejection(body, 8192, message_tokens=4)
    assert error.message.startswith(
        "This model's maximum context length is 8192 tokens. However, you requested at least 16005"
    )


def test_an_unknown_part_that_carries_text_is_rejected() -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "mystery", "body": "x" * 40}]}]}
    with pytest.raises(InvalidRequestError) as info:
        OpenAIExtractor().extract(body)
    assert info.value.message == (
        "messages[0].content[0] is a content part of type 'mystery' carrying text in 'body', which the guard cannot "
        "count: send it as a {'type': 'text', 'text': ...} part"
    )
    assert info.value.param == "messages[0].content[0]"  # the part at fault, not the whole messages field
    assert OpenAIExtractor().extract({"messages": [{"role": "user", "content": [{"type": "mystery"}]}]}).fields == ()


@pytest.mark.parametrize("kind", sorted(MODALITIES))
def test_every_media_part_a_template_is_given_is_skipped_not_refused(kind: str) -> None:
    # vLLM takes {"type": "image_embeds", "image_embeds": "<base64>"} (and audio_embeds) under --enable-mm-embeds,
    # and a template gets {"type": "image"} for it; the extractor refused it as a part carrying text it cannot count.
    body = {"messages": [{"role": "user", "content": [{"type": kind, kind: "QUFB"}, "hi"]}]}
    assert OpenAIExtractor().extract(body).segments == ["hi"]


def test_a_media_part_without_a_type_is_skipped_as_vllm_reads_it_by_its_key() -> None:
    # vLLM reads {"image_url": "http://..."} (no type) as an image, and so did the template's conversation; the
    # extractor refused it as a part of type None carrying text in 'image_url'.
    body = {"messages": [{"role": "user", "content": [{"image_url": "http://x/cat.png"}, "hi"]}]}
    assert OpenAIExtractor().extract(body).segments == ["hi"]


@pytest.mark.parametrize("kind", [[], {"a": 1}, 3, True])
def test_a_part_whose_type_is_not_a_string_is_e5010(kind: Any) -> None:
    # A list or an object as the type was looked up among the kinds: TypeError (unhashable), a 500 for the client.
    body = {"messages": [{"role": "user", "content": [{"type": kind, "text": "hi"}]}]}
    with pytest.raises(InvalidRequestError) as info:
        OpenAIExtractor().extract(body)
    assert (info.value.code, info.value.param) == ("E5010", "messages[0].content[0].type")
    assert info.value.message == (
        f"messages[0].content[0].type must be a string, got {type(kind).__name__}: fix the request body"
    )


# 7. One body cannot make the guard do unbounded work.
@pytest.mark.parametrize(
    ("body", "message"),
    [
        # Worded for the client, who cannot raise the limit ("or raise max_messages" was the operator's remedy).
        (
            {"prompt": [""] * 3},
            "the request has 3 prompts, more than the 2 this server takes in one request: send at most 2 prompts, "
            "splitting the batch over several requests (the limit is the server's max_prompts setting)",
        ),
        (
            {"messages": [{"role": "user", "content": ""}] * 3},
            "the request has 3 messages, more than the 2 this server takes in one request: send at most 2 messages, "
            "dropping older turns (the limit is the server's max_messages setting)",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": ""}] * 2}] * 2},
            "the request has 4 content parts, more than the 3 this server takes in one request: send at most 3 "
            "content parts (counted over all messages), merging text parts or dropping older turns (the limit is the "
            "server's max_parts setting)",
        ),
    ],
)
def test_element_counts_are_capped(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        OpenAIExtractor(max_prompts=2, max_messages=2, max_parts=3).extract(body)
    assert (info.value.message, info.value.code) == (message, "E5010")


def test_many_small_pieces_take_one_tokenizer_call() -> None:
    calls: list[int] = []

    class Batching:
        max_token_chars = None

        def encode(self, text: str) -> list[int]:
            raise AssertionError("a batch tokenizer is called per batch, not per piece")

        def encode_batch(self, texts: list[str]) -> list[list[int]]:
            calls.append(len(texts))
            return [[ord(c) for c in text] for text in texts]

        def decode(self, ids: list[int]) -> str:
            return "".join(map(chr, ids))

    guard = ContextWindowGuard(Batching(), 100_000)
    body = {"messages": [{"role": "user", "content": str(i % 50)} for i in range(3000)]}
    result = guard.judge(OpenAIExtractor().extract(body).guard_input())
    assert calls == [50]  # 3000 pieces, 50 distinct texts, one call
    assert result.input_tokens == sum(len(str(i % 50)) for i in range(3000)) + 4 * 3001


# 8. Truncating a huge prompt tokenizes a bounded part next to what is kept, not the whole input.
@pytest.mark.parametrize("bound", [None, 1])
@pytest.mark.parametrize("side", ["left", "right"])
def test_truncating_a_huge_prompt_tokenizes_a_bounded_part(bound: int | None, side: Any) -> None:
    tok = Recording(bound)
    text = "".join(chr(ord("a") + i % 26) for i in range(4_000_000))
    guard = ContextWindowGuard(tok, 1000, truncate_on_overflow=True, truncation_side=side)
    result = guard.check(text, max_output_tokens=100)
    assert result.text == (text[-900:] if side == "left" else text[:900])
    assert (result.input_tokens, result.removed_tokens) == (900, 4_000_000 - 900)
    assert tok.encoded < 70_000


def test_truncating_several_pieces_still_cuts_from_the_side() -> None:
    tok = Recording(None)
    guard = ContextWindowGuard(tok, 200, truncate_on_overflow=True)
    result = guard.check(["h" * 100_000, "t" * 150], max_output_tokens=0)
    assert result.segments == ("h" * 50, "t" * 150)
    assert result.removed_tokens == 100_000 - 50


def test_batch_prompts_are_tokenized_together() -> None:
    calls: list[int] = []

    class Batching:
        max_token_chars = None

        def encode(self, text: str) -> list[int]:
            raise AssertionError("a batch tokenizer is called per batch, not per prompt")

        def encode_batch(self, texts: list[str]) -> list[list[int]]:
            calls.append(len(texts))
            return [[ord(c) for c in text] for text in texts]

        def decode(self, ids: list[int]) -> str:
            return "".join(map(chr, ids))

    guard = ContextWindowGuard(Batching(), 100)
    result = guard.judge(OpenAIExtractor().extract({"prompt": [f"p{i}" for i in range(1000)]}).guard_input())
    assert calls == [1000]
    assert [r.input_tokens for r in result.batch[:11]] == [2] * 10 + [3]
