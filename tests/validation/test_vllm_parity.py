"""The guard reads budgets and flags as vLLM's OpenAI server does, and refuses what vLLM refuses.

References (vllm-project/vllm): ``ChatCompletionRequest.build_tok_params`` (max_completion_tokens before max_tokens),
``CompletionRequest`` (no max_completion_tokens; ``echo`` with ``max_tokens: 0``), ``SamplingParams._verify_args``
(max_tokens at least 1), ``InputProcessor._validate_prompt_len`` (no empty prompt, no prompt filling the window),
``TokenizeParams`` (``truncate_prompt_tokens``), ``CustomChatCompletionMessageParam`` (a message's role is a required
string, any one), and the requests being pydantic models in lax mode.
"""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletionMessageParam
from pydantic import Field, TypeAdapter, ValidationError
from tests.validation._helpers import char_tok, write_chat_model
from typing_extensions import Required, TypedDict

from autoglm_runtime.errors import ContextWindowExceededError, InvalidRequestError
from autoglm_runtime.validation import ChatTemplate, ContextWindowGuard, GuardResult, HFTokenizer, OpenAIExtractor
from autoglm_runtime.validation._lax import lax_bool, lax_int

CHAT = {"messages": [{"role": "user", "content": "x" * 20}]}


def judge(body: dict[str, Any], window: int, **guard: Any) -> GuardResult:
    return ContextWindowGuard(char_tok(), window, message_tokens=0, **guard).judge(
        OpenAIExtractor().extract(body).guard_input()
    )


def pydantic_reads(kind: type, value: Any) -> Any:
    try:
        return TypeAdapter(kind).validate_python(value)
    except ValidationError:
        return None


TEXT_NUMBERS = st.from_regex(r"\s?[+-]?[0-9_]{0,6}(\.[0-9_]{0,3})?\s?", fullmatch=True)
VALUES = st.one_of(
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    TEXT_NUMBERS,
    st.text(max_size=8),
    st.sampled_from(["no", "YES", "On", "off", "t", "F", "y", "N", "1", "0", "true", "False", " no", "2", "", "1.0"]),
    st.none(),
    st.lists(st.integers(), max_size=1),
)


@settings(max_examples=600, deadline=None)
@given(value=VALUES)
def test_lax_readers_read_what_pydantic_reads(value: Any) -> None:
    assert lax_int(value) == pydantic_reads(int, value)
    assert lax_bool(value) == pydantic_reads(bool, value)


def test_loose_budgets_are_read_as_vllm_reads_them() -> None:
    # Before, "16" and 16.0 were E5010 although vLLM runs them with 16 output tokens.
    for sent in ("16", 16.0, " 16 ", "16.0"):
        extracted = OpenAIExtractor().extract({**CHAT, "max_tokens": sent})
        assert extracted.max_output_tokens == 16
    with pytest.raises(ContextWindowExceededError):
        judge({**CHAT, "max_tokens": "90"}, 100)
    assert OpenAIExtractor().extract({"prompt": "a", "truncate_prompt_tokens": "5"}).keep_tokens == 5
    with pytest.raises(InvalidRequestError) as info:
        OpenAIExtractor().extract({**CHAT, "max_tokens": 16.5})
    assert info.value.message == (
        'max_tokens must be a whole number of at least 1 (vLLM also reads "16" and 16.0 as 16), got 16.5: fix the '
        "request body"
    )


def test_loose_template_flags_are_read_as_vllm_reads_them() -> None:
    template = ChatTemplate(
        "{% for m in messages %}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}>{% endif %}"
    )
    guard = ContextWindowGuard(char_tok(), 100, chat_template=template)

    def prompt(**fields: Any) -> str | None:
        return guard.judge(OpenAIExtractor().extract({**CHAT, **fields}).guard_input()).prompt

    assert prompt(add_generation_prompt="no") == prompt(add_generation_prompt=False) == "x" * 20
    assert prompt(add_generation_prompt="on") == prompt(add_generation_prompt=1) == "x" * 20 + ">"
    assert OpenAIExtractor().extract({**CHAT, "add_special_tokens": "true"}).chat.add_special_tokens  # type: ignore[union-attr]


