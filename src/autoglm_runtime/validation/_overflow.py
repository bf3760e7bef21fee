"""The E0513 errors of the context-window guard, worded as OpenAI words them (clients look for the phrase)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autoglm_runtime.errors import ContextWindowExceededError

if TYPE_CHECKING:
    from autoglm_runtime.validation.request import GuardInput

__all__ = ["output_error", "overflow_error"]


def overflow_error(
    input_tokens: int, output_tokens: int, window: int, request: GuardInput, *, at_least: bool
) -> ContextWindowExceededError:
    """E0513 worded as OpenAI words it, so clients that look for the phrase recognise it.

    The output budget is blamed on the field that asked for it; a request that sets none got the guard's
    ``default_output_tokens`` (or the backend's default, ``output_defaulted``), and is told so rather than to lower a
    field it never sent. A request that generates nothing (``embedding``) is told of its input alone: "the input", or
    the place of the one at fault among several (``input[1]``); ``param`` names it either way.
    """
    has = "at least " if at_least else ""
    if request.embedding:
        # One input is "the input"; one of a batch (input[1]) is named, so the client knows which to shorten.
        several = request.param is not None and request.param.endswith("]")
        where = f"{request.param}, one of the request's inputs," if several else "the input"
        return ContextWindowExceededError(
            f"This model's maximum context length is {window} tokens. However, you requested {has}{input_tokens} "
            f"tokens in {where} for embedding generation, more than the context window of {window} tokens: shorten "
            f"{request.param if several else 'the input'}",
            param=request.param,
        )
    field = request.output_param
    if request.max_output_tokens is not None and output_tokens > request.max_output_tokens:
        # A budget under the least the model writes (a completion's echo with 0): lowering it changes nothing.
        output = f"{output_tokens} for the completion, the least the model writes, though {field} is "
        output += f"{request.max_output_tokens}"
        fix = "shorten the input"
    elif request.max_output_tokens is not None and not request.output_defaulted:
        output = f"{output_tokens} in the completion asked for by {field}"
        fix = f"shorten the input or lower {field}"
    else:
        output = f"{output_tokens} for the completion by default, as the request sets no {field}"
        # The least the model writes (vLLM: one token) cannot be lowered.
        fix = "shorten the input" + (f", or send a lower {field}" if output_tokens > request.min_output_tokens else "")
    return ContextWindowExceededError(
        f"This model's maximum context length is {window} tokens. However, you requested {has}"
        f"{input_tokens + output_tokens} tokens ({has}{input_tokens} in the input, {output}), more than the context "
        f"window of {window} tokens: {fix}",
        param=request.param,
    )


def output_error(output: int, window: int, output_param: str) -> ContextWindowExceededError:
    """E0513 for an output budget over the window on its own (the input does not matter)."""
    return ContextWindowExceededError(
        f"This model's maximum context length is {window} tokens. However, {output_param} asks for {output} output "
        f"tokens, more than the context window of {window} tokens on its own: lower {output_param} to at most "
        f"{window} minus the input's tokens",
        param=output_param,
    )
