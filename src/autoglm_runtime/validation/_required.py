"""``require_input`` for the gRPC interceptors and ``@guarded``: refuse a request that gives the model nothing.

Input with nothing in it is within every limit, so without the option the guards pass it. Over HTTP the middleware
asks whether the body holds an input field at all (:meth:`OpenAIExtractor.missing_input`); here the input is what
an extractor or a function argument hands over, and a proto3 string field left unset reads ``""``, so empty is
missing: no piece, or only empty strings and empty token id lists, and no chat message.
"""

from __future__ import annotations

from autoglm_runtime.errors import InvalidRequestError
from autoglm_runtime.validation.request import GuardInput, segments_of

__all__ = ["is_empty", "no_input"]


def is_empty(request: GuardInput) -> bool:
    """Whether ``request`` holds nothing for the model (E5010 for pieces of the wrong shape, as judging would be)."""
    if request.chat is not None and request.chat.messages:
        return False
    return not any(map(len, segments_of(request.segments)))


def no_input(param: str | None) -> InvalidRequestError:
    """E5010 for a request without input, naming the field or argument that should hold it."""
    where = param or "the input"
    return InvalidRequestError(
        f"the request gives the model no input: {where} is empty or not set: send the model's input; this server "
        "refuses requests without it (require_input)",
        param=param,
    )
