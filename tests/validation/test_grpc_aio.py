"""AsyncValidationInterceptor on a real grpc.aio server on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
import pytest
from tests.validation._helpers import char_tok, extract, rewrite

from autoglm_runtime.validation import ContextWindowGuard, GuardInput, OpenAIExtractor
from autoglm_runtime.validation.grpc import AsyncValidationInterceptor

SERVICE = "test.AioLlm"


async def complete(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def words(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for word in json.loads(request)["prompt"].split():
        yield word.encode()


async def echo_stream(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    async for request in requests:
        yield request


def plain_complete(request: bytes, context: grpc.ServicerContext) -> bytes:
    return request


def plain_words(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    yield from json.loads(request)["prompt"].encode().split()


def run(interceptor: AsyncValidationInterceptor, body: Callable[[grpc.aio.Channel], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        server = grpc.aio.server(interceptors=[interceptor])
        handlers = {
            "Complete": grpc.unary_unary_rpc_method_handler(complete),
            "Words": grpc.unary_stream_rpc_method_handler(words),
            "Echo": grpc.stream_stream_rpc_method_handler(echo_stream),
            "PlainComplete": grpc.unary_unary_rpc_method_handler(plain_complete),
            "PlainWords": grpc.unary_stream_rpc_method_handler(plain_words),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                return await asyncio.wait_for(body(channel), timeout=20)
        finally:
            await server.stop(None)

    return asyncio.run(go())


def payload(prompt: str, **extra: Any) -> bytes:
    return json.dumps({"prompt": prompt, **extra}).encode()


async def failure(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    raise AssertionError("the call succeeded")


def test_unary_calls_are_guarded() -> None:
    interceptor = AsyncValidationInterceptor(context_guard=ContextWindowGuard(char_tok(), 20), extractor=extract)

    async def body(channel: grpc.aio.Channel) -> Any:
        call = channel.unary_unary(f"/{SERVICE}/Complete")
        ok = await call(payload("hello"))
        too_long = await failure(call(payload("x" * 21)))
        header = await failure(call(b"never parsed", metadata=(("authorization", "a" * 513),)))
        return ok, too_long, header

    ok, too_long, header = run(interceptor, body)
    assert ok == payload("hello")
    assert too_long == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "E0513: This model's maximum context length is 20 tokens. However, you requested 22 tokens (21 "
        "in the input, 1 for the completion by default, as the request sets no max_tokens), more than the "
        "context window of 20 tokens: shorten the input",
    )
    assert header == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "E0512: the authorization header is 513 bytes long, more than the 512 bytes this server takes: send at most "
        "512 bytes",
    )


def test_truncation_is_rewritten_and_reported_in_trailing_metadata() -> None:
    guard = ContextWindowGuard(char_tok(), 10, truncate_on_overflow=True)
    interceptor = AsyncValidationInterceptor(context_guard=guard, extractor=extract, rewriter=rewrite)

    async def body(channel: grpc.aio.Channel) -> Any:
        call = channel.unary_unary(f"/{SERVICE}/Complete")(payload("abcdefghijkl", max_tokens=2))
        return await call, dict(await call.trailing_metadata())

    response, trailing = run(interceptor, body)
    assert json.loads(response) == {"prompt": "efghijkl", "max_tokens": 2}
    assert trailing == {
        "x-autoglm-truncated-tokens": "4",
        "x-autoglm-truncated-messages": "0:4",
        "x-autoglm-warning-code": "E0514",
    }


def test_streams_are_guarded_message_by_message() -> None:
    interceptor = AsyncValidationInterceptor(context_guard=ContextWindowGuard(char_tok(), 13), extractor=extract)

    async def body(channel: grpc.aio.Channel) -> Any:
        words_call = channel.unary_stream(f"/{SERVICE}/Words")
        spoken = [w async for w in words_call(payload("one two thre"))]
        echo = channel.stream_stream(f"/{SERVICE}/Echo")
        received: list[bytes] = []
        call = echo(iter([payload("fine"), payload("y" * 14), payload("never")]))
        try:
            async for item in call:
                received.append(item)
        except grpc.aio.AioRpcError as error:
            return spoken, received, error.code(), error.details()
        raise AssertionError("the stream was not aborted")

    spoken, received, code, details = run(interceptor, body)
    assert spoken == [b"one", b"two", b"thre"]
    assert received == [payload("fine")]
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(
        "E0513: This model's maximum context length is 13 tokens. However, you requested 15 tokens"
    )


def test_metadata_rejection_of_a_streaming_call() -> None:
    interceptor = AsyncValidationInterceptor()

    async def body(channel: grpc.aio.Channel) -> Any:
        call = channel.unary_stream(f"/{SERVICE}/Words")(payload("a b"), metadata=(("authorization", "z" * 600),))
        return await failure(call.read())

    code, details = run(interceptor, body)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("E0512: the authorization header is 600 bytes long")


def test_a_client_stream_reports_every_truncated_message() -> None:
    guard = ContextWindowGuard(char_tok(), 10, truncate_on_overflow=True)
    interceptor = AsyncValidationInterceptor(context_guard=guard, extractor=extract, rewriter=rewrite)

    async def body(channel: grpc.aio.Channel) -> Any:
        call = channel.stream_stream(f"/{SERVICE}/Echo")(iter([payload("a" * 14), payload("short"), payload("b" * 12)]))
        received = [json.loads(response)["prompt"] async for response in call]
        return received, dict(await call.trailing_metadata())

    received, trailing = run(interceptor, body)
    assert received == ["a" * 9, "short", "b" * 9]
    assert trailing == {
        "x-autoglm-truncated-tokens": "8",
        "x-autoglm-truncated-messages": "0:5,2:3",
        "x-autoglm-warning-code": "E0514",
    }


def test_an_extractor_returning_a_wrong_type_is_a_coded_status() -> None:
    interceptor = AsyncValidationInterceptor(context_guard=ContextWindowGuard(char_tok(), 10), extractor=lambda r: 5)

    async def body(channel: grpc.aio.Channel) -> Any:
        return await failure(channel.unary_unary(f"/{SERVICE}/Complete")(payload("x")))

    assert run(interceptor, body) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "E5010: the server's extractor returned int, not a GuardInput, a string or None, for this request: check "
        "the request fields",
    )


def test_a_rejection_carries_its_code_in_trailing_metadata_too() -> None:
    guard = ContextWindowGuard(char_tok(), 10, truncate_on_overflow=True)
    interceptor = AsyncValidationInterceptor(context_guard=guard, extractor=extract, rewriter=rewrite)

    async def trailer(call: Any) -> tuple[str, dict[str, str]]:
        try:
            async for _ in call:
                pass
        except grpc.aio.AioRpcError as error:
            return (error.details() or "")[:5], dict(error.trailing_metadata() or ())
        raise AssertionError("the call succeeded")

    async def body(channel: grpc.aio.Channel) -> Any:
        long_header = (("authorization", "a" * 513),)
        complete_call = channel.unary_unary(f"/{SERVICE}/Complete")
        unary = await trailer(_as_stream(complete_call(payload("x", max_tokens=11))))
        header = await trailer(_as_stream(complete_call(b"never parsed", metadata=long_header)))
        header_stream = await trailer(channel.unary_stream(f"/{SERVICE}/Words")(payload("a"), metadata=long_header))
        echo = channel.stream_stream(f"/{SERVICE}/Echo")
        stream = await trailer(echo(iter([payload("a" * 13), b'{"prompt": "\\udfff"}'])))
        return unary, header, header_stream, stream

    unary, header, header_stream, stream = run(interceptor, body)
    assert unary == ("E0513", {"x-autoglm-error-code": "E0513"})
    assert header == header_stream == ("E0512", {"x-autoglm-error-code": "E0512"})
    assert stream == (  # what the truncated message put there stays, as HTTP keeps both headers
        "E5009",
        {
            "x-autoglm-truncated-tokens": "4",
            "x-autoglm-truncated-messages": "0:4",
            "x-autoglm-warning-code": "E0514",
            "x-autoglm-error-code": "E5009",
        },
    )


async def _as_stream(call: Awaitable[Any]) -> AsyncIterator[Any]:
    yield await call


def test_a_plain_function_handler_is_refused_with_a_coded_status_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    interceptor = AsyncValidationInterceptor(context_guard=ContextWindowGuard(char_tok(), 20), extractor=extract)

    async def body(channel: grpc.aio.Channel) -> Any:
        refused = []
        for _ in range(2):
            call = channel.unary_unary(f"/{SERVICE}/PlainComplete")(payload("hello"))
            code, details = await failure(call)
            refused.append((code, details, dict(await call.trailing_metadata())))
        stream = channel.unary_stream(f"/{SERVICE}/PlainWords")(payload("a b"))
        code, details = await failure(stream.read())
        return refused, (code, details, dict(await stream.trailing_metadata()))

    with caplog.at_level(logging.WARNING, logger="autoglm_runtime.validation.grpc"):
        refused, streamed = run(interceptor, body)
    message = (
        f"the handler of /{SERVICE}/PlainComplete (plain_complete) is a plain function, but AsyncValidationInterceptor "
        "awaits the handlers it guards: make it `async def` (an async generator for a streamed response), or serve "
        "it with grpc.server and ValidationInterceptor"
    )
    expected = (grpc.StatusCode.INTERNAL, f"E0001: {message}", {"x-autoglm-error-code": "E0001"})
    assert refused == [expected, expected]
    assert streamed == (
        grpc.StatusCode.INTERNAL,
        f"E0001: {message}".replace("PlainComplete (plain_complete)", "PlainWords (plain_words)"),
        {"x-autoglm-error-code": "E0001"},
    )
    logged = [(r.levelname, r.getMessage(), getattr(r, "error_code", None)) for r in caplog.records]
    assert logged == [
        ("ERROR", f"gRPC handler refused: {message}", "E0001"),
        (
            "ERROR",
            "gRPC handler refused: " + message.replace("PlainComplete (plain_complete)", "PlainWords (plain_words)"),
            "E0001",
        ),
    ]


def test_a_chat_over_an_aio_channel_is_judged_as_vllm_reads_it() -> None:
    def openai_style(request: bytes) -> GuardInput:
        return OpenAIExtractor().extract(json.loads(request)).guard_input()

    guard = ContextWindowGuard(char_tok(), 20, message_tokens=0)
    interceptor = AsyncValidationInterceptor(context_guard=guard, extractor=openai_style)
    fits = json.dumps({"messages": [{"role": "user", "content": "x" * 19}], "max_tokens": "1"}).encode()
    fills = json.dumps({"messages": [{"role": "user", "content": "x" * 20}]}).encode()

    async def body(channel: grpc.aio.Channel) -> Any:
        call = channel.unary_unary(f"/{SERVICE}/Complete")
        return await call(fits), await failure(call(fills))

    ok, refused = run(interceptor, body)
    assert ok == fits
    assert refused[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert refused[1].startswith("E0513: This model's maximum context length is 20 tokens. However, you requested 21")


def test_a_message_without_a_role_is_refused_as_on_the_sync_server() -> None:
    interceptor = AsyncValidationInterceptor(context_guard=ContextWindowGuard(char_tok(), 20), extractor=extract)

    async def body(channel: grpc.aio.Channel) -> Any:
        return await failure(channel.unary_unary(f"/{SERVICE}/Complete")(b'{"messages": [{"role": 5}]}'))

    assert run(interceptor, body) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "E5010: messages[0].role is an integer, not a string (OpenAI: \"Invalid type for 'messages[0].role': "
        'expected a string, but got an integer instead."): give every message a role (a string)',
    )