def test_a_chat_without_a_budget_must_leave_room_for_one_token() -> None:
    # vLLM works out max_tokens as the window less the prompt and refuses 0; before, a prompt of exactly the
    # window passed.
    with pytest.raises(ContextWindowExceededError) as info:
        judge(CHAT, 20)
    assert info.value.message == (
        "This model's maximum context length is 20 tokens. However, you requested 21 tokens (20 in the input, 1 for "
        "the completion by default, as the request sets no max_completion_tokens), more than the context window of "
        "20 tokens: shorten the input"
    )
    assert judge(CHAT, 21).output_tokens == 1
    assert judge({**CHAT, "max_tokens": None}, 21).input_tokens == 20
    # With truncation on, the cut leaves that token's room too.
    assert judge(CHAT, 20, truncate_on_overflow=True).input_tokens == 19


def test_a_budget_of_zero_is_refused_as_vllm_refuses_it() -> None:
    for body in ({**CHAT, "max_tokens": 0}, {"prompt": "a", "max_tokens": 0}, {**CHAT, "max_completion_tokens": "0"}):
        with pytest.raises(InvalidRequestError) as info:
            OpenAIExtractor().extract(body)
        assert info.value.param in ("max_tokens", "max_completion_tokens")
        assert "must be at least 1, got 0" in info.value.message
    # A completion with echo and max_tokens 0 returns the prompt (vLLM generates one token): the prompt must leave it.
    echoed = {"prompt": "x" * 20, "max_tokens": 0, "echo": True}
    assert judge(echoed, 21).input_tokens == 20
    with pytest.raises(ContextWindowExceededError):
        judge(echoed, 20)


def test_truncate_prompt_tokens_zero_is_e5010() -> None:
    # vLLM cuts the prompt to nothing and refuses it ("The decoder prompt cannot be empty"); the guard passed it.
    with pytest.raises(InvalidRequestError) as info:
        OpenAIExtractor().extract({"prompt": "a", "truncate_prompt_tokens": 0})
    assert info.value.param == "truncate_prompt_tokens"
    assert info.value.message == (
        "truncate_prompt_tokens is 0, which keeps no prompt token, and the model cannot read an empty prompt: send at "
        "least 1, or -1 for all the room the window leaves"
    )


def test_keeping_the_whole_window_without_a_budget_is_e0513() -> None:
    # vLLM's -1 keeps the window less the budget sent (none: the whole window), then refuses a prompt that fills it.
    with pytest.raises(ContextWindowExceededError) as info:
        judge({**CHAT, "truncate_prompt_tokens": -1}, 10)
    assert info.value.param == "truncate_prompt_tokens"
    assert info.value.message == (
        "This model's maximum context length is 10 tokens. However, truncate_prompt_tokens keeps 10 prompt tokens, "
        "which leaves no room for the 1 completion token(s) the model writes at least, as the request sets no "
        "max_completion_tokens: send truncate_prompt_tokens of at most 9, or a max_completion_tokens"
    )
    assert judge({**CHAT, "truncate_prompt_tokens": 9}, 10).input_tokens == 9
    assert judge({**CHAT, "truncate_prompt_tokens": -1, "max_tokens": 2}, 10).input_tokens == 8
    assert judge({**CHAT, "truncate_prompt_tokens": -1}, 21).input_tokens == 20


def test_a_last_tool_exchange_that_cannot_be_cut_says_why() -> None:
    template = ChatTemplate(
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% if m.tool_calls %}{{ m.tool_calls|tojson }}"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}<a>{% endif %}"
    )
    call = {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    body = {
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "1", "content": "r" * 100},
        ],
        "max_tokens": 5,
    }
    with pytest.raises(ContextWindowExceededError) as info:
        judge(body, 60, truncate_on_overflow=True, chat_template=template)
    assert info.value.message.startswith(
        "This model's maximum context length is 60 tokens. However, truncation dropped every earlier turn and emptied "
        "the text it may cut, and the rest still does not fit: system and developer messages, tool definitions, and a "
        "tool call with the results answering it are never shortened (you requested "
    )


def test_an_echo_with_a_budget_of_zero_is_not_told_to_lower_it_or_that_it_sent_none() -> None:
    # The model writes one token though max_tokens is 0: the refusal says so, and asks for no lower max_tokens
    # (before: "1 in the completion asked for by max_tokens ... lower max_tokens", and with truncate_prompt_tokens
    # "as the request sets no max_tokens").
    echoed = {"prompt": "x" * 20, "max_tokens": 0, "echo": True}
    with pytest.raises(ContextWindowExceededError) as info:
        judge(echoed, 20)
    assert info.value.message == (
        "This model's maximum context length is 20 tokens. However, you requested 21 tokens (20 in the input, 1 for "
        "the completion, the least the model writes, though max_tokens is 0), more than the context window of 20 "
        "tokens: shorten the input"
    )
    with pytest.raises(ContextWindowExceededError) as info:
        judge({**echoed, "truncate_prompt_tokens": -1}, 20)
    assert info.value.message == (
        "This model's maximum context length is 20 tokens. However, truncate_prompt_tokens keeps 20 prompt tokens, "
        "which leaves no room for the 1 completion token(s) the model writes at least, though max_tokens is 0: send "
        "truncate_prompt_tokens of at most 19, or a max_tokens of at least 1"
    )


