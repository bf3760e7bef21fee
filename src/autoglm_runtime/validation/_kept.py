"""Requests whose backend cuts the prompt itself: vLLM's ``truncate_prompt_tokens``.

vLLM keeps only the last (``truncation_side`` ``"right"``: the first) ``truncate_prompt_tokens`` tokens of the
prompt it tokenized, ``-1`` meaning as many as the window leaves beside the output budget, and refuses a number larger
than that. Such a request cannot overflow with its input, so the guard must not refuse it for its length: it counts
the input whole, as the backend tokenizes it, and reports what the backend keeps. The guard itself cuts nothing
(``removed_tokens`` stays 0 and the body is forwarded as it came).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from autoglm_runtime.errors import ContextWindowExceededError, InvalidRequestError
from autoglm_runtime.validation.limits import Limits
from autoglm_runtime.validation.request import GuardInput, GuardResult

if TYPE_CHECKING:
    from autoglm_runtime.validation.context_window import ContextWindowGuard

__all__ = ["judge_kept", "kept_fields"]

#: A window no input reaches: the backend's own cut decides what fits.
_UNBOUNDED = Limits(2**62)


def kept_fields(body: dict[str, Any]) -> tuple[int | None, str]:
    """``truncate_prompt_tokens`` (an integer of at least -1, or none) and ``truncation_side`` of a request body."""
    keep = body.get("truncate_prompt_tokens")
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < -1):
        raise InvalidRequestError(
            f"truncate_prompt_tokens must be an integer of at least -1, got {keep!r:.40}: fix the request body",
            param="truncate_prompt_tokens",
        )
    side = body.get("truncation_side")
    if side not in (None, "left", "right"):
        raise InvalidRequestError(
            f"truncation_side must be 'left' or 'right', got {side!r:.40}: fix the request body",
            param="truncation_side",
        )
    return keep, side or "left"


def judge_kept(guard: ContextWindowGuard, request: GuardInput, output: int, limits: Limits) -> GuardResult:
    """The verdict for a request asking the backend to keep ``request.keep_tokens`` prompt tokens."""
    assert request.keep_tokens is not None
    window = limits.context_window
    room = window - output
    keep = room if request.keep_tokens == -1 else request.keep_tokens
    if keep > room:
        raise ContextWindowExceededError(
            f"This model's maximum context length is {window} tokens. However, truncate_prompt_tokens asks to keep "
            f"{keep} prompt tokens, and with the {output} tokens of the completion asked for by "
            f"{request.output_param} that is more than the context window: lower truncate_prompt_tokens to at most "
            f"{room}, or send -1 for all the room there is",
            param="truncate_prompt_tokens",
        )
    whole = guard._judge_under(replace(request, keep_tokens=None), _UNBOUNDED, allow_truncation=False)
    return _kept(whole, keep, request.keep_side, window)


def _kept(result: GuardResult, keep: int, side: str, window: int) -> GuardResult:
    if result.batch:
        each = tuple(_kept(one, keep, side, window) for one in result.batch)
        return replace(
            result,
            input_tokens=sum(one.input_tokens for one in each),
            context_window=window,
            token_ids=tuple(one.token_ids[0] for one in each),
            batch=each,
        )
    cut = result.input_tokens - keep
    if cut <= 0:
        return replace(result, context_window=window)
    ids = [list(piece) for piece in result.token_ids]
    left = cut
    for piece in ids if side == "left" else reversed(ids):  # the cut starts at the start, or at the end
        taken = min(left, len(piece))
        if side == "left":
            del piece[:taken]
        else:
            del piece[len(piece) - taken :]
        left -= taken
    # The rendered prompt's text no longer matches what the backend keeps.
    return replace(result, input_tokens=keep, context_window=window, token_ids=tuple(map(tuple, ids)), prompt=None)
