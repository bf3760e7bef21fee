"""ValidationInterceptor: the guards in front of a gRPC server (this is the only module that imports grpc).

Metadata is measured before any handler runs (E0512); the request message is judged through an ``extractor``
callable that returns the input to count (a :class:`GuardInput`, a plain string, or ``None`` to skip). A rejected
call is aborted with the status named by the error class (``INVALID_ARGUMENT`` for every validation error) and
``"E0513: <message>"`` as details::

    interceptor = ValidationInterceptor(
        context_guard=ContextWindowGuard(tokenizer, 8192),
        extractor=lambda request: GuardInput(request.prompt, request.max_tokens, "prompt"),
        rewriter=lambda request, result: replace_prompt(request, result.text),
    )
    server = grpc.server(ThreadPoolExecutor(4), interceptors=[interceptor])

:class:`AsyncValidationInterceptor` does the same for ``grpc.aio`` servers.

Truncation needs a ``rewriter`` that builds the shortened request; without one the interceptor rejects instead
of truncating. A truncated call carries ``x-autoglm-truncated-tokens`` and ``x-autoglm-warning-code`` in its
trailing metadata (a handler that sets its own trailing metadata replaces them).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc

from autoglm_runtime.errors import INPUT_TRUNCATED, AutoGLMRuntimeError
from autoglm_runtime.validation.asgi import TRUNCATED_TOKENS_HEADER, WARNING_CODE_HEADER
from autoglm_runtime.validation.context_window import ContextWindowGuard, GuardInput, GuardResult
from autoglm_runtime.validation.decode import DecodeGuard
from autoglm_runtime.validation.headers import HeaderTokenGuard

__all__ = ["AsyncValidationInterceptor", "Extractor", "Rewriter", "ValidationInterceptor"]

Extractor = Callable[[Any], "GuardInput | str | None"]
Rewriter = Callable[[Any, GuardResult], Any]

_DEFAULT_HEADER_GUARD = HeaderTokenGuard()


def _status(exc: AutoGLMRuntimeError) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, exc.grpc_status, grpc.StatusCode.INTERNAL)


def _details(exc: AutoGLMRuntimeError) -> str:
    return f"{exc.code}: {exc.message}"


class _Guards:
    """What both interceptors do, free of any server flavour: judge metadata, judge one request message."""

    def __init__(
        self,
        header_guard: HeaderTokenGuard | None,
        context_guard: ContextWindowGuard | None,
        extractor: Extractor | None,
        rewriter: Rewriter | None,
        decode_guard: DecodeGuard | None,
    ) -> None:
        self.header_guard = header_guard
        self.context_guard = context_guard
        self.extractor = extractor
        self.rewriter = rewriter
        self.decode_guard = decode_guard or DecodeGuard()

    def metadata_error(self, details: grpc.HandlerCallDetails) -> AutoGLMRuntimeError | None:
        if self.header_guard is None:
            return None
        try:
            self.header_guard.check((item.key, item.value) for item in details.invocation_metadata or ())
        except AutoGLMRuntimeError as exc:
            return exc
        return None

    def judge(self, request: Any) -> tuple[Any, tuple[tuple[str, str], ...] | None]:
        """The request to pass on and the trailing metadata to set; raises our coded errors."""
        assert self.extractor is not None
        extracted = self.extractor(request)
        if extracted is None:
            return request, None
        if isinstance(extracted, str):
            extracted = GuardInput(extracted)
        segments = extracted.segments
        for segment in [segments] if isinstance(segments, str) else segments:
            if isinstance(segment, str):
                self.decode_guard.check_text(segment, param=extracted.param)
        if self.context_guard is None:
            return request, None
        result = self.context_guard.check(
            segments,
            max_output_tokens=extracted.max_output_tokens,
            param=extracted.param,
            allow_truncation=self.rewriter is not None,
        )
        if not result.truncated or self.rewriter is None:
            return request, None
        trailing = ((TRUNCATED_TOKENS_HEADER, str(result.removed_tokens)), (WARNING_CODE_HEADER, INPUT_TRUNCATED))
        return self.rewriter(request, result), trailing


class ValidationInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """A synchronous-server (``grpc.server``) interceptor guarding metadata and request messages.

    Streaming requests are judged message by message as the handler pulls them.
    """

    def __init__(
        self,
        *,
        header_guard: HeaderTokenGuard | None = _DEFAULT_HEADER_GUARD,
        context_guard: ContextWindowGuard | None = None,
        extractor: Extractor | None = None,
        rewriter: Rewriter | None = None,
        decode_guard: DecodeGuard | None = None,
    ) -> None:
        self._guards = _Guards(header_guard, context_guard, extractor, rewriter, decode_guard)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        error = self._guards.metadata_error(handler_call_details)
        if error is not None:

            def reject(_request: Any, context: grpc.ServicerContext) -> Any:
                context.abort(_status(error), _details(error))

            # No request deserializer: a rejected call's message is never parsed.
            return _build(handler, reject, request_deserializer=None)
        if self._guards.extractor is None:
            return handler
        behavior = _behavior(handler)
        if handler.request_streaming:

            def guarded_stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                return behavior((self._judge(request, context) for request in requests), context)

            return _build(handler, guarded_stream, request_deserializer=handler.request_deserializer)

        def guarded_unary(request: Any, context: grpc.ServicerContext) -> Any:
            return behavior(self._judge(request, context), context)

        return _build(handler, guarded_unary, request_deserializer=handler.request_deserializer)

    def _judge(self, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            request, trailing = self._guards.judge(request)
        except AutoGLMRuntimeError as exc:
            context.abort(_status(exc), _details(exc))
            raise AssertionError("context.abort returned") from exc  # abort always raises
        if trailing is not None:
            context.set_trailing_metadata(trailing)
        return request


class AsyncValidationInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """The same guards for ``grpc.aio`` servers; messages are judged in a worker thread (tokenizing is CPU work).

    Handlers must be coroutine functions or async generators, as ``grpc.aio`` servicers usually are.
    """

    def __init__(
        self,
        *,
        header_guard: HeaderTokenGuard | None = _DEFAULT_HEADER_GUARD,
        context_guard: ContextWindowGuard | None = None,
        extractor: Extractor | None = None,
        rewriter: Rewriter | None = None,
        decode_guard: DecodeGuard | None = None,
    ) -> None:
        self._guards = _Guards(header_guard, context_guard, extractor, rewriter, decode_guard)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        error = self._guards.metadata_error(handler_call_details)
        if error is not None:
            return _build(handler, _async_rejecting(error, handler.response_streaming), request_deserializer=None)
        if self._guards.extractor is None:
            return handler
        behavior = _behavior(handler)
        judge = self._judge

        async def judged(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for request in requests:
                yield await judge(request, context)

        if handler.response_streaming:

            async def guarded_streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                incoming = judged(request, context) if handler.request_streaming else await judge(request, context)
                outcome = behavior(incoming, context)
                if inspect.isasyncgen(outcome):
                    async for response in outcome:
                        yield response
                else:
                    await outcome

            return _build(handler, guarded_streaming, request_deserializer=handler.request_deserializer)

        async def guarded_single(request: Any, context: grpc.aio.ServicerContext) -> Any:
            incoming = judged(request, context) if handler.request_streaming else await judge(request, context)
            return await behavior(incoming, context)

        return _build(handler, guarded_single, request_deserializer=handler.request_deserializer)

    async def _judge(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            request, trailing = await asyncio.to_thread(self._guards.judge, request)
        except AutoGLMRuntimeError as exc:
            await context.abort(_status(exc), _details(exc))
            raise AssertionError("context.abort returned") from exc  # abort always raises
        if trailing is not None:
            context.set_trailing_metadata(trailing)
        return request


def _async_rejecting(error: AutoGLMRuntimeError, streaming: bool) -> Callable[..., Any]:
    async def reject(_request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(_status(error), _details(error))

    async def reject_streaming(_request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(_status(error), _details(error))
        yield  # pragma: no cover - abort raises; the yield only makes this an async generator

    return reject_streaming if streaming else reject


def _behavior(handler: grpc.RpcMethodHandler) -> Callable[..., Any]:
    return (  # type: ignore[no-any-return]
        handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    )


def _build(
    handler: grpc.RpcMethodHandler, behavior: Callable[..., Any], *, request_deserializer: Any
) -> grpc.RpcMethodHandler:
    factories = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    factory = factories[(bool(handler.request_streaming), bool(handler.response_streaming))]
    return factory(behavior, request_deserializer=request_deserializer, response_serializer=handler.response_serializer)
