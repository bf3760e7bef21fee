"""``require_input``: a request that gives the model no input is refused (E5010) when asked, passed otherwise."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import grpc
import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from tests.validation._helpers import char_tok
from tests.validation.test_embeddings import echo, error, post
from tests.validation.test_grpc import rpc_error, serve, unary
from tests.validation.test_grpc_aio import SERVICE, failure, payload, run

from autoglm_runtime.errors import InvalidRequestError
from autoglm_runtime.validation import (
    ContextWindowGuard,
    GuardInput,
    GuardSettings,
    OpenAIExtractor,
    ValidationMiddleware,
    guarded,
)
from autoglm_runtime.validation.grpc import AsyncValidationInterceptor, ValidationInterceptor

ROUTES = [Route(path, echo, methods=["POST"]) for path in ("/v1/completions", "/v1/chat/completions", "/v1/embeddings")]
GUARD = ContextWindowGuard(char_tok(), 50)
NO_PROMPT = (
    "the request gives the model no input: it sends none of prompt, messages (or sends them null): send the model's "
    "input; this server refuses requests without it (require_input)"
)


def middleware(**options: Any) -> ValidationMiddleware:
    return ValidationMiddleware(Starlette(routes=ROUTES), **options)


@pytest.mark.parametrize("body", [{"model": "m"}, {"prompt": None}, {"messages": None, "max_tokens": 5}])
@pytest.mark.parametrize(("path", "param"), [("/v1/completions", "prompt"), ("/v1/chat/completions", "messages")])
def test_a_body_without_input_is_refused_when_input_is_required(body: dict[str, Any], path: str, param: str) -> None:
    # param names the field the route takes, as OpenAI names a missing one (before: null).
    assert error(post(middleware(context_guard=GUARD, require_input=True), body, path)) == (
        400,
        "E5010",
        param,
        NO_PROMPT,
    )
    # Without a tokenizer too: nothing needs counting to see that nothing is there.
    assert post(middleware(context_guard=None, require_input=True), body, path).status_code == 400
    # The default is unchanged: the app receives the body as sent (a budget alone is judged, on its own).
    response = post(middleware(context_guard=GUARD), body, path)
    assert (response.status_code, response.json()["received"]) == (200, body)


def test_an_embeddings_body_without_input_names_input() -> None:
    response = post(middleware(context_guard=GUARD, require_input=True), {"model": "m", "dimensions": 8})
    assert error(response)[2] == "input"
    assert error(response)[3].startswith("the request gives the model no input: it sends none of input, messages ")
    assert post(middleware(context_guard=GUARD), {"model": "m"}).status_code == 200


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings"])
@pytest.mark.parametrize("body", [{"messages": []}, {"messages": [], "tools": [{"type": "function"}], "max_tokens": 5}])
def test_an_empty_list_of_messages_is_no_input_when_input_is_required(body: dict[str, Any], path: str) -> None:
    # Before, "messages": [] passed require_input (the field is sent): a request with nothing for the model to read.
    assert error(post(middleware(context_guard=GUARD, require_input=True), body, path)) == (
        400,
        "E5010",
        "messages",
        "the request gives the model no input: messages is an empty list: send at least one message; this server "
        "refuses requests without input (require_input)",
    )
    # The default is vLLM's: the body passes as sent.
    response = post(middleware(context_guard=GUARD), body, path)
    assert (response.status_code, response.json()["received"]) == (200, body)
    # An embedding's input beside the empty list is input.
    if path == "/v1/embeddings":
        given = {**body, "input": "hi"}
        assert post(middleware(context_guard=GUARD, require_input=True), given, path).status_code == 200


@pytest.mark.parametrize(
    "body", [{"prompt": ""}, {"prompt": [""]}, {"messages": [{"role": "user", "content": ""}]}, {"prompt": [[]]}]
)
def test_an_input_field_that_is_sent_counts_as_input_even_empty(body: dict[str, Any]) -> None:
    # An empty prompt is input to vLLM (it reads the BOS): only an absent or null field is missing over HTTP.
    assert post(middleware(context_guard=GUARD, require_input=True), body, "/v1/completions").status_code == 200


def test_the_settings_file_takes_require_input() -> None:
    assert GuardSettings().require_input is False
    settings = GuardSettings.from_mapping({"require_input": True})
    assert post(settings.middleware(Starlette(routes=ROUTES)), {"model": "m"}, "/v1/completions").status_code == 400


@pytest.mark.parametrize("text", ["", [], ["", ""], [[]]])
def test_the_decorator_refuses_an_empty_input_when_input_is_required(text: Any) -> None:
    @guarded(GUARD, require_input=True)
    def generate(prompt: Any, max_tokens: int = 5) -> str:
        return "ran"

    with pytest.raises(InvalidRequestError) as info:
        generate(text)
    assert (info.value.code, info.value.param, info.value.message) == (
        "E5010",
        "prompt",
        "the request gives the model no input: prompt is empty or not set: send the model's input; this server "
        "refuses requests without it (require_input)",
    )
    assert guarded(GUARD)(generate.__wrapped__)(text) == "ran"  # type: ignore[attr-defined]
    assert generate("hi") == "ran"
    assert generate([{"role": "user", "content": ""}]) == "ran"  # a chat message is input


def test_the_interceptor_refuses_an_unset_prompt_when_input_is_required() -> None:
    def extractor(request: bytes) -> GuardInput | None:
        body = json.loads(request)
        # A proto3 string field left unset reads "": a JSON body stands in for the message here.
        return None if body.get("health") else GuardInput(body.get("prompt", ""), None, "prompt")

    server, channel = serve(_interceptor(extractor, require_input=True))
    try:
        refused = rpc_error(channel, {"model": "m"})
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.details() == (
            "E5010: the request gives the model no input: prompt is empty or not set: send the model's input; this "
            "server refuses requests without it (require_input)"
        )
        assert unary(channel, {"prompt": "hi"})[0] == {"received": {"prompt": "hi"}}
        assert unary(channel, {"health": True})[0] == {"received": {"health": True}}  # None still skips
    finally:
        channel.close()
        server.stop(None).wait()
    server, channel = serve(_interceptor(extractor))
    try:
        assert unary(channel, {"model": "m"})[0] == {"received": {"model": "m"}}
    finally:
        channel.close()
        server.stop(None).wait()


def _interceptor(extractor: Any, **options: Any) -> ValidationInterceptor:
    return ValidationInterceptor(context_guard=GUARD, extractor=extractor, **options)


def test_the_async_interceptor_refuses_an_empty_prompt_when_input_is_required() -> None:
    def extractor(request: bytes) -> GuardInput:
        return GuardInput(json.loads(request)["prompt"], None, "prompt")

    async def calls(channel: grpc.aio.Channel) -> Any:
        call = channel.unary_unary(f"/{SERVICE}/Complete")
        return await failure(call(payload(""))), await call(payload("hi"))

    required = AsyncValidationInterceptor(context_guard=GUARD, extractor=extractor, require_input=True)
    refused, passed = run(required, calls)
    assert refused == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "E5010: the request gives the model no input: prompt is empty or not set: send the model's input; this "
        "server refuses requests without it (require_input)",
    )
    assert passed == payload("hi")

    async def empty(channel: grpc.aio.Channel) -> Any:
        return await channel.unary_unary(f"/{SERVICE}/Complete")(payload(""))

    assert run(AsyncValidationInterceptor(context_guard=GUARD, extractor=extractor), empty) == payload("")


def test_the_docs_never_read_a_guard_result_that_may_be_missing() -> None:
    # Without require_input, a body holding no input reaches the app with no guard_result: a snippet reading
    # request.state.guard_result.input_tokens answers it with a 500 (AttributeError). The Ray Serve one did.
    root = Path(__file__).resolve().parents[2]
    for page in (root / "README.md", *sorted((root / "docs").glob("*.md"))):
        assert re.findall(r"state\.guard_result\.\w+", page.read_text(encoding="utf-8")) == [], page.name


class _OldMissingInput(OpenAIExtractor):
    # An override written before missing_input took chat= (0.1.x's signature): it was public, and customised.
    def missing_input(self, *, embedding: bool = False) -> InvalidRequestError:  # type: ignore[override]
        return InvalidRequestError("send a prompt (our wording)", param="prompt")


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_a_missing_input_override_without_chat_still_answers_e5010(path: str) -> None:
    # Before, require_input called it with chat= and the TypeError answered the request with a 500.
    refused = post(middleware(context_guard=GUARD, require_input=True, extractor=_OldMissingInput()), {}, path)
    assert error(refused) == (400, "E5010", "prompt", "send a prompt (our wording)")