@pytest.fixture(scope="module")
def bos_tok(tmp_path_factory: pytest.TempPathFactory) -> HFTokenizer:
    """A byte-level BPE whose post-processor adds a BOS (id 0), as Llama's does."""
    return HFTokenizer.from_file(write_chat_model(tmp_path_factory.mktemp("bos"), "{{ messages }}"))


def judge_with(tok: Any, body: dict[str, Any], window: int = 100, **guard: Any) -> GuardResult:
    return ContextWindowGuard(tok, window, **guard).judge(OpenAIExtractor().extract(body).guard_input())


def test_a_completion_with_add_special_tokens_false_is_counted_without_the_bos(bos_tok: HFTokenizer) -> None:
    # vLLM's CompletionRequest.add_special_tokens (default true) is passed to the tokenizer; false adds no BOS.
    # Before, the guard counted the BOS whatever the request said.
    body = {"prompt": "hello world", "max_tokens": 4}
    with_bos = judge_with(bos_tok, body).token_ids[0]
    assert with_bos[0] == 0
    for sent in (False, "no", 0):
        assert judge_with(bos_tok, {**body, "add_special_tokens": sent}).token_ids[0] == with_bos[1:]
    assert judge_with(bos_tok, {**body, "add_special_tokens": True}).token_ids[0] == with_bos
    # The batch, truncation and truncate_prompt_tokens paths count the same way.
    batch = judge_with(bos_tok, {"prompt": ["hello world", "one two"], "add_special_tokens": False})
    assert [0 in ids for ids in batch.token_ids] == [False, False]
    window = len(with_bos) - 1 + 4
    assert judge_with(bos_tok, {**body, "add_special_tokens": False}, window).input_tokens == len(with_bos) - 1
    with pytest.raises(ContextWindowExceededError):
        judge_with(bos_tok, body, window)
    cut = judge_with(bos_tok, {**body, "add_special_tokens": False}, window - 1, truncate_on_overflow=True)
    assert cut.token_ids[0] == with_bos[2:]
    kept = judge_with(bos_tok, {**body, "add_special_tokens": False, "truncate_prompt_tokens": 2})
    assert kept.token_ids[0] == with_bos[-2:]
    with pytest.raises(InvalidRequestError) as info:
        OpenAIExtractor().extract({**body, "add_special_tokens": "maybe"})
    assert info.value.param == "add_special_tokens"


