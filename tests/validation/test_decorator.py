"""``guarded`` around direct Python calls, sync and async."""

from __future__ import annotations

import asyncio

import pytest
from tests.validation._helpers import char_tok

from autoglm_runtime.errors import ContextWindowExceededError, InputDecodeError, InvalidRequestError, UsageError
from autoglm_runtime.validation import ChatTemplate, ContextWindowGuard, GuardResult, OpenAIExtractor, guarded


def test_sync_function_sees_only_fitting_input() -> None:
    calls: list[str] = []

    @guarded(ContextWindowGuard(char_tok(), 10))
    def generate(prompt: str, max_tokens: int = 4) -> str:
        calls.append(prompt)
        return prompt.upper()

    assert generate("abc") == "ABC"
    with pytest.raises(ContextWindowExceededError) as info:
        generate("abcdefg")  # 7 + the default 4 output tokens
    assert info.value.message == (
        "This model's maximum context length is 10 tokens. However, you requested 11 tokens (7 in the "
        "input, 4 in the completion asked for by max_tokens), more than the context window of 10 "
        "tokens: shorten the input or lower max_tokens"
    )
    assert info.value.param == "prompt"
    assert generate("abcdefg", max_tokens=3) == "ABCDEFG"
    assert calls == ["abc", "abcdefg"]


def test_truncated_prompt_and_result_are_passed_in() -> None:
    seen: list[tuple[str, GuardResult | None]] = []

    @guarded(ContextWindowGuard(char_tok(), 6, truncate_on_overflow=True), result_arg="verdict")
    def generate(prompt: str, max_tokens: int = 2, verdict: GuardResult | None = None) -> None:
        seen.append((prompt, verdict))

    generate("abcdefgh")
    [(prompt, verdict)] = seen
    assert prompt == "efgh"
    assert verdict is not None
    assert verdict.removed_tokens == 4


def test_async_function_and_lone_surrogates() -> None:
    @guarded(ContextWindowGuard(char_tok(), 10), text_arg="messages", max_tokens_arg=None)
    async def chat(messages: list[str]) -> int:
        return len(messages)

    assert asyncio.run(chat(["a", "b"])) == 2
    with pytest.raises(InputDecodeError) as info:
        asyncio.run(chat(["ok", "bad \ud800"]))
    assert info.value.message == (
        "the input contains a lone surrogate U+D800 at character 4 of messages, which no tokenizer can encode: "
        "send well-formed Unicode text"
    )


def test_unknown_parameter_names_are_refused_at_decoration() -> None:
    def generate(text: str) -> str:
        return text

    with pytest.raises(UsageError) as info:
        guarded(ContextWindowGuard(char_tok(), 10))(generate)
    assert info.value.message == (
        "test_unknown_parameter_names_are_refused_at_decoration.<locals>.generate has no parameter named 'prompt' "
        "for the guard to use"
    )


def test_a_chat_is_judged_as_the_middleware_judges_messages() -> None:
    # Before: a list of message dicts was refused with "E5010: input pieces must be strings or lists of token ids,
    # got dict: fix the extractor or the request", so a chat function could not be guarded at all.
    template = ChatTemplate("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}")
    seen: list[tuple[list[dict[str, str]], GuardResult | None]] = []

    @guarded(
        ContextWindowGuard(char_tok(), 30, chat_template=template, truncate_on_overflow=True),
        text_arg="conversation",
        max_tokens_arg="max_new",
        result_arg="verdict",
    )
    def chat(conversation: list[dict[str, str]], max_new: int = 2, verdict: GuardResult | None = None) -> None:
        seen.append((conversation, verdict))

    conversation = [
        {"role": "system", "content": "be"},
        {"role": "user", "content": "abcdef"},
        {"role": "assistant", "content": "ghij"},
        {"role": "user", "content": "kl"},
    ]
    chat(conversation)  # <system>be<user>abcdef<assistant>ghij<user>kl: 45 characters, 43 over 28 left
    kept, verdict = seen[-1]
    assert kept == [{"role": "system", "content": "be"}, {"role": "user", "content": "kl"}]
    assert verdict is not None
    assert (verdict.dropped_messages, verdict.prompt, verdict.input_tokens) == ((1, 2), "<system>be<user>kl", 18)
    assert len(conversation) == 4  # the caller's list is left as it was

    strict = guarded(ContextWindowGuard(char_tok(), 30, chat_template=template), text_arg="conversation")
    judged = strict(lambda conversation, max_tokens=2: len(conversation))
    assert judged(conversation[:2]) == 2
    with pytest.raises(ContextWindowExceededError) as info:
        judged(conversation)
    assert info.value.param == "conversation"
    assert "(45 in the input, 2 in the completion asked for by max_tokens)" in info.value.message
    with pytest.raises(InputDecodeError) as bad:
        judged([{"role": "user", "content": "\ud800"}])
    assert bad.value.param == "conversation[0].content"
    with pytest.raises(InvalidRequestError) as wrong:
        judged([{"role": "user", "content": 5}])
    assert (wrong.value.message, wrong.value.param) == (
        "conversation[0].content must be a string or a list of content parts, got int: fix the request body",
        "conversation[0].content",  # as the decode error above names it
    )


