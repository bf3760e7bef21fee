"""Request ids in the log: each request's ``X-Request-Id`` (or a new id) on every log line written for it.

An operator who gets a client's complaint ("my request was refused") finds its lines by the id the client sent,
or by the one the response's ``x-request-id`` header gave back: the guards' rejections (E0512, E0513, ...), the
warnings of truncation (E0514) and every other line the server writes while it handles the request carry it as
``trace_id`` (an OpenTelemetry span's id instead, when tracing is set up).
"""

from __future__ import annotations

import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from autoglm_runtime.logging import bind_trace_id

__all__ = ["RequestIds"]

#: The longest id kept from a client (a longer or unprintable one is replaced by a new id).
MAX_LENGTH = 128


class RequestIds:
    """ASGI middleware: binds the request's id as the ``trace_id`` of its log lines and sends it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope["headers"] if name == b"x-request-id"), b"")
        text = given.decode("latin-1")
        request_id = text if 0 < len(text) <= MAX_LENGTH and text.isprintable() else uuid.uuid4().hex

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode("latin-1"))]
                message = {**message, "headers": headers}
            await send(message)

        with bind_trace_id(request_id):
            await self.app(scope, receive, send_with_id)
