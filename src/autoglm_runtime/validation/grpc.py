"""ValidationInterceptor: the guards in front of a gRPC server (this is the only module that imports grpc).

Metadata is measured before any handler runs (E0512); the request message is judged through an ``extractor``
callable that returns the input to count (a :class:`GuardInput`, a plain string, or ``None`` to skip). A rejected
call is aborted with the status named by the error class (``INVALID_ARGUMENT`` for every validation error) and
``"E0513: <message>"`` as details::

    interceptor = ValidationInterceptor(
        context_guard=ContextWindowGuard(tokenizer, 8192),
        # (a proto3 field left unset reads 0: no budget; the input still leaves room for the one token the model writes)
        extractor=lambda request: GuardInput(request.prompt, request.max_tokens or None, "prompt"),
        rewriter=lambda request, result: replace_prompt(request, result.text),
    )
    server = grpc.server(ThreadPoolExecutor(4), interceptors=[interceptor])

:class:`AsyncValidationInterceptor` does the same for ``grpc.aio`` servers.

Truncation needs a ``rewriter`` that builds the shortened request; without one the interceptor rejects instead
of truncating. A truncated call carries ``x-autoglm-truncated-tokens`` (the total), ``x-autoglm-truncated-messages``
(``index:tokens`` for every truncated message of the call, so a client stream reports each one) and
``x-autoglm-warning-code`` in its trailing metadata (a handler that sets its own trailing metadata replaces them).

An extractor or rewriter that fails, or returns something that is not input, ends the call with a coded status
(E5010, ``INVALID_ARGUMENT``), never ``UNKNOWN``; every rejection is logged once with its code.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc

from autoglm_runtime.errors import AutoGLMRuntimeError, UsageError
from autoglm_runtime.logging import get_logger
from autoglm_runtime.observability import GuardCheck
from autoglm_runtime.validation._grpc_guards import (
    TRUNCATED_MESSAGES_HEADER,
    Extractor,
    Guards,
    Rewriter,
    Tally,
)
from autoglm_runtime.validation.context_window import ContextWindowGuard
from autoglm_runtime.validation.decode import DecodeGuard
from autoglm_runtime.validation.headers import HeaderTokenGuard
from autoglm_runtime.validation.http_errors import ERROR_CODE_HEADER

__all__ = ["TRUNCATED_MESSAGES_HEADER", "AsyncValidationInterceptor", "Extractor", "Rewriter", "ValidationInterceptor"]

log = get_logger(__name__)

_DEFAULT_HEADER_GUARD = HeaderTokenGuard()


def _status(exc: AutoGLMRuntimeError) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, exc.grpc_status, grpc.StatusCode.INTERNAL)


def _details(exc: AutoGLMRuntimeError) -> str:
    log.warning("gRPC call rejected: %s", exc.message, extra={"error_code": exc.code, "status": exc.grpc_status})
    return f"{exc.code}: {exc.message}"


def _trailer(exc: AutoGLMRuntimeError, tally: Tally | None = None) -> tuple[tuple[str, str], ...]:
    """A rejected call's trailing metadata: its code (as HTTP's header), after what earlier messages' truncation
    put there (aborting replaces the call's trailing metadata)."""
    earlier = tally.trailing() if tally is not None and tally.cuts else ()
    return (*earlier, (ERROR_CODE_HEADER, exc.code))


def _abort(context: grpc.ServicerContext, exc: AutoGLMRuntimeError, tally: Tally | None = None) -> None:
    context.set_trailing_metadata(_trailer(exc, tally))
    context.abort(_status(exc), _details(exc))


class ValidationInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """A synchronous-server (``grpc.server``) interceptor guarding metadata and request messages.

    Streaming requests are judged message by message as the handler pulls them. With ``require_input``, a message
    whose extracted input is empty (no piece, or only empty ones: an unset proto3 ``prompt`` reads ``""``) is
    refused with E5010; an extractor returning ``None`` still skips its message.
    """

    def __init__(
        self,
        *,
        header_guard: HeaderTokenGuard | None = _DEFAULT_HEADER_GUARD,
        context_guard: ContextWindowGuard | None = None,
        extractor: Extractor | None = None,
        rewriter: Rewriter | None = None,
        decode_guard: DecodeGuard | None = None,
        require_input: bool = False,
    ) -> None:
        self._guards = Guards(
            header_guard, context_guard, extractor, rewriter, decode_guard, require_input=require_input
        )

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
                with GuardCheck("grpc") as check:
                    check.reject(error)
                    _abort(context, error)

            # No request deserializer: a rejected call's message is never parsed.
            return _build(handler, reject, request_deserializer=None)
        if self._guards.extractor is None:
            return handler
        behavior = _behavior(handler)
        if handler.request_streaming:

            def guarded_stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                tally = Tally()
                return behavior((self._judge(request, context, tally) for request in requests), context)

            return _build(handler, guarded_stream, request_deserializer=handler.request_deserializer)

        if handler.response_streaming:

            def guarded_responses(request: Any, context: grpc.ServicerContext) -> Any:
                # grpc iterates the responses after this returns: the guard span stays open until they end.
                with GuardCheck("grpc") as check:
                    request = self._verdict(request, context, Tally(), check)
                    check.forward()
                    responses = iter(behavior(request, context))
                    stream = check.hand_over()
                if stream is None:
                    return responses
                if not context.add_callback(stream.end):  # (a cancel or deadline only stops grpc's iterating)
                    stream.end()
                return stream.responses(responses)

            return _build(handler, guarded_responses, request_deserializer=handler.request_deserializer)

        def guarded_unary(request: Any, context: grpc.ServicerContext) -> Any:
            # One request message: the guard span stays current while the handler runs (until it returns), so
            # the handler's model calls join the call's trace; see _judge for streamed requests.
            with GuardCheck("grpc") as check:
                request = self._verdict(request, context, Tally(), check)
                check.forward()
                return behavior(request, context)

        return _build(handler, guarded_unary, request_deserializer=handler.request_deserializer)

    def _judge(self, request: Any, context: grpc.ServicerContext, tally: Tally) -> Any:
        """One message of a streamed request, judged (and spanned) alone as the handler pulls it."""
        with GuardCheck("grpc") as check:
            return self._verdict(request, context, tally, check)

    def _verdict(self, request: Any, context: grpc.ServicerContext, tally: Tally, check: GuardCheck) -> Any:
        try:
            request = self._guards.judge(request, tally)
        except AutoGLMRuntimeError as exc:
            check.reject(exc)
            _abort(context, exc, tally)
            raise AssertionError("context.abort returned") from exc  # abort always raises
        check.passed(tally.verdict)
        if tally.cuts:
            context.set_trailing_metadata(tally.trailing())
        return request


class AsyncValidationInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """The same guards for ``grpc.aio`` servers; messages are judged in a worker thread (tokenizing is CPU work).

    Handlers must be coroutine functions or async generators, as ``grpc.aio`` servicers usually are: with an
    ``extractor``, a plain function's calls are refused (E0001, logged once per method, ``INTERNAL``).
    """

    def __init__(
        self,
        *,
        header_guard: HeaderTokenGuard | None = _DEFAULT_HEADER_GUARD,
        context_guard: ContextWindowGuard | None = None,
        extractor: Extractor | None = None,
        rewriter: Rewriter | None = None,
        decode_guard: DecodeGuard | None = None,
        require_input: bool = False,
    ) -> None:
        self._guards = Guards(
            header_guard, context_guard, extractor, rewriter, decode_guard, require_input=require_input
        )
        self._refused: set[str] = set()

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
        if not (inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)):
            refusing = self._refusing(handler_call_details.method, behavior, handler.response_streaming)
            return _build(handler, refusing, request_deserializer=None)
        judge = self._judge

        async def judged(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            tally = Tally()
            async for request in requests:
                yield await judge(request, context, tally)

        if handler.response_streaming:

            async def guarded_streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                if handler.request_streaming:
                    outcome = behavior(judged(request, context), context)
                else:
                    outcome = await self._responses(behavior, request, context)
                if inspect.isasyncgen(outcome):
                    async for response in outcome:
                        yield response
                else:
                    await outcome

            return _build(handler, guarded_streaming, request_deserializer=handler.request_deserializer)

        async def guarded_single(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if handler.request_streaming:
                return await behavior(judged(request, context), context)
            # One request message: its guard span stays current while the handler runs (as on the sync server).
            with GuardCheck("grpc") as check:
                incoming = await self._verdict(request, context, Tally(), check)
                check.forward()
                return await behavior(incoming, context)

        return _build(handler, guarded_single, request_deserializer=handler.request_deserializer)

    def _refusing(self, method: str, behavior: Callable[..., Any], streaming: bool) -> Callable[..., Any]:
        """Every call to a plain-function handler refused: awaiting what it returns would end each call with a
        bare UNKNOWN ("object dict can't be used in 'await' expression")."""
        error = UsageError(
            f"the handler of {method} ({getattr(behavior, '__qualname__', behavior)}) is a plain function, but "
            "AsyncValidationInterceptor awaits the handlers it guards: make it `async def` (an async generator for "
            "a streamed response), or serve it with grpc.server and ValidationInterceptor"
        )
        if method not in self._refused:
            self._refused.add(method)
            log.error("gRPC handler refused: %s", error.message, extra={"error_code": error.code})
        # INTERNAL, not the class's INVALID_ARGUMENT: the server is set up wrong, the client's request is not.
        return _async_rejecting(error, streaming, refused=grpc.StatusCode.INTERNAL)

    async def _judge(self, request: Any, context: grpc.aio.ServicerContext, tally: Tally) -> Any:
        with GuardCheck("grpc") as check:
            return await self._verdict(request, context, tally, check)

    async def _responses(self, behavior: Callable[..., Any], request: Any, context: grpc.aio.ServicerContext) -> Any:
        """The handler's outcome for one request message (an async generator, or a coroutine that writes its
        responses), to be run after the verdict with the guard span open (current while it runs) until it ends."""
        with GuardCheck("grpc") as check:
            incoming = await self._verdict(request, context, Tally(), check)
            check.forward()
            outcome = behavior(incoming, context)
            stream = check.hand_over()
        if stream is None:
            return outcome
        # A cancel or deadline cancels the call's task, maybe while grpc sends a response, outside the stream's
        # steps (the handler's generator is then left suspended): grpc's done callback ends the span.
        context.add_done_callback(lambda _context: stream.end())
        return stream.aresponses(outcome) if inspect.isasyncgen(outcome) else stream.run(outcome)

    async def _verdict(self, request: Any, context: grpc.aio.ServicerContext, tally: Tally, check: GuardCheck) -> Any:
        try:
            request = await asyncio.to_thread(self._guards.judge, request, tally)
        except AutoGLMRuntimeError as exc:
            check.reject(exc)
            await context.abort(_status(exc), _details(exc), _trailer(exc, tally))
            raise AssertionError("context.abort returned") from exc  # abort always raises
        check.passed(tally.verdict)
        if tally.cuts:
            context.set_trailing_metadata(tally.trailing())
        return request


def _async_rejecting(
    error: AutoGLMRuntimeError, streaming: bool, refused: grpc.StatusCode | None = None
) -> Callable[..., Any]:
    """A handler of the right shape whose every call is aborted with ``error``: a guard's rejection, or with
    status ``refused`` a handler refused (logged once when refused, and no guard's verdict)."""

    async def abort(context: grpc.aio.ServicerContext) -> None:
        if refused is not None:
            await context.abort(refused, f"{error.code}: {error.message}", _trailer(error))
        with GuardCheck("grpc") as check:
            check.reject(error)
            await context.abort(_status(error), _details(error), _trailer(error))

    async def reject(_request: Any, context: grpc.aio.ServicerContext) -> Any:
        await abort(context)

    async def reject_streaming(_request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await abort(context)
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
