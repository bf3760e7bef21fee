"""What a guard middleware that could not be configured does when a server built it while running.

Starlette and FastAPI build their middleware at the first ASGI event, the lifespan's start-up. An error raised
there reaches uvicorn, whose default lifespan mode takes it for an app without lifespan support: one INFO line,
the app's own start-up code skipped, and a 500 with a traceback for every request. Such a middleware holds a
:class:`Refusal` instead, which fails the lifespan's start-up with the error (the server logs it and exits).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from autoglm_runtime.errors import UsageError
from autoglm_runtime.logging import get_logger
from autoglm_runtime.validation.http_errors import ERROR_CODE_HEADER

log = get_logger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_CODE_HEADER = ERROR_CODE_HEADER.encode("ascii")


def server_running() -> bool:
    """Whether the caller runs inside an event loop: a server building its middleware, where a raised error
    would not stop it."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Refusal:
    """The ASGI answer of a middleware ``name`` that could not be configured because of ``error``.

    The lifespan's start-up fails with the error. Without a lifespan each request gets a 500 with the code (the
    error, which may name the server's files, goes to the log once, never to clients) and a WebSocket is closed.
    """

    def __init__(self, name: str, error: UsageError) -> None:
        self.name = name
        self.error = error
        self._told = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            message = await receive()
            if message["type"] == "lifespan.startup":  # the server logs the message and exits
                await send({"type": "lifespan.startup.failed", "message": str(self.error)})
            return
        if not self._told:
            self._told = True
            log.error(
                "%s refuses every request: %s", self.name, self.error.message, extra={"error_code": self.error.code}
            )
        code = self.error.code
        if kind == "websocket":
            await send({"type": "websocket.close", "code": 1011, "reason": f"{code}: guard not configured"})
            return
        if kind != "http":
            return
        body = {
            "error": {
                "message": f"{code}: the server's request guard is not configured: its log says why",
                "type": "server_error",
                "param": None,
                "code": code,
            }
        }
        payload = json.dumps(body).encode("utf-8")
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode("ascii")),
            (_CODE_HEADER, code.encode("ascii")),
        ]
        await send({"type": "http.response.start", "status": 500, "headers": headers})
        await send({"type": "http.response.body", "body": payload, "more_body": False})