def test_a_chat_adds_no_special_tokens_unless_asked(bos_tok: HFTokenizer) -> None:
    # vLLM's ChatCompletionRequest.add_special_tokens defaults to false: the template writes the BOS itself.
    template = ChatTemplate("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    chat = {"messages": [{"role": "user", "content": "hello world"}]}
    plain = judge_with(bos_tok, chat, chat_template=template).token_ids[0]
    assert plain[0] != 0
    assert judge_with(bos_tok, {**chat, "add_special_tokens": True}, chat_template=template).token_ids[0] == (0, *plain)


@pytest.mark.parametrize(
    "body",
    [{"prompt": ""}, {"prompt": ["a", ""]}, {"prompt": [[1], []]}, {"prompt": "", "truncate_prompt_tokens": 5}],
)
def test_a_prompt_of_no_token_is_left_to_the_backend(body: dict[str, Any]) -> None:
    # OpenAI's API completes an empty prompt from nothing and vLLM refuses it with its own 400: the guard judges
    # limits only, and an empty prompt is within them.
    result = judge(body, 100)
    assert min(one.input_tokens for one in result.batch or (result,)) == 0


def test_an_empty_list_of_prompts_is_refused_as_vllm_refuses_it() -> None:
    with pytest.raises(InvalidRequestError) as info:
        OpenAIExtractor().extract({"prompt": []})
    assert info.value.param == "prompt"
    assert info.value.message == (
        'prompt is an empty list: send at least one prompt (vLLM: "please provide at least one prompt")'
    )


def test_an_empty_prompt_counts_what_the_tokenizer_adds(bos_tok: HFTokenizer) -> None:
    # An empty string is one BOS token to a tokenizer that adds one; without the BOS it is empty (and passed on).
    assert judge_with(bos_tok, {"prompt": ""}).token_ids == ((0,),)
    assert judge_with(bos_tok, {"prompt": "", "add_special_tokens": False}).token_ids == ((),)
    template = ChatTemplate("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    empty_chat = {"messages": [{"role": "user", "content": ""}]}
    assert judge(empty_chat, 100, chat_template=template).input_tokens == 0


@pytest.mark.parametrize(
    "fields",
    [
        {"continue_final_message": True, "add_generation_prompt": True},
        {"continue_final_message": True},  # add_generation_prompt is true by default in vLLM
        {"continue_final_message": "yes", "add_generation_prompt": 1},
        # vLLM's check_generation_prompt reads the raw values before pydantic does: "no" is a true string there.
        {"continue_final_message": True, "add_generation_prompt": "no"},
    ],
)
def test_continue_final_message_with_a_generation_prompt_is_refused(fields: dict[str, Any]) -> None:
    # vLLM refuses both (the request model's check_generation_prompt, or transformers' apply_chat_template for the
    # default); before, the guard rendered the chat with both and passed it.
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "the"}]}
    with pytest.raises(InvalidRequestError) as info:
        OpenAIExtractor().extract({**chat, **fields})
    assert info.value.param == "continue_final_message"
    assert info.value.message == (
        "Cannot set both `continue_final_message` and `add_generation_prompt` to True (add_generation_prompt is "
        "true unless the request sends false): send add_generation_prompt false to continue the final message"
    )
    assert OpenAIExtractor().extract({**chat, "continue_final_message": True, "add_generation_prompt": False}).chat


def test_continue_final_message_needs_a_message_to_continue() -> None:
    # transformers refuses it ("continue_final_message is set but the conversation is empty!"), and so vLLM.
    with pytest.raises(InvalidRequestError) as info:
        OpenAIExtractor().extract({"messages": [], "continue_final_message": True, "add_generation_prompt": False})
    assert info.value.param == "continue_final_message"
    assert info.value.message == (
        "continue_final_message is set but the conversation is empty: send the message to continue"
    )


class _VllmCustomMessage(TypedDict, total=False):
    """vLLM's ``CustomChatCompletionMessageParam`` (vllm/entrypoints/chat_utils.py): "Enables custom roles"."""

    role: Required[str]
    content: str


OPENAI_MESSAGE: TypeAdapter[Any] = TypeAdapter(ChatCompletionMessageParam)
VLLM_MESSAGE: TypeAdapter[Any] = TypeAdapter(ChatCompletionMessageParam | _VllmCustomMessage)
ROLE_VALUES = st.one_of(
    st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", "observation", "User", ""]),
    st.text(max_size=6),
    st.none(),
    st.integers(),
    st.booleans(),
    st.lists(st.text(max_size=2), max_size=1),
)


@settings(max_examples=300, deadline=None)
@given(role=ROLE_VALUES, sent=st.booleans())
def test_roles_are_refused_as_openai_refuses_them_and_left_open_as_vllm_leaves_them(role: Any, sent: bool) -> None:
    # (name and tool_call_id: a function or tool message needs them in OpenAI's types; the guard does not read them)
    message = {"content": "hi", "name": "n", "tool_call_id": "c", **({"role": role} if sent else {})}
    openai = OpenAIExtractor(roles=OpenAIExtractor.OPENAI_ROLES)
    for extractor, model in ((openai, OPENAI_MESSAGE), (OpenAIExtractor(), VLLM_MESSAGE)):
        try:
            model.validate_python(message)
        except ValidationError:
            with pytest.raises(InvalidRequestError) as info:
                extractor.extract({"messages": [message]})
            assert (info.value.code, info.value.param) == ("E5010", "messages[0].role")
        else:
            assert extractor.extract({"messages": [message]}).segments == ["hi"]


