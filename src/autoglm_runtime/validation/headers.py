"""HeaderTokenGuard: overlong header values are rejected (E0512) before anything parses them.

The check works on the raw header pairs as the server received them (bytes for ASGI, str or bytes for gRPC
metadata) and only measures lengths: it never decodes, splits or logs a value, so an overlong or malformed
``Authorization`` token cannot reach the code that would parse it::

    guard = HeaderTokenGuard(max_length=512, headers=("authorization",))
    guard.check(scope["headers"])   # raises HeaderTooLongError, HTTP 431, naming the header
"""

from __future__ import annotations

from collections.abc import Iterable

from autoglm_runtime.errors import HeaderTooLongError, UsageError

__all__ = ["HeaderTokenGuard"]


class HeaderTokenGuard:
    """Rejects any of ``headers`` (case-insensitive names) whose value is longer than ``max_length``.

    Length is counted in bytes of the value as received (for ASCII tokens, bytes and characters agree; a
    non-ASCII value is never shorter in bytes, so nothing slips through by counting bytes).

    >>> HeaderTokenGuard(max_length=4).check([(b"authorization", b"Bearer abc")])
    Traceback (most recent call last):
    ...
    autoglm_runtime.errors.HeaderTooLongError: E0512: the authorization header is 10 bytes long, more than the 4 \
bytes this server takes: send at most 4 bytes
    """

    def __init__(self, max_length: int = 512, headers: Iterable[str] = ("authorization",)) -> None:
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise UsageError(f"max_length must be a positive integer, got {max_length!r}")
        names = tuple(name.lower() for name in headers)
        if not names:
            raise UsageError("headers must name at least one header to guard")
        self.max_length = max_length
        self.headers = names
        self._names = frozenset(names) | frozenset(name.encode("latin-1") for name in names)

    def check(self, headers: Iterable[tuple[bytes | str, bytes | str]]) -> None:
        """Raise :class:`HeaderTooLongError` for the first guarded header over the limit."""
        limit = self.max_length
        names = self._names
        for name, value in headers:
            # A str value is at most 4 bytes per character in UTF-8, so shorter ones cannot be over the limit.
            if len(value) <= (limit if isinstance(value, bytes) else limit // 4):
                continue
            lowered = name.lower()
            if lowered not in names:
                continue
            size = len(value) if isinstance(value, bytes) else len(value.encode("utf-8", "surrogatepass"))
            if size > limit:
                header = lowered.decode("latin-1") if isinstance(lowered, bytes) else lowered
                raise HeaderTooLongError(
                    # For the client, who cannot change the limit (the operator's remedy is in error-codes.md).
                    f"the {header} header is {size} bytes long, more than the {limit} bytes this server takes: "
                    f"send at most {limit} bytes",
                    param=header,
                )
