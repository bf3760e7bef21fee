"""``guarded``: the guards around a plain Python function (sync or async) that takes a prompt.

The decorated function only ever sees input that fits; with truncation enabled it receives the truncated prompt,
and it can ask for the guard's verdict through ``result_arg``::

    @guarded(ContextWindowGuard(tokenizer, 8192), text_arg="prompt", max_tokens_arg="max_tokens")
    def generate(prompt: str, max_tokens: int = 256) -> str:
        ...

    generate("x" * 10_000_000)   # raises ContextWindowExceededError (E0513) before generate runs
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, ParamSpec, TypeVar, cast

from autoglm_runtime.errors import InvalidRequestError, UsageError
from autoglm_runtime.observability import GuardCheck
from autoglm_runtime.validation._openai import OpenAIExtractor, read_budget
from autoglm_runtime.validation._required import is_empty, no_input
from autoglm_runtime.validation.context_window import ContextWindowGuard, GuardInput, GuardResult
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
    roles: Iterable[str] | None = None,
    require_input: bool = False,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a function so its ``text_arg`` is judged before every call: a string, a list of strings, or a chat
    (a list of OpenAI-style message dicts, judged as the ASGI middleware judges ``messages``: with the guard's chat
    template when it has one; with truncation on, the function receives the kept messages, old turns dropped, as a
    new list: the caller's is never changed).

    ``max_tokens_arg`` names the argument holding the requested output tokens (its default value counts when the
    caller leaves it out). ``result_arg``, if given, is an argument the wrapper fills with the
    :class:`GuardResult`. Lone surrogates are rejected (E5009) before counting. ``roles`` are the message roles a
    chat may use, as :class:`OpenAIExtractor`'s: any string by default (``None``), as vLLM takes it.
    ``require_input`` refuses (E5010) a call whose ``text_arg`` is empty (``""``, ``[]``, only empty prompts), which
    otherwise passes: nothing to count is within every limit.
    """
    decoder = decode_guard or DecodeGuard()
    # A chat argument is read as a body whose fields the argument names stand for, so errors name them
    # (param "messages[1].content"); built once here, not on each call.
    chat_extractor = OpenAIExtractor(
        prompt_fields=(),
        messages_fields=(text_arg,),
        max_tokens_fields=(max_tokens_arg,) if max_tokens_arg is not None else (),
        roles=roles,
    )

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
                    f"{text_arg} must be a string, a list of strings or a list of chat messages, got "
                    f"{type(text).__name__}",
                    param=text_arg,
                )
            max_tokens = bound.arguments.get(max_tokens_arg) if max_tokens_arg is not None else None
            if text and all(isinstance(message, dict) for message in text):
                result, kept = _judge_chat(
                    guard,
                    decoder,
                    chat_extractor,
                    list(text),
                    max_tokens,
                    text_arg=text_arg,
                    max_tokens_arg=max_tokens_arg,
                )
                bound.arguments[text_arg] = kept
            else:
                for piece in [text] if isinstance(text, str) else text:
                    if isinstance(piece, str):
                        decoder.check_text(piece, param=text_arg)
                # Judged as a request to the model: room for the token it writes (as a chat is), its budget read
                # as the HTTP path and a chat here read it (0 is E5010, as vLLM refuses it).
                output_param = max_tokens_arg or "max_tokens"
                if max_tokens is not None:
                    max_tokens = read_budget(output_param, max_tokens)
                request = GuardInput(text, max_tokens, text_arg, output_param=output_param)
                if require_input and is_empty(request):
                    raise no_input(text_arg)
                result = guard.judge(request)
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


def _judge_chat(
    guard: ContextWindowGuard,
    decoder: DecodeGuard,
    extractor: OpenAIExtractor,
    messages: list[Any],
    max_tokens: Any,
    *,
    text_arg: str,
    max_tokens_arg: str | None,
) -> tuple[GuardResult, list[Any]]:
    """The verdict on a chat, and the messages the function receives (the caller's, or the kept ones)."""
    decoder.check_value({text_arg: messages})
    body: dict[str, Any] = {text_arg: messages}
    if max_tokens_arg is not None and max_tokens is not None:
        body[max_tokens_arg] = max_tokens
    extracted = extractor.extract(body)
    result = guard.judge(extracted.guard_input())
    if not result.truncated and not result.dropped_messages:
        return result, messages
    copied = {text_arg: copy.deepcopy(messages)}
    return result, list(extractor.apply(copied, extracted, result)[text_arg])
