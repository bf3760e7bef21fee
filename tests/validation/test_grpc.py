"""ValidationInterceptor on a real grpc server on loopback (generic handlers over raw bytes: no protoc)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.validation._helpers import char_tok, extract, rewrite

from autoglm_runtime.validation import Chat, ContextWindowGuard, GuardInput, OpenAIExtractor
from autoglm_runtime.validation.grpc import ValidationInterceptor

SERVICE = "test.Llm"


def complete(request: bytes, context: grpc.ServicerContext) -> bytes:
    return json.dumps({"received": json.loads(request)}).encode()


def chat(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
    return json.dumps({"received": [json.loads(r) for r in requests]}).encode()


def serve(interceptor: ValidationInterceptor, options: Any = ()) -> tuple[grpc.Server, grpc.Channel]:
    server = grpc.server(ThreadPoolExecutor(max_workers=2), interceptors=[interceptor], options=options)
    handlers = {
        "Complete": grpc.unary_unary_rpc_method_handler(complete),
        "Chat": grpc.stream_unary_rpc_method_handler(chat),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, grpc.insecure_channel(f"127.0.0.1:{port}")


@pytest.fixture
def channel_for() -> Iterator[Any]:
    started: list[tuple[grpc.Server, grpc.Channel]] = []

    def make(options: Any = (), **kwargs: Any) -> grpc.Channel:
        server, channel = serve(ValidationInterceptor(**kwargs), options)
        started.append((server, channel))
        return channel

    yield make
    for server, channel in started:
        channel.close()
        server.stop(None).wait()


def unary(channel: grpc.Channel, body: Any, metadata: Any = ()) -> Any:
    call = channel.unary_unary(f"/{SERVICE}/Complete")
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    response, info = call.with_call(payload, metadata=metadata, timeout=10)
    return json.loads(response), dict(info.trailing_metadata() or ())


def rpc_error(channel: grpc.Channel, body: Any, metadata: Any = ()) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        unary(channel, body, metadata)
    return info.value


def test_fitting_request_passes(channel_for: Any) -> None:
    channel = channel_for(context_guard=ContextWindowGuard(char_tok(), 20), extractor=extract)
    assert unary(channel, {"prompt": "hello", "max_tokens": 5}) == (
        {"received": {"prompt": "hello", "max_tokens": 5}},
        {},
    )


def test_overlong_metadata_aborts_before_the_handler(channel_for: Any) -> None:
    channel = channel_for()
    error = rpc_error(channel, b"not even json", metadata=[("authorization", "Bearer " + "t" * 600)])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        # For the client, who cannot raise the limit (before: "or raise the limit if such values are legitimate").
        "E0512: the authorization header is 607 bytes long, more than the 512 bytes this server takes: send at most "
        "512 bytes"
    )
    assert dict(error.trailing_metadata()) == {"x-autoglm-error-code": "E0512"}  # as HTTP's header


def test_metadata_over_grpcs_own_limit_gets_e0512_once_the_server_takes_it(channel_for: Any) -> None:
    # docs/validation.md: past grpc.max_metadata_size (8 KiB) gRPC refuses some calls itself with
    # RESOURCE_EXHAUSTED and no code, at random; with the documented server option every one reaches the guard.
    channel = channel_for(options=[("grpc.max_metadata_size", 64 * 1024)])
    seen = set()
    for _ in range(20):
        error = rpc_error(channel, b"{}", metadata=[("authorization", "t" * 12_000)])
        seen.add((error.code(), dict(error.trailing_metadata() or ()).get("x-autoglm-error-code")))
    assert seen == {(grpc.StatusCode.INVALID_ARGUMENT, "E0512")}


def test_context_overflow_aborts_with_the_code(channel_for: Any) -> None:
    channel = channel_for(context_guard=ContextWindowGuard(char_tok(), 20), extractor=extract)
    error = rpc_error(channel, {"prompt": "x" * 18, "max_tokens": 5})
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        "E0513: This model's maximum context length is 20 tokens. However, you requested 23 tokens (18 "
        "in the input, 5 in the completion asked for by max_tokens), more than the context window of 20 "
        "tokens: shorten the input or lower max_tokens"
    )
    assert dict(error.trailing_metadata()) == {"x-autoglm-error-code": "E0513"}


def test_lone_surrogate_aborts_with_e5009(channel_for: Any) -> None:
    channel = channel_for(context_guard=ContextWindowGuard(char_tok(), 20), extractor=extract)
    error = rpc_error(channel, b'{"prompt": "\\udfff"}')
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        "E5009: the input contains a lone surrogate U+DFFF at character 0 of prompt, which no tokenizer can "
        "encode: send well-formed Unicode text"
    )


def test_truncation_rewrites_the_request_and_reports_it(channel_for: Any) -> None:
    guard = ContextWindowGuard(char_tok(), 20, truncate_on_overflow=True)
    channel = channel_for(context_guard=guard, extractor=extract, rewriter=rewrite)
    response, trailing = unary(channel, {"prompt": "abcdefghijklmnopqrstuvwxyz", "max_tokens": 5})
    assert response == {"received": {"prompt": "lmnopqrstuvwxyz", "max_tokens": 5}}
    assert trailing == {
        "x-autoglm-truncated-tokens": "11",
        "x-autoglm-truncated-messages": "0:11",
        "x-autoglm-warning-code": "E0514",
    }


def test_without_a_rewriter_truncation_becomes_rejection(channel_for: Any) -> None:
    guard = ContextWindowGuard(char_tok(), 20, truncate_on_overflow=True)
    channel = channel_for(context_guard=guard, extractor=extract)
    error = rpc_error(channel, {"prompt": "x" * 30})
    assert error.details() == (
        "E0513: This model's maximum context length is 20 tokens. However, you requested 31 tokens (30 "
        "in the input, 1 for the completion by default, as the request sets no max_tokens), more than the "
        "context window of 20 tokens: shorten the input"
    )


def test_streaming_requests_are_judged_message_by_message(channel_for: Any) -> None:
    channel = channel_for(context_guard=ContextWindowGuard(char_tok(), 10), extractor=extract)
    call = channel.stream_unary(f"/{SERVICE}/Chat")
    ok = [json.dumps({"prompt": p}).encode() for p in ("one", "two")]
    assert json.loads(call(iter(ok), timeout=10)) == {"received": [{"prompt": "one"}, {"prompt": "two"}]}
    with pytest.raises(grpc.RpcError) as info:
        call(iter([*ok, json.dumps({"prompt": "x" * 11}).encode()]), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(
        "E0513: This model's maximum context length is 10 tokens. However, you requested 12 tokens"
    )


def test_extractor_may_return_plain_text_or_none(channel_for: Any) -> None:
    def by_prefix(request: bytes) -> str | None:
        return None if request.startswith(b"skip") else request.decode()

    channel = channel_for(context_guard=ContextWindowGuard(char_tok(), 10), extractor=by_prefix)
    call = channel.unary_unary(f"/{SERVICE}/Complete")
    with pytest.raises(grpc.RpcError) as info:
        call(b"1234567890", timeout=10)
    # A plain string leaves room for the one token the model writes, as an OpenAI request does (before: 0, and a
    # prompt filling the window passed although vLLM refuses it).
    assert info.value.details() == (
        "E0513: This model's maximum context length is 10 tokens. However, you requested 11 tokens (10 in the input, "
        "1 for the completion by default, as the request sets no max_tokens), more than the context window of 10 "
        "tokens: shorten the input"
    )
    with pytest.raises(grpc.RpcError) as passed:
        call(b"skip: not json, so the handler itself fails", timeout=10)
    assert passed.value.code() == grpc.StatusCode.UNKNOWN  # the request reached the handler


def test_fuzzed_calls_get_a_coded_invalid_argument_or_pass(channel_for: Any) -> None:
    guard = ContextWindowGuard(char_tok(), 300, truncate_on_overflow=True)
    channel = channel_for(context_guard=guard, extractor=extract, rewriter=rewrite)
    call = channel.unary_unary(f"/{SERVICE}/Complete")
    prompts = st.one_of(st.text(max_size=400), st.just("\ud800"), st.just("z" * 5000))
    bodies = st.one_of(
        st.binary(max_size=300),
        st.builds(lambda p, m: json.dumps({"prompt": p, "max_tokens": m}).encode(), prompts, st.integers(-3, 400)),
        st.builds(lambda p: json.dumps({"messages": [{"role": "user", "content": p}]}).encode()[:-3], prompts),
    )
    values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=900)

    @settings(max_examples=120, deadline=None)
    @given(body=bodies, token=values)
    def check(body: bytes, token: str) -> None:
        future = call.future(body, metadata=[("authorization", token)], timeout=10)
        if future.exception() is None:
            return
        assert future.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert future.details()[:5] in {"E0512", "E0513", "E5009", "E5010"}

    check()


@pytest.mark.parametrize(
    ("extractor", "details"),
    [
        (
            lambda request: GuardInput(5),  # type: ignore[arg-type]
            "E5010: the input to judge must be a string, token ids or a list of those, got int: fix the extractor or "
            "the request",
        ),
        (
            lambda request: GuardInput(2.5),  # type: ignore[arg-type]
            "E5010: the input to judge must be a string, token ids or a list of those, got float: fix the extractor "
            "or the request",
        ),
        (
            lambda request: json.loads(request)["missing"],
            "E5010: the server's extractor failed on this request (KeyError: 'missing'): check the request fields",
        ),
        (
            lambda request: [1, 2],
            "E5010: the server's extractor returned list, not a GuardInput, a string or None, for this request: check "
            "the request fields",
        ),
        # Before, these were taken as they came: -1 let a prompt overflow the window by a token, "1" failed as UNKNOWN.
        (
            lambda request: GuardInput("x", min_output_tokens=-1),
            "E5010: min_output_tokens must be a whole number of at least 0, got -1: fix the extractor that built the "
            "GuardInput",
        ),
        (
            lambda request: GuardInput("x", min_output_tokens="1"),  # type: ignore[arg-type]
            "E5010: min_output_tokens must be a whole number of at least 0, got '1': fix the extractor that built the "
            "GuardInput",
        ),
    ],
)
def test_a_failing_extractor_is_always_a_coded_status(channel_for: Any, extractor: Any, details: str) -> None:
    channel = channel_for(context_guard=ContextWindowGuard(char_tok(), 10), extractor=extractor)
    error = rpc_error(channel, {"prompt": "x"})
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, details)


def test_a_client_stream_reports_every_truncated_message(channel_for: Any) -> None:
    guard = ContextWindowGuard(char_tok(), 10, truncate_on_overflow=True)
    channel = channel_for(context_guard=guard, extractor=extract, rewriter=rewrite)
    call = channel.stream_unary(f"/{SERVICE}/Chat")
    bodies = [{"prompt": "a" * 13}, {"prompt": "fits"}, {"prompt": "b" * 15}]
    response, info = call.with_call(iter([json.dumps(b).encode() for b in bodies]), timeout=10)
    assert [r["prompt"] for r in json.loads(response)["received"]] == ["a" * 9, "fits", "b" * 9]
    assert dict(info.trailing_metadata()) == {
        "x-autoglm-truncated-tokens": "10",
        "x-autoglm-truncated-messages": "0:4,2:6",
        "x-autoglm-warning-code": "E0514",
    }


def test_a_client_stream_rejected_after_a_truncation_reports_both(channel_for: Any) -> None:
    guard = ContextWindowGuard(char_tok(), 10, truncate_on_overflow=True)
    channel = channel_for(context_guard=guard, extractor=extract, rewriter=rewrite)
    call = channel.stream_unary(f"/{SERVICE}/Chat")
    with pytest.raises(grpc.RpcError) as info:
        call(iter([json.dumps({"prompt": "a" * 13}).encode(), b'{"prompt": "\\udfff"}']), timeout=10)
    assert info.value.details().startswith("E5009: the input contains a lone surrogate U+DFFF")
    assert dict(info.value.trailing_metadata()) == {
        "x-autoglm-truncated-tokens": "4",
        "x-autoglm-truncated-messages": "0:4",
        "x-autoglm-warning-code": "E0514",
        "x-autoglm-error-code": "E5009",
    }


def test_a_rewriter_returning_another_type_than_the_request_is_a_coded_status(channel_for: Any) -> None:
    # Before: the handler received the rewriter's None and failed: UNKNOWN "Exception calling application".
    guard = ContextWindowGuard(char_tok(), 10, truncate_on_overflow=True)
    channel = channel_for(context_guard=guard, extractor=extract, rewriter=lambda request, result: None)
    assert unary(channel, {"prompt": "abc"})[0] == {"received": {"prompt": "abc"}}  # nothing cut: not called
    error = rpc_error(channel, {"prompt": "x" * 30})
    assert (error.code(), error.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "E5010: the server's rewriter returned NoneType, not a bytes like the request, for this request: check the "
        "request fields",
    )


def test_a_chat_over_a_real_channel_is_judged_as_vllm_reads_it(channel_for: Any) -> None:
    def openai_style(request: bytes) -> GuardInput:
        return OpenAIExtractor().extract(json.loads(request)).guard_input()

    guard = ContextWindowGuard(char_tok(), 20, message_tokens=0)
    channel = channel_for(context_guard=guard, extractor=openai_style)
    # A budget sent as text is read as vLLM's pydantic models read it; max_completion_tokens wins over max_tokens.
    body = {"messages": [{"role": "user", "content": "x" * 15}], "max_tokens": 10**6, "max_completion_tokens": "5"}
    assert unary(channel, body)[0] == {"received": body}
    # No budget: the prompt must leave room for one token.
    error = rpc_error(channel, {"messages": [{"role": "user", "content": "x" * 20}]})
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        "E0513: This model's maximum context length is 20 tokens. However, you requested 21 tokens (20 in the input, "
        "1 for the completion by default, as the request sets no max_completion_tokens), more than the context window "
        "of 20 tokens: shorten the input"
    )
    # A message without a role is refused before it is counted, as on HTTP.
    error = rpc_error(channel, {"messages": [{"content": "x"}]})
    assert (error.code(), error.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "E5010: messages[0].role is missing (OpenAI: \"Missing required parameter: 'messages[0].role'.\"): give "
        "every message a role (a string)",
    )
    # Any string role, as vLLM takes it: GLM's tool results are "observation" messages.
    glm = {"messages": [{"role": "user", "content": "x"}, {"role": "observation", "content": "42"}], "max_tokens": 1}
    assert unary(channel, glm)[0] == {"received": glm}
    error = rpc_error(channel, {"prompt": "x", "truncate_prompt_tokens": 0})
    assert (error.code(), dict(error.trailing_metadata())) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        {"x-autoglm-error-code": "E5010"},
    )


def test_a_chat_an_extractor_builds_itself_needs_roles_too(channel_for: Any) -> None:
    # An extractor of its own (a proto's turns, say) builds the Chat without OpenAIExtractor: the guard still refuses
    # a message without a string role, which its chat template would fail on, unclearly.
    def own(request: bytes) -> GuardInput:
        turns = json.loads(request)["turns"]
        chat = Chat(tuple(turns), tuple(range(len(turns))), tuple(("content",) for _ in turns))
        return GuardInput([turn["content"] for turn in turns], None, "turns", chat=chat)

    channel = channel_for(context_guard=ContextWindowGuard(char_tok(), 50), extractor=own)
    assert unary(channel, {"turns": [{"role": "user", "content": "hi"}]})[0] == {
        "received": {"turns": [{"role": "user", "content": "hi"}]}
    }
    error = rpc_error(channel, {"turns": [{"role": "user", "content": "hi"}, {"role": None, "content": "x"}]})
    assert (error.code(), error.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "E5010: turns[1].role is null, not a string (OpenAI: \"Invalid type for 'turns[1].role': expected a string, "
        'but got null instead."): give every message a role (a string)',
    )
