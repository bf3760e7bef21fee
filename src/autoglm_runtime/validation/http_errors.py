"""Our errors as HTTP answers: the status, the headers and the OpenAI-shaped JSON body.

The guards' middleware answers its rejections with these; an app answers the errors it meets after the guards (a
model's: E0106 overloaded, E0305 timed out, E0103 failed) with :func:`http_error`, so every refusal a client sees
has one shape, whoever raised it.
"""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple

from autoglm_runtime.errors import AutoGLMRuntimeError

__all__ = ["ERROR_CODE_HEADER", "ErrorStyle", "HTTPError", "error_body", "http_error"]

#: The response header carrying the error's E-code, whatever the body's ``code`` says.
ERROR_CODE_HEADER = "x-autoglm-error-code"

#: ``"autoglm"`` puts our E-code in ``error.code``; ``"openai"`` puts OpenAI's code there (for E0513
#: ``context_length_exceeded``) and keeps the E-code in the message and the ``x-autoglm-error-code`` header.
ErrorStyle = Literal["autoglm", "openai"]


def error_body(exc: AutoGLMRuntimeError, style: ErrorStyle = "autoglm") -> dict[str, Any]:
    """The OpenAI error shape carrying our code: ``{"error": {"message", "type", "param", "code"}}``.

    With ``style="openai"`` the ``code`` is OpenAI's where one exists (``context_length_exceeded``) and the message
    starts with our code.
    """
    code: str | None = exc.code
    message = exc.message
    if style == "openai":
        code = exc.openai_code or exc.code
        message = f"{exc.code}: {message}"
    return {
        "error": {
            "message": message,
            "type": exc.openai_type,
            "param": getattr(exc, "param", None),
            "code": code,
        }
    }


class HTTPError(NamedTuple):
    """An error as an HTTP answer: hand the three to your framework's JSON response."""

    #: The HTTP status: the error class's ``http_status`` unless overridden.
    status: int
    #: ``x-autoglm-error-code`` (the E-code), and ``retry-after`` (whole seconds, at least 1) for an error that says
    #: when to come back; lower-case names, as ASGI sends them.
    headers: dict[str, str]
    #: The JSON body, as :func:`error_body` writes it.
    body: dict[str, Any]


def http_error(
    exc: AutoGLMRuntimeError, style: ErrorStyle = "autoglm", *, status: int | None = None, code: str | None = None
) -> HTTPError:
    """``exc`` as the status, headers and body of an HTTP answer, as the guards' middleware answers it.

    An error with ``retry_after`` (seconds: an overloaded model's E0106, a busy guard's E0516) gets ``Retry-After``
    in whole seconds, rounded up, so a client never comes back sooner than it was told, and never below 1:
    ``Retry-After: 0`` tells a client that follows the header to retry at once, into the same overload. ``status``
    and ``code`` override the class's status and the body's ``code`` where your API has its own (a 404
    ``model_not_found``); a status below 500 is the request's fault, so the body's ``type`` is then
    ``invalid_request_error``.

    >>> from autoglm_runtime.errors import ModelOverloadedError
    >>> http_error(ModelOverloadedError("model 'gen' is overloaded", retry_after=0.5), "openai")
    HTTPError(status=503, headers={'x-autoglm-error-code': 'E0106', 'retry-after': '1'}, body={'error': {...}})
    """
    status = status if status is not None else exc.http_status
    body = error_body(exc, style)
    if code is not None:
        body["error"]["code"] = code
    if status < 500:
        body["error"]["type"] = "invalid_request_error"
    headers = {ERROR_CODE_HEADER: exc.code}
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(retry_after, int | float) and not isinstance(retry_after, bool) and math.isfinite(retry_after):
        headers["retry-after"] = str(max(1, math.ceil(retry_after)))
    return HTTPError(status, headers, body)
