"""``/v1/embeddings`` as vLLM serves it: each input against the whole window, nothing generated.

References (vllm-project/vllm): ``EmbeddingCompletionRequest``/``EmbeddingChatRequest`` and their mixins
(vllm/entrypoints/pooling/base/protocol.py: ``input: list[int] | list[list[int]] | str | list[str]``,
``truncate_prompt_tokens >= -1``, ``add_special_tokens`` true, a chat's ``add_generation_prompt`` false),
``EmbeddingTokenizeParamsMixin`` (``max_total_tokens=max_model_len``, ``max_output_tokens=0``), ``TokenizeParams``
(vllm/renderers/params.py: more than ``max_total_tokens - max_output_tokens`` input tokens is refused, ``-1`` keeps
that many) and ``InputProcessor._validate_prompt_len`` (a pooling prompt may fill the window).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from pydantic import TypeAdapter, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from tests.validation._helpers import char_tok, write_chat_model
from tests.validation.test_vllm_parity import PROMPTS

from autoglm_runtime.errors import ContextWindowExceededError, InvalidRequestError
from autoglm_runtime.validation import (
    ChatTemplate,
    ContextWindowGuard,
    GuardInput,
    GuardResult,
    GuardSettings,
    HFTokenizer,
    OpenAIExtractor,
    ValidationMiddleware,
)

#: vLLM's embeddings ``input`` (no bound on the token ids, unlike a completion's ``prompt``).
VLLM_INPUT: TypeAdapter[Any] = TypeAdapter(list[int] | list[list[int]] | str | list[str])


async def echo(request: Request) -> JSONResponse:
    result: GuardResult | None = getattr(request.state, "guard_result", None)
    return JSONResponse(
        {
            "received": await request.json(),
            "input_tokens": result.input_tokens if result else None,
            "each": [one.input_tokens for one in result.batch] if result and result.batch else None,
        }
    )


def app(*, window: int = 10, truncate: bool = False, **options: Any) -> ValidationMiddleware:
    routes = [Route(path, echo, methods=["POST"]) for path in ("/v1/embeddings", "/v1/completions", "/embed")]
    guard = ContextWindowGuard(char_tok(), window, truncate_on_overflow=truncate, default_output_tokens=5)
    return ValidationMiddleware(Starlette(routes=routes), context_guard=guard, **options)


def post(middleware: Any, body: Any, path: str = "/v1/embeddings") -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=middleware)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post(path, json=body)

    return asyncio.run(send())


def error(response: httpx.Response) -> tuple[int, str, str | None, str]:
    body = response.json()["error"]
    return response.status_code, body["code"], body["param"], body["message"]


@pytest.mark.parametrize(
    ("body", "tokens", "each"),
    [
        ({"input": "x" * 10}, 10, None),  # the whole window: nothing is generated (vLLM's pooling runner takes it)
        ({"input": ["x" * 10, "y" * 3]}, 13, [10, 3]),  # each input has the window to itself
        ({"input": list(range(10))}, 10, None),  # one tokenized input
        ({"input": [[1] * 10, [2] * 10]}, 20, [10, 10]),
        ({"input": "x" * 10, "max_tokens": 50, "max_completion_tokens": 50}, 10, None),  # ignored, as vLLM does
    ],
)
def test_each_input_may_fill_the_window_and_no_budget_is_read(body: Any, tokens: int, each: Any) -> None:
    # The guard's default_output_tokens (5) is not asked of an embedding either.
    response = post(app(), body)
    assert (response.status_code, response.json()["input_tokens"], response.json()["each"]) == (200, tokens, each)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x" * 11}, "input"),
        ({"input": ["x" * 3, "y" * 11]}, "input[1]"),
        ({"input": list(range(11))}, "input"),
        ({"input": [[1], [2] * 11, [3]]}, "input[1]"),
    ],
)
def test_an_input_past_the_window_is_e0513_naming_it(body: Any, param: str) -> None:
    # One input is "the input" (before: "in the input (input)"); one of several is named.
    where, fix = (f"{param}, one of the request's inputs,", param) if param == "input[1]" else ("the input",) * 2
    assert error(post(app(), body)) == (
        400,
        "E0513",
        param,
        f"This model's maximum context length is 10 tokens. However, you requested 11 tokens in {where} for "
        f"embedding generation, more than the context window of 10 tokens: shorten {fix}",
    )


def test_an_embeddings_path_is_guarded_by_default_and_others_can_be_named() -> None:
    # Before, /v1/embeddings was not a default path: any input passed unjudged.
    assert post(app(), {"input": "x" * 11}).status_code == 400
    assert GuardSettings().paths == ("/v1/completions", "/v1/chat/completions", "/v1/embeddings")
    assert GuardSettings().embedding_paths == ("/v1/embeddings",)
    custom = app(paths=["/embed"], embedding_paths=["/embed"])
    assert post(custom, {"input": "x" * 10}, "/embed").status_code == 200
    assert error(post(custom, {"input": ["x", "x" * 11]}, "/embed"))[:3] == (400, "E0513", "input[1]")
    # Not an embeddings path: "input" is no field of a completion, and nothing is judged.
    assert post(app(paths=None), {"input": "x" * 11}, "/v1/completions").json()["input_tokens"] is None


def test_only_the_long_input_is_cut_when_truncation_is_on_and_it_is_reported() -> None:
    response = post(app(truncate=True), {"input": ["a" * 4, "b" * 14], "model": "m"})
    assert response.status_code == 200
    assert response.json()["received"] == {"input": ["a" * 4, "b" * 10], "model": "m"}
    assert (response.headers["x-autoglm-truncated-tokens"], response.headers["x-autoglm-warning-code"]) == (
        "4",
        "E0514",
    )


def test_truncate_prompt_tokens_keeps_at_most_the_whole_window() -> None:
    # -1 keeps the whole window (vLLM: max_total_tokens - 0); the backend cuts, so a long input passes as sent.
    response = post(app(), {"input": "x" * 50, "truncate_prompt_tokens": -1})
    assert (response.status_code, response.json()["input_tokens"]) == (200, 10)
    assert post(app(), {"input": "x" * 50, "truncate_prompt_tokens": 10}).json()["input_tokens"] == 10
    assert error(post(app(), {"input": "x", "truncate_prompt_tokens": 11})) == (
        400,
        "E0513",
        "truncate_prompt_tokens",
        "This model's maximum context length is 10 tokens. However, truncate_prompt_tokens asks to keep 11 prompt "
        "tokens, which is more than the context window: lower truncate_prompt_tokens to at most 10, or send -1 for "
        "all the room there is",
    )
    assert error(post(app(), {"input": "x", "truncate_prompt_tokens": 0}))[:3] == (
        400,
        "E5010",
        "truncate_prompt_tokens",
    )


@pytest.mark.parametrize(
    ("value", "param", "message"),
    [
        ({"text": "a"}, "input", "input must be a string, a list of strings or a list of token ids, got dict"),
        ([], "input", "input is an empty list: send at least one prompt"),
        (["a", [7]], "input", "input mixes strings and lists of token ids"),
        ([[3], [2, "x"]], "input[1][1]", "input[1][1] must be a token id (a whole number), got str"),
        (7, "input", "input must be a string, a list of strings or a list of token ids, got int"),
    ],
)
def test_an_input_of_the_wrong_shape_is_e5010_as_a_prompt_is(value: Any, param: str, message: str) -> None:
    status, code, named, text = error(post(app(), {"input": value}))
    assert (status, code, named) == (400, "E5010", param)
    assert text.startswith(message)


@settings(max_examples=400, deadline=None)
@given(value=PROMPTS)
def test_an_input_list_is_read_as_vllm_reads_it(value: list[Any]) -> None:
    try:
        read = VLLM_INPUT.validate_python(value)
    except ValidationError:
        read = None
    ids = [read] if read and all(isinstance(item, int) for item in read) else read or []
    if read is None or any(isinstance(item, list) and min(item, default=0) < 0 for item in ids):
        # Refused by vLLM's request model, or holding a negative token id no model can read: refused here.
        with pytest.raises(InvalidRequestError) as info:
            OpenAIExtractor().extract({"input": value}, embedding=True)
        assert info.value.code == "E5010"
        return
    extracted = OpenAIExtractor().extract({"input": value}, embedding=True)
    if all(isinstance(item, int) for item in read):
        assert (extracted.segments, extracted.batch) == ([tuple(read)], False)
    else:
        assert extracted.segments == [item if isinstance(item, str) else tuple(item) for item in read]
        assert extracted.batch


def test_the_extracted_embedding_generates_nothing() -> None:
    extracted = OpenAIExtractor().extract({"input": "hi", "max_tokens": 7, "suffix": "s", "tools": []}, embedding=True)
    assert (extracted.segments, extracted.max_output_tokens, extracted.min_output_tokens) == (["hi"], 0, 0)
    assert extracted.embedding
    # The same body read as a completion: its input is "prompt", so none is found.
    assert not OpenAIExtractor().extract({"input": "hi"}).has_input


def test_a_guard_input_marked_embedding_ignores_any_budget() -> None:
    guard = ContextWindowGuard(char_tok(), 4, default_output_tokens=3)
    assert guard.judge(GuardInput("abcd", 100, "input", embedding=True, min_output_tokens=1)).output_tokens == 0
    with pytest.raises(ContextWindowExceededError) as info:
        guard.judge(GuardInput(["ab", "abcde"], None, "input", batch=True, embedding=True))
    assert info.value.param == "input[1]"


TEMPLATE = "{% for m in messages %}[{{ m['content'] }}]{% endfor %}{% if add_generation_prompt %}<gen>{% endif %}"


def test_an_embeddings_chat_is_rendered_without_the_generation_prompt(tmp_path: Path) -> None:
    # vLLM's EmbeddingChatRequest: add_generation_prompt false unless sent, and continue_final_message alone is fine.
    model = write_chat_model(tmp_path / "m", TEMPLATE)
    tokenizer = HFTokenizer.from_file(model / "tokenizer.json")
    guard = ContextWindowGuard(tokenizer, 1000, chat_template=ChatTemplate.from_file(model))
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hello world"}]}
    embedded = guard.judge(OpenAIExtractor().extract(body, embedding=True).guard_input())
    assert embedded.prompt == "[hello world]"
    assert guard.judge(OpenAIExtractor().extract(body).guard_input()).prompt == "[hello world]<gen>"
    asked = OpenAIExtractor().extract({**body, "add_generation_prompt": True}, embedding=True)
    assert guard.judge(asked.guard_input()).prompt == "[hello world]<gen>"
    kept = OpenAIExtractor().extract({**body, "continue_final_message": True}, embedding=True)
    assert guard.judge(kept.guard_input()).prompt == "[hello world"
    with pytest.raises(InvalidRequestError):
        OpenAIExtractor().extract({**body, "continue_final_message": True})  # a chat completion's default is true


@pytest.mark.parametrize(
    ("embedding", "sent", "reserved"),
    [
        (True, {}, 0),
        (True, {"add_generation_prompt": True}, 4),
        (False, {}, 4),
        (False, {"add_generation_prompt": False}, 0),
    ],
)
def test_a_chat_without_a_template_reserves_the_reply_start_only_where_one_is_rendered(
    embedding: bool, sent: dict[str, Any], reserved: int
) -> None:
    # Two messages of 5 characters at message_tokens=4: 10 + 2 * 4 tokens, and 4 more for the reply's start only
    # where the backend renders one. Before, an embedding's chat (no generation prompt in vLLM) paid it too.
    guard = ContextWindowGuard(char_tok(), 100)
    body = {"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "world"}], **sent}
    result = guard.judge(OpenAIExtractor().extract(body, embedding=embedding).guard_input())
    assert result.input_tokens == 18 + reserved
