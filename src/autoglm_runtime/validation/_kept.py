"""Requests whose backend cuts the prompt itself: vLLM's ``truncate_prompt_tokens``.

vLLM keeps only the last (``truncation_side`` ``"right"``: the first) ``truncate_prompt_tokens`` tokens of the
prompt it tokenized, ``-1`` meaning as many as the window leaves beside the output budget, and refuses a number larger
than that. Such a request cannot overflow with its input, so the guard must not refuse it for its length: it counts
the input whole, as the backend tokenizes it, and reports what the backend keeps. The guard itself cuts nothing
(``removed_tokens`` stays 0 and the body is forwarded as it came).

``0`` is E5010: vLLM cuts the prompt to nothing and then refuses it as empty. A request sending no output budget
leaves vLLM no room to keep for it, so ``-1`` keeps the whole window, and vLLM then refuses a prompt that leaves no
room for the one token the model writes at least: E0513 here too (``vllm/renderers/params.py``
``TokenizeParams``, ``vllm/v1/engine/input_processor.py`` ``InputProcessor._validate_prompt_len``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from autoglm_runtime.errors import ContextWindowExceededError, InvalidRequestError
from autoglm_runtime.validation._lax import lax_int
from autoglm_runtime.validation.limits import Limits
from autoglm_runtime.validation.request import GuardInput, GuardResult

if TYPE_CHECKING:
    from autoglm_runtime.validation.context_window import ContextWindowGuard

__all__ = ["judge_kept", "kept_fields"]

#: A window no input reaches: the backend's own cut decides what fits.
_UNBOUNDED = Limits(2**62)


def kept_fields(body: dict[str, Any]) -> tuple[int | None, str]:
    """``truncate_prompt_tokens`` (a whole number of at least 1, or -1, or none; read as vLLM reads it, so ``"5"``
    is 5) and ``truncation_side`` of a request body."""
    sent = body.get("truncate_prompt_tokens")
    keep = None if sent is None else lax_int(sent)
    if sent is not None and (keep is None or keep < -1):
        raise InvalidRequestError(
            f'truncate_prompt_tokens must be a whole number of at least 1, or -1 (vLLM also reads "5" and 5.0 as '
            f"5), got {sent!r:.40}: fix the request body",
            param="truncate_prompt_tokens",
        )
    if keep == 0:
        # vLLM cuts the prompt to nothing, then refuses it: "The decoder prompt cannot be empty".
        raise InvalidRequestError(
            "truncate_prompt_tokens is 0, which keeps no prompt token, and the model cannot read an empty prompt: send "
            "at least 1, or -1 for all the room the window leaves",
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
        beside = (
            f"and with the {output} tokens of the completion asked for by {request.output_param} that is"
            if output
            else "which is"
        )
        raise ContextWindowExceededError(
            f"This model's maximum context length is {window} tokens. However, truncate_prompt_tokens asks to keep "
            f"{keep} prompt tokens, {beside} more than the context window: lower truncate_prompt_tokens to at most "
            f"{room}, or send -1 for all the room there is",
            param="truncate_prompt_tokens",
        )
    whole = guard._judge_under(replace(request, keep_tokens=None), _UNBOUNDED, allow_truncation=False)
    least = request.min_output_tokens
    longest = max(one.input_tokens for one in whole.batch or (whole,))
    if min(longest, keep) + least > window:
        # Only with no budget sent (or a completion's echo with 0): vLLM keeps the whole window and then refuses a
        # prompt that leaves no room.
        param, sent = request.output_param, request.max_output_tokens
        if sent is None:
            why, ask = f"as the request sets no {param}", f"a {param}"
        else:
            why, ask = f"though {param} is {sent}", f"a {param} of at least {least}"
        raise ContextWindowExceededError(
            f"This model's maximum context length is {window} tokens. However, truncate_prompt_tokens keeps "
            f"{min(longest, keep)} prompt tokens, which leaves no room for the {least} completion token(s) the model "
            f"writes at least, {why}: send truncate_prompt_tokens of at most {window - least}, or {ask}",
            param="truncate_prompt_tokens",
        )
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
