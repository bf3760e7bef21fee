"""Reading a request's body for the ASGI middleware: whole, within a size limit and a deadline, uncompressed."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from autoglm_runtime.errors import BodyTimeoutError, InputDecodeError, RequestTooLargeError

__all__ = ["Disconnected", "read_body", "read_body_in_time", "refuse_encoding"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]


class Disconnected(Exception):
    """The client went away while its body was being read."""


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole body of the request, at most ``limit`` bytes (E0515 past it, a larger ``content-length`` refused
    unread); :class:`Disconnected` if the client goes away first."""
    for name, value in scope.get("headers") or ():
        declared = value.strip()
        # Compare digit counts first: int() of a 5,000-digit header would raise (and cost) before any check.
        if name.lower() == b"content-length" and declared.isdigit():
            too_large = len(declared.lstrip(b"0")) > len(str(limit)) or int(declared) > limit
            if too_large:
                text = declared.decode("ascii")
                shown = text if len(text) <= 20 else f"{text[:12]}... ({len(text)} digits)"
                raise RequestTooLargeError(
                    f"the request body is {shown} bytes long, more than the {limit} bytes this server takes: send "
                    f"a body of at most {limit} bytes (the limit is the server's max_body_bytes setting)",
                )
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestTooLargeError(
                f"the request body is larger than the {limit} bytes this server takes ({size} bytes received when "
                f"reading stopped): send a body of at most {limit} bytes (the limit is the server's max_body_bytes "
                "setting)",
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def read_body_in_time(scope: Scope, receive: Receive, limit: int, timeout: float) -> bytes:
    """:func:`read_body` within ``timeout`` seconds (E0517 past it)."""
    try:
        if sys.version_info >= (3, 11):
            # A deadline on the running task: wait_for would start a task of its own for every request.
            async with asyncio.timeout(timeout):
                return await read_body(scope, receive, limit)
        return await asyncio.wait_for(read_body(scope, receive, limit), timeout)
    except asyncio.TimeoutError:
        raise BodyTimeoutError(
            f"the request body did not arrive within {timeout:g} seconds: send the body promptly "
            "(the server's body_timeout)"
        ) from None


def refuse_encoding(scope: Scope) -> None:
    """E5009 for a compressed body: bytes the guard cannot count, refused with its reason, not as "invalid UTF-8"."""
    for name, value in scope.get("headers") or ():
        if name.lower() == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
            raise InputDecodeError(
                f"the request body is sent with content-encoding {value.decode('latin-1')[:40]!r}, which the "
                "guard cannot read: send it uncompressed"
            )