@pytest.mark.parametrize(
    ("call", "message", "param"),
    [
        (
            {"id": "1", "type": "function"},
            "messages[1].tool_calls[0] must be an object with a 'function' object (its name and arguments), got "
            "NoneType: fix the request body",
            "messages[1].tool_calls[0]",
        ),
        (
            "f()",
            "messages[1].tool_calls[0] must be an object with a 'function' object (its name and arguments), got str "
            "as the call: fix the request body",
            "messages[1].tool_calls[0]",
        ),
    ],
)
def test_a_tool_call_vllm_cannot_parse_is_refused(call: Any, message: str, param: str) -> None:
    # vLLM's _postprocess_messages reads call["function"]: it refuses these requests.
    body = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [call]}]}
    with pytest.raises(InvalidRequestError) as info:
        OpenAIExtractor().extract(body)
    assert (info.value.message, info.value.param) == (message, param)


@pytest.mark.parametrize(
    ("arguments", "rendered"),
    [
        ("", "{}"),
        ('{"a": 1}', '{"a": 1}'),
        ("{'city': 'Paris'}", "{}"),
        ('{"a": ', "{}"),
        ("  ", "{}"),
        ("[1]", "{}"),
        ("42", "{}"),
        ("null", "{}"),
    ],
)
def test_tool_call_arguments_text_is_taken_as_vllm_takes_it(arguments: str, rendered: str) -> None:
    # vLLM's _postprocess_messages parses the text and gives a template {} for text that is not a JSON object (a
    # malformed call in a conversation's history would otherwise fail every later turn). Before, "[1]" and "42"
    # reached the template as a list and a number.
    call = {"id": "1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    template = ChatTemplate(
        "{% for m in messages %}{% for c in m.tool_calls or [] %}{{ c.function.arguments | tojson }}"
        "{% endfor %}{% endfor %}"
    )
    extracted = OpenAIExtractor().extract({"messages": [{"role": "assistant", "tool_calls": [call]}]})
    assert extracted.chat is not None
    assert template.render(extracted.chat.messages, options={"add_generation_prompt": False}) == rendered


#: vLLM's CompletionRequest.prompt (vllm/entrypoints/openai/completion/protocol.py), read by pydantic in smart mode.
VLLM_PROMPT: TypeAdapter[Any] = TypeAdapter(
    list[Annotated[int, Field(ge=0)]] | list[list[Annotated[int, Field(ge=0)]]] | str | list[str]
)
PROMPT_PIECES = st.one_of(
    st.integers(-2, 40),
    st.sampled_from([1.0, 2.5, -1.0, True, False, "7", " 8 ", "x", "", "-3", "4.0"]),
)
PROMPTS = st.one_of(
    st.lists(PROMPT_PIECES, min_size=1, max_size=4),
    st.lists(st.lists(PROMPT_PIECES, max_size=3) | PROMPT_PIECES, min_size=1, max_size=3),
)


@settings(max_examples=600, deadline=None)
@given(prompt=PROMPTS)
def test_a_prompt_list_is_read_as_vllm_reads_it(prompt: list[Any]) -> None:
    # Before, [1.0, 2.0] and [true, 2] (token ids to vLLM) were E5010, and [-1] or ["a", [7]] (refused by vLLM)
    # passed.
    try:
        read = VLLM_PROMPT.validate_python(prompt)
    except ValidationError:
        with pytest.raises(InvalidRequestError) as info:
            OpenAIExtractor().extract({"prompt": prompt})
        assert info.value.code == "E5010"
        return
    extracted = OpenAIExtractor().extract({"prompt": prompt})
    if read and all(isinstance(item, int) for item in read):
        assert (extracted.segments, extracted.batch) == ([tuple(read)], False)
    else:
        assert extracted.segments == [item if isinstance(item, str) else tuple(item) for item in read]
        assert extracted.batch


@pytest.mark.parametrize(
    ("prompt", "message", "param"),
    [
        (
            [3, -1],
            "prompt[1] is -1, not a token id: token ids are whole numbers of at least 0 (vLLM refuses others): fix "
            "the request body",
            "prompt[1]",
        ),
        (
            [[3], [2, "x"]],
            "prompt[1][1] must be a token id (a whole number), got str: fix the request body",
            "prompt[1][1]",
        ),
        (
            ["a", [7]],
            "prompt mixes strings and lists of token ids: vLLM takes a string, a list of strings, token ids or a list "
            "of token id lists, one kind at a time (so does OpenAI): send one kind",
            "prompt",
        ),
    ],
)
def test_a_prompt_list_vllm_refuses_is_e5010_naming_why(prompt: list[Any], message: str, param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        OpenAIExtractor().extract({"prompt": prompt})
    assert (info.value.message, info.value.param) == (message, param)
