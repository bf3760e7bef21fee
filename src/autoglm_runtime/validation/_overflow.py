"""The E0513 errors of the context-window guard, worded as OpenAI words them (clients look for the phrase)."""

from __future__ import annotations

from autoglm_runtime.errors import ContextWindowExceededError

__all__ = ["output_error", "overflow_error"]


def overflow_error(
    input_tokens: int, output_tokens: int, window: int, param: str | None, output_param: str, *, at_least: bool
) -> ContextWindowExceededError:
    """E0513 worded as OpenAI words it, so clients that look for the phrase recognise it."""
    has = "at least " if at_least else ""
    return ContextWindowExceededError(
        f"This model's maximum context length is {window} tokens. However, you requested {has}"
        f"{input_tokens + output_tokens} tokens ({has}{input_tokens} in the input, {output_tokens} in the completion "
        f"asked for by {output_param}), more than the context window of {window} tokens: shorten the input or "
        f"lower {output_param}",
        param=param,
    )


def output_error(output: int, window: int, output_param: str) -> ContextWindowExceededError:
    """E0513 for an output budget over the window on its own (the input does not matter)."""
    return ContextWindowExceededError(
        f"This model's maximum context length is {window} tokens. However, {output_param} asks for {output} output "
        f"tokens, more than the context window of {window} tokens on its own: lower {output_param} to at most "
        f"{window} minus the input's tokens",
        param=output_param,
    )