def test_a_chat_message_without_a_valid_role_is_refused_as_the_middleware_refuses_it() -> None:
    judged = guarded(ContextWindowGuard(char_tok(), 30), text_arg="conversation", max_tokens_arg=None)(
        lambda conversation: conversation
    )
    with pytest.raises(InvalidRequestError) as missing:
        judged([{"role": "user", "content": "a"}, {"content": "b"}])
    assert (missing.value.message, missing.value.param) == (
        "conversation[1].role is missing (OpenAI: \"Missing required parameter: 'conversation[1].role'.\"): give every "
        "message a role (a string)",
        "conversation[1].role",
    )
    # Any string role by default, as vLLM takes it (GLM's tool results are "observation" messages): before, the
    # default was OpenAI's six and this chat was refused.
    assert judged([{"role": "observation", "content": "b"}]) == [{"role": "observation", "content": "b"}]
    openai = guarded(
        ContextWindowGuard(char_tok(), 30),
        text_arg="conversation",
        max_tokens_arg=None,
        roles=OpenAIExtractor.OPENAI_ROLES,
    )(lambda conversation: conversation)
    with pytest.raises(InvalidRequestError) as refused:
        openai([{"role": "observation", "content": "b"}])
    assert refused.value.param == "conversation[0].role"
    glm = guarded(
        ContextWindowGuard(char_tok(), 30), text_arg="conversation", max_tokens_arg=None, roles=("user", "observation")
    )
    assert glm(lambda conversation: conversation)([{"role": "observation", "content": "b"}]) == [
        {"role": "observation", "content": "b"}
    ]


@pytest.mark.parametrize(
    ("budget", "message"),
    [
        (0, "budget must be at least 1, got 0: the model writes at least one token (vLLM refuses 0 but for a "
            "completion with echo); send 1 or more, or leave it out"),
        (-1, 'budget must be a whole number of at least 1 (vLLM also reads "16" and 16.0 as 16), got -1: fix the '
             "request body"),
        ("many", 'budget must be a whole number of at least 1 (vLLM also reads "16" and 16.0 as 16), got \'many\': '
                 "fix the request body"),
    ],
)  # fmt: skip
def test_a_budget_is_refused_as_the_http_path_refuses_it(budget: object, message: str) -> None:
    # Before, a prompt's max_tokens of 0 passed the decorator (a chat's, and the HTTP path's, were E5010), and "many"
    # was refused in other words ("must be a non-negative integer"), naming max_tokens whatever the argument.
    @guarded(ContextWindowGuard(char_tok(), 10), max_tokens_arg="budget")
    def generate(prompt: str | list[dict[str, str]], budget: object = None) -> object:
        return prompt

    http = OpenAIExtractor(max_tokens_fields=("budget",))
    for call, body in (
        (lambda: generate("x", budget=budget), {"prompt": "x", "budget": budget}),
        (lambda: generate([{"role": "user", "content": "x"}], budget=budget), {"messages": [], "budget": budget}),
    ):
        with pytest.raises(InvalidRequestError) as by_decorator:
            call()
        with pytest.raises(InvalidRequestError) as by_http:
            http.extract(body)
        assert (by_decorator.value.message, by_decorator.value.param) == (message, "budget")
        assert (by_http.value.message, by_http.value.param) == (message, "budget")
    assert generate("x", budget="3") == "x"  # read as vLLM (and the HTTP path) read it


def test_a_prompt_is_judged_as_a_chat_is_room_for_one_token() -> None:
    # Before, a prompt went through check() (no room kept for the token the model writes) while a chat through the
    # same decorator was judged as a request.
    @guarded(ContextWindowGuard(char_tok(), 10))
    def generate(prompt: str, max_tokens: int | None = None) -> str:
        return prompt

    assert generate("x" * 9) == "x" * 9
    with pytest.raises(ContextWindowExceededError) as info:
        generate("x" * 10)
    assert info.value.message == (
        "This model's maximum context length is 10 tokens. However, you requested 11 tokens (10 in the input, 1 for "
        "the completion by default, as the request sets no max_tokens), more than the context window of 10 tokens: "
        "shorten the input"
    )
    assert generate("") == ""  # (a prompt of no token is the model's to judge)
