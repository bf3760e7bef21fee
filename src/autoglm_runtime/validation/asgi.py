"""ValidationMiddleware: the guards in front of any ASGI app, as plain ASGI (no Starlette needed).

Order of work for an HTTP request, each step rejecting before the app sees anything:

1. guarded headers are measured on the raw bytes (E0512, 431) -- before the body is read, for every path;
2. on guarded paths, the body is read up to ``max_body_bytes`` (E0515, 413; a larger ``content-length`` is refused
   without reading, and reading stops at the limit);
3. the body must be UTF-8 JSON without lone surrogates (E5009, 400);
4. the text is extracted OpenAI-style and judged by the context-window guard (E0513, 400).

Errors answer in the OpenAI shape with our code, plus an ``x-autoglm-error-code`` header::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "messages", "code": "E0513"}}

When the guard truncates, the app receives the truncated body and the response carries
``x-autoglm-truncated-tokens: N`` and ``x-autoglm-warning-code: E0514``::

    app = ValidationMiddleware(app, context_guard=ContextWindowGuard(tokenizer, 8192))
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any

from autoglm_runtime.errors import INPUT_TRUNCATED, AutoGLMRuntimeError, RequestTooLargeError, UsageError
from autoglm_runtime.validation._openai import OpenAIExtractor, error_body
from autoglm_runtime.validation.context_window import ContextWindowGuard, GuardResult
from autoglm_runtime.validation.decode import DecodeGuard
from autoglm_runtime.validation.headers import HeaderTokenGuard

__all__ = ["ERROR_CODE_HEADER", "TRUNCATED_TOKENS_HEADER", "WARNING_CODE_HEADER", "ValidationMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TRUNCATED_TOKENS_HEADER = "x-autoglm-truncated-tokens"
WARNING_CODE_HEADER = "x-autoglm-warning-code"
ERROR_CODE_HEADER = "x-autoglm-error-code"

_DEFAULT_PATHS = ("/v1/completions", "/v1/chat/completions")
_DEFAULT_HEADER_GUARD = HeaderTokenGuard()
# Judging a small body inline is cheaper than a thread hop; larger ones would stall the event loop.
_INLINE_BODY_BYTES = 16_384


class _Disconnected(Exception):
    """The client went away while its body was being read."""


class ValidationMiddleware:
    """Pure ASGI middleware running the guards before the wrapped app sees a request.

    ``paths`` are the exact request paths whose bodies are judged (``None``: every path); header checks apply to
    every HTTP and WebSocket request. ``header_guard=None`` turns the header check off, ``context_guard=None``
    the token check (bodies are still size- and decode-checked). ``offload`` judges large bodies in a worker
    thread (``asyncio.to_thread``) so tokenizing does not block the event loop; turn it off outside asyncio.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        context_guard: ContextWindowGuard | None = None,
        header_guard: HeaderTokenGuard | None = _DEFAULT_HEADER_GUARD,
        decode_guard: DecodeGuard | None = None,
        extractor: OpenAIExtractor | None = None,
        max_body_bytes: int = 4 * 1024 * 1024,
        paths: Collection[str] | None = _DEFAULT_PATHS,
        methods: Collection[str] = ("POST",),
        offload: bool = True,
    ) -> None:
        if max_body_bytes < 1:
            raise UsageError(f"max_body_bytes must be at least 1, got {max_body_bytes}")
        self.app = app
        self.context_guard = context_guard
        self.header_guard = header_guard
        self.decode_guard = decode_guard or DecodeGuard()
        self.extractor = extractor or OpenAIExtractor()
        self.max_body_bytes = max_body_bytes
        self.paths = frozenset(paths) if paths is not None else None
        self.methods = frozenset(method.upper() for method in methods)
        self.offload = offload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            if self.header_guard is not None:
                self.header_guard.check(scope.get("headers") or ())
        except AutoGLMRuntimeError as exc:
            await self._reject(exc, kind, send)
            return
        if kind != "http" or not self._guards(scope):
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read_body(scope, receive)
            if self.offload and len(body) > _INLINE_BODY_BYTES:
                body, result = await asyncio.to_thread(self._judge, body)
            else:
                body, result = self._judge(body)
        except _Disconnected:
            return
        except AutoGLMRuntimeError as exc:
            await self._reject(exc, kind, send)
            return
        await self._forward(scope, receive, send, body, result)

    def _guards(self, scope: Scope) -> bool:
        return scope.get("method", "GET") in self.methods and (self.paths is None or scope.get("path") in self.paths)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.max_body_bytes
        for name, value in scope.get("headers") or ():
            declared = value.strip()
            # Compare digit counts first: int() of a 5,000-digit header would raise (and cost) before any check.
            if name.lower() == b"content-length" and declared.isdigit():
                too_large = len(declared.lstrip(b"0")) > len(str(limit)) or int(declared) > limit
                if too_large:
                    text = declared.decode("ascii")
                    shown = text if len(text) <= 20 else f"{text[:12]}... ({len(text)} digits)"
                    raise RequestTooLargeError(
                        f"the request body is {shown} bytes long, more than the limit of {limit} bytes: "
                        "send a smaller body, or raise max_body_bytes",
                    )
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise RequestTooLargeError(
                    f"the request body is larger than the limit of {limit} bytes ({size} bytes received when "
                    "reading stopped): send a smaller body, or raise max_body_bytes",
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _judge(self, body: bytes) -> tuple[bytes, GuardResult | None]:
        value = self.decode_guard.check_json(body)
        extracted = self.extractor.extract(value)
        if self.context_guard is None or (not extracted.fields and extracted.max_output_tokens is None):
            return body, None
        result = self.context_guard.check(
            extracted.segments, max_output_tokens=extracted.max_output_tokens, param=extracted.param
        )
        if not result.truncated:
            return body, result
        rewritten = self.extractor.apply(value, extracted, result)
        return json.dumps(rewritten, ensure_ascii=False).encode("utf-8"), result

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, body: bytes, result: GuardResult | None
    ) -> None:
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        if result is None or not result.truncated:
            await self.app(scope, replay, send)
            return
        headers = [(k, v) for k, v in scope.get("headers") or () if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode("ascii")))
        extra = [
            (TRUNCATED_TOKENS_HEADER.encode("ascii"), str(result.removed_tokens).encode("ascii")),
            (WARNING_CODE_HEADER.encode("ascii"), INPUT_TRUNCATED.encode("ascii")),
        ]

        async def send_marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app({**scope, "headers": headers}, replay, send_marked)

    async def _reject(self, exc: AutoGLMRuntimeError, kind: str, send: Send) -> None:
        if kind == "websocket":
            # Closing before accepting makes the server answer the handshake with 403.
            await send({"type": "websocket.close", "code": 1008, "reason": f"{exc.code}: {exc.message}"[:120]})
            return
        payload = json.dumps(error_body(exc)).encode("utf-8")
        await send(
            {
                "type": "http.response.start",
                "status": exc.http_status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode("ascii")),
                    (ERROR_CODE_HEADER.encode("ascii"), exc.code.encode("ascii")),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload, "more_body": False})
