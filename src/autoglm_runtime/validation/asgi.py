"""ValidationMiddleware: the guards in front of any ASGI app, as plain ASGI (no Starlette needed).

Order of work for an HTTP request, each step rejecting before the app sees anything:

1. guarded headers are measured on the raw bytes (E0512, 431) -- before the body is read, for every path;
2. on guarded paths, the body is read up to ``max_body_bytes`` (E0515, 413; a larger ``content-length`` is refused
   without reading, and reading stops at the limit) within ``body_timeout`` seconds (E0517, 408);
3. the body must be JSON (UTF-8, or UTF-16/32 as ``json.loads`` reads bytes), uncompressed, without lone
   surrogates (E5009, 400);
4. the text is extracted OpenAI-style (an ``embedding_paths`` body as an embeddings request: each input against the
   window, nothing generated; with ``require_input``, a body holding no input at all is E5010) and judged by the
   context-window guard (E0513, 400). Large bodies are judged
   on the middleware's own pool of ``max_concurrent_checks`` named threads; when all are busy the request is
   refused at once (E0516, 503 with ``Retry-After``) rather than queued.

Errors answer in the OpenAI shape with our code, plus an ``x-autoglm-error-code`` header, and each rejection is
logged once with its code::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "messages", "code": "E0513"}}

``error_style="openai"`` answers E0513 with ``"code": "context_length_exceeded"`` (the E-code stays in the message
and the header), for clients that look for OpenAI's code. The guard's verdict (a :class:`GuardResult`: token counts,
token ids, what was cut) reaches the app as ``scope["state"]["guard_result"]`` (``request.state.guard_result`` in
Starlette and FastAPI), so the app need not tokenize again. When the guard truncates, the app receives the truncated
body and the response carries ``x-autoglm-truncated-tokens: N`` and ``x-autoglm-warning-code: E0514``::

    app = ValidationMiddleware(app, context_guard=ContextWindowGuard(tokenizer, 8192))

With the ``tracing`` extra, each guarded request is one ``autoglm.guard.check`` span, current until the app has
answered, so the request's model calls are in its trace; a middleware inside another one (a per-model guard behind
a general one) records its verdict on the outer one's span instead of starting its own (docs/operations.md).

The middleware is never a Starlette ``BaseHTTPMiddleware``: that would break disconnect detection and streaming.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any

from autoglm_runtime.errors import (
    INPUT_TRUNCATED,
    AutoGLMRuntimeError,
    BodyTimeoutError,
    GuardOverloadedError,
    RequestTooLargeError,
    UsageError,
)
from autoglm_runtime.logging import get_logger
from autoglm_runtime.observability import GuardCheck
from autoglm_runtime.observability._events import expect_rejections
from autoglm_runtime.validation._asgi_body import Disconnected, read_body, read_body_in_time, refuse_encoding
from autoglm_runtime.validation._asgi_options import check_options, reads_embeddings, warn_misconfigured
from autoglm_runtime.validation._openai import ExtractedInput, OpenAIExtractor
from autoglm_runtime.validation._refusal import Refusal, server_running
from autoglm_runtime.validation.context_window import ContextWindowGuard, GuardResult
from autoglm_runtime.validation.decode import DecodeGuard
from autoglm_runtime.validation.headers import HeaderTokenGuard
from autoglm_runtime.validation.http_errors import ERROR_CODE_HEADER, ErrorStyle, http_error
from autoglm_runtime.validation.request import IncompleteInput

__all__ = [
    "ERROR_CODE_HEADER",
    "GUARD_RESULT_KEY",
    "TRUNCATED_TOKENS_HEADER",
    "WARNING_CODE_HEADER",
    "ValidationMiddleware",
    "replaying",
]

log = get_logger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TRUNCATED_TOKENS_HEADER = "x-autoglm-truncated-tokens"
WARNING_CODE_HEADER = "x-autoglm-warning-code"
#: The key of ``scope["state"]`` holding the guard's :class:`GuardResult`.
GUARD_RESULT_KEY = "guard_result"

_EMBEDDING_PATHS = ("/v1/embeddings",)
_DEFAULT_PATHS = ("/v1/completions", "/v1/chat/completions", *_EMBEDDING_PATHS)
_DEFAULT_HEADER_GUARD = HeaderTokenGuard()
# Judging a small body inline is cheaper than a thread hop; larger ones would stall the event loop.
_INLINE_BODY_BYTES = 16_384
_FRAMING = (b"content-length", b"transfer-encoding")
# The scope key under which the outermost middleware's check of a request is found by the ones inside it.
_CHECK_KEY = "autoglm.guard_check"


def _close_reason(text: str) -> str:
    """``text`` as a WebSocket close reason: at most 123 bytes of UTF-8, cut between words (a number cut short
    would tell the client a wrong limit)."""
    if len(text.encode("utf-8")) <= 123:
        return text
    return text.encode("utf-8")[:120].decode("utf-8", "ignore").rsplit(" ", 1)[0] + "..."


def replaying(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app ``body`` (already read and judged) as one message, then defers to
    ``receive`` (for the disconnect), so a middleware that read the body can still pass the request on."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class ValidationMiddleware:
    """Pure ASGI middleware running the guards before the wrapped app sees a request.

    ``paths`` are the exact request paths whose bodies are judged (``None``: every path); header checks apply to
    every HTTP and WebSocket request. Bodies on ``embedding_paths`` are read as embeddings requests (their
    ``input``, each against the whole window); an entry ``paths`` does not guard is logged as a warning (E0001) when
    the middleware is built. An ``extractor`` whose ``extract`` override has no ``embedding`` argument (written for
    an older :class:`OpenAIExtractor`) is still called as before on the other paths; bodies on its embedding paths
    are only size- and JSON-checked, and a warning (E0001) says so. ``require_input`` refuses (E5010) a body on a
    guarded path holding no input for the model (no ``prompt``, no message, no embedding ``input``; ``param``
    names the route's field), which otherwise passes. ``header_guard=None`` turns the header check off,
    ``context_guard=None`` the token check (bodies are still size- and decode-checked). ``offload`` judges large
    bodies on the middleware's pool of ``max_concurrent_checks`` threads so tokenizing does not block the event
    loop (turn it off outside asyncio). ``body_timeout`` (seconds, ``None`` for none) bounds how long a body may
    take to arrive.

    The pool starts with the first large body (or :meth:`start`) and stops with :meth:`stop`, at ASGI lifespan
    shutdown, or when the middleware is used as a context manager.

    Options it cannot use raise :class:`UsageError` (E0001), except when a running server builds the middleware
    (FastAPI's and Starlette's ``add_middleware`` build it at the lifespan's start-up): there the error fails that
    start-up, so the server stops with it in its log, and without a lifespan every request gets a 500 (E0001).
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
        embedding_paths: Collection[str] = _EMBEDDING_PATHS,
        require_input: bool = False,
        offload: bool = True,
        max_concurrent_checks: int = 4,
        retry_after: int = 1,
        body_timeout: float | None = 30.0,
        error_style: ErrorStyle = "autoglm",
    ) -> None:
        self._refusal: Refusal | None = None
        try:
            check_options(max_body_bytes, max_concurrent_checks, body_timeout, error_style, retry_after)
        except UsageError as exc:
            self._refuse(app, exc)
            return
        self.app = app
        self.context_guard = context_guard
        self.header_guard = header_guard
        self.decode_guard = decode_guard or DecodeGuard()
        self.extractor = extractor or OpenAIExtractor()
        self.max_body_bytes = max_body_bytes
        self.paths = frozenset(paths) if paths is not None else None
        self.methods = frozenset(method.upper() for method in methods)
        self.embedding_paths = frozenset(embedding_paths)
        # An extract() written before embedding existed is never handed it; its embedding paths go uncounted.
        self._reads_embeddings = reads_embeddings(self.extractor)
        warn_misconfigured(
            self.paths, self.embedding_paths, _EMBEDDING_PATHS, self.extractor, reads=self._reads_embeddings
        )
        self.require_input = require_input
        self.offload = offload
        self.max_concurrent_checks = max_concurrent_checks
        self.retry_after = retry_after
        self.body_timeout = body_timeout
        self.error_style: ErrorStyle = error_style
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._busy = 0
        if offload:  # (only the guard threads refuse as overloaded)
            expect_rejections("http", GuardOverloadedError.code)

    def _refuse(self, app: ASGIApp, error: UsageError) -> None:
        """Raise ``error``, unless a running server is building this middleware (see ``_refusal.py``): then
        answer with it instead, so the server's start-up fails with it."""
        if not server_running():
            raise error
        self.app = app
        self._refusal = Refusal(type(self).__name__, error)

    def start(self) -> None:
        """Start the pool of guard threads (done on demand otherwise)."""
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.max_concurrent_checks, thread_name_prefix="autoglm-guard")

    def stop(self) -> None:
        """Stop the pool and wait for its threads; a later large body starts a new one."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    def __enter__(self) -> ValidationMiddleware:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._refusal is not None:
            await self._refusal(scope, receive, send)
            return
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, receive, self._stopping_on_shutdown(send))
            return
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if kind != "http" or not self._guards(scope):
            # Unguarded paths see only the header check: a span and a timing for each would be noise.
            try:
                if self.header_guard is not None:
                    self.header_guard.check(scope.get("headers") or ())
            except AutoGLMRuntimeError as exc:
                # Inside another middleware's block this is one more layer of its request: no span of its own.
                with GuardCheck("http", within=scope.get(_CHECK_KEY)) as check:
                    check.reject(exc)
                    await self._reject(exc, kind, scope, send)
                return
            await self.app(scope, receive, send)
            return
        # The rejection is logged inside the check, so its log line carries the guard span's ids. A middleware
        # inside another one's block (a per-model guard behind a general one) records on the outer one's span.
        outer: GuardCheck | None = scope.get(_CHECK_KEY)
        with GuardCheck("http", within=outer) as check:
            try:
                if self.header_guard is not None:
                    self.header_guard.check(scope.get("headers") or ())
                body, result = await self._judge_body(scope, receive)
            except Disconnected:
                return
            except AutoGLMRuntimeError as exc:
                check.reject(exc)
                await self._reject(exc, kind, scope, send)
                return
            check.passed(result)
            if outer is not None:
                await self._forward(scope, receive, send, body, result)
                return
            # The span covers the app's work, so the request's model calls and their workers share its trace.
            check.forward()
            scope[_CHECK_KEY] = check
            try:
                await self._forward(scope, receive, send, body, result)
            finally:
                scope.pop(_CHECK_KEY, None)

    async def _judge_body(self, scope: Scope, receive: Receive) -> tuple[bytes, GuardResult | None]:
        if self.body_timeout is None:
            body = await read_body(scope, receive, self.max_body_bytes)
        else:
            body = await read_body_in_time(scope, receive, self.max_body_bytes, self.body_timeout)
        refuse_encoding(scope)
        path = str(scope.get("path", ""))
        if self.offload and len(body) > _INLINE_BODY_BYTES:
            return await self._judge_on_pool(body, path)
        return self._judge(body, path)

    def _stopping_on_shutdown(self, send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await asyncio.get_running_loop().run_in_executor(None, self.stop)
            await send(message)

        return wrapped

    def _guards(self, scope: Scope) -> bool:
        return scope.get("method", "GET") in self.methods and (self.paths is None or scope.get("path") in self.paths)

    async def _judge_on_pool(self, body: bytes, path: str) -> tuple[bytes, GuardResult | None]:
        with self._lock:
            if self._busy >= self.max_concurrent_checks:
                wait = max(1, self.retry_after)  # ("Retry-After: 0" would send clients straight back)
                raise GuardOverloadedError(
                    f"all {self.max_concurrent_checks} guard threads are busy judging other requests: retry in "
                    f"{wait} second{'s' if wait > 1 else ''}",
                    retry_after=wait,
                )
            self._busy += 1
        try:
            self.start()
            assert self._executor is not None
            context = contextvars.copy_context()
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, context.run, self._judge, body, path
            )
        finally:
            with self._lock:
                self._busy -= 1

    def _judge(self, body: bytes, path: str = "") -> tuple[bytes, GuardResult | None]:
        value = self.decode_guard.check_json(body)
        embedding = path in self.embedding_paths
        if embedding and not self._reads_embeddings:
            return body, None  # (said at construction: this extractor cannot read an embeddings body)
        guard = self.context_guard
        limit = guard.text_limit() if guard is not None else None
        extracted = self._extract(value, limit, embedding)
        if self.require_input:  # (a chat route's missing field is its messages, as OpenAI names it)
            self.extractor.require_input(extracted, embedding=embedding, chat=path.endswith("/chat/completions"))
        # A chat is judged even without text or budget: its messages still cost the template's tokens. A budget
        # alone is judged too (it may not fit on its own); an embedding asks for none.
        if guard is None or not (extracted.has_input or (extracted.max_output_tokens is not None and not embedding)):
            return body, None
        try:
            result = guard.judge(extracted.guard_input())
        except IncompleteInput:
            # The limits changed between reading the text limit and judging: judge the whole text.
            extracted = self._extract(value, None, embedding)
            result = guard.judge(extracted.guard_input())
        if not result.truncated:
            return body, result
        rewritten = self.extractor.apply(value, extracted, result)
        return json.dumps(rewritten, ensure_ascii=False).encode("utf-8"), result

    def _extract(self, value: Any, limit: int | None, embedding: bool) -> ExtractedInput:
        # embedding= only where it is true: an extract() overridden before the argument existed still serves the
        # other paths.
        if embedding:
            return self.extractor.extract(value, max_text_chars=limit, embedding=True)
        return self.extractor.extract(value, max_text_chars=limit)

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, body: bytes, result: GuardResult | None
    ) -> None:
        replay = replaying(body, receive)
        if result is not None:
            scope.setdefault("state", {})[GUARD_RESULT_KEY] = result
        if result is None or not result.truncated:
            await self.app(scope, replay, send)
            return
        # The app reads the rewritten body whole, so exactly one framing header describes it.
        headers = [(k, v) for k, v in scope.get("headers") or () if k.lower() not in _FRAMING]
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

    async def _reject(self, exc: AutoGLMRuntimeError, kind: str, scope: Scope, send: Send) -> None:
        log.warning(
            "request to %s rejected: %s",
            scope.get("path"),
            exc.message,
            extra={"error_code": exc.code, "status": exc.http_status, "param": getattr(exc, "param", None)},
        )
        if kind == "websocket":
            # Closing before accepting makes the server answer the handshake with 403.
            await send({"type": "websocket.close", "code": 1008, "reason": _close_reason(f"{exc.code}: {exc.message}")})
            return
        answer = http_error(exc, self.error_style)
        payload = json.dumps(answer.body).encode("utf-8")
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode("ascii")),
            *((name.encode("ascii"), value.encode("ascii")) for name, value in answer.headers.items()),
        ]
        if isinstance(exc, BodyTimeoutError | RequestTooLargeError):
            # The rest of the body is never read, so the connection cannot carry another request.
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": payload, "more_body": False})
