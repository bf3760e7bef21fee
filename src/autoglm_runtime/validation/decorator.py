"""``guarded``: the guards around a plain Python function (sync or async) that takes a prompt.

The decorated function only ever sees input that fits; with truncation enabled it receives the truncated prompt,
and it can ask for the guard's verdict through ``result_arg``::

    @guarded(ContextWindowGuard(tokenizer, 8192), text_arg="prompt", max_tokens_arg="max_tokens")
    def generate(prompt: str, max_tokens: int = 256) -> str:
        ...

    generate("x" * 10_000_000)   # raises ContextWindowExceededError (E0513) before generate runs
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

from autoglm_runtime.errors import InvalidRequestError, UsageError
from autoglm_runtime.observability import GuardCheck
from autoglm_runtime.validation.context_window import ContextWindowGuard, GuardResult
from autoglm_runtime.validation.decode import DecodeGuard

__all__ = ["guarded"]

P = ParamSpec("P")
R = TypeVar("R")


def guarded(
    guard: ContextWindowGuard,
    *,
    text_arg: str = "prompt",
    max_tokens_arg: str | None = "max_tokens",
    result_arg: str | None = None,
    decode_guard: DecodeGuard | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a function so its ``text_arg`` (a string or a list of strings) is judged before every call.

    ``max_tokens_arg`` names the argument holding the requested output tokens (its default value counts when the
    caller leaves it out). ``result_arg``, if given, is an argument the wrapper fills with the
    :class:`GuardResult`. Lone surrogates are rejected (E5009) before counting.
    """
    decoder = decode_guard or DecodeGuard()

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(fn)
        for name in (text_arg, max_tokens_arg, result_arg):
            if name is not None and name not in signature.parameters:
                raise UsageError(f"{fn.__qualname__} has no parameter named {name!r} for the guard to use")

        def verdict(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[inspect.BoundArguments, GuardResult]:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            text = bound.arguments[text_arg]
            if not isinstance(text, (str, list, tuple)):
                raise InvalidRequestError(
                    f"{text_arg} must be a string or a list of strings, got {type(text).__name__}", param=text_arg
                )
            for piece in [text] if isinstance(text, str) else text:
                if isinstance(piece, str):
                    decoder.check_text(piece, param=text_arg)
            max_tokens = bound.arguments.get(max_tokens_arg) if max_tokens_arg is not None else None
            result: GuardResult = guard.check(text, max_output_tokens=max_tokens, param=text_arg)
            if result.truncated:
                bound.arguments[text_arg] = result.text if isinstance(text, str) else list(result.segments)
            if result_arg is not None:
                bound.arguments[result_arg] = result
            return bound, result

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with GuardCheck("decorator") as check:
                    bound, result = verdict(args, kwargs)
                    check.passed(result)
                    check.forward()  # the call's own spans (its model calls) join the guard span's trace
                    return await fn(*bound.args, **bound.kwargs)

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with GuardCheck("decorator") as check:
                bound, result = verdict(args, kwargs)
                check.passed(result)
                check.forward()
                return fn(*bound.args, **bound.kwargs)

        return cast(Callable[P, R], wrapper)

    return decorate
