"""Running the models for a request: whole answers, and the token streams behind ``stream: true``.

Everything that touches a model's worker is in :func:`model_complete` and :func:`_model_chunks`; the SSE streams
are built on the latter, so they do not care how the tokens arrive.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

from autoglm_runtime.errors import AutoGLMRuntimeError
from autoglm_runtime.isolation import LoadedModel
from autoglm_runtime.validation import GuardResult, error_body
from examples.model_server.openai_api import (
    DONE,
    Envelope,
    Sampling,
    chat_delta,
    completion_choice,
    event,
    usage,
)


@dataclass(frozen=True)
class Answer:
    """One prompt's completion."""

    text: str
    tokens: int
    finish_reason: str


async def model_complete(model: LoadedModel, prompt: str, sampling: Sampling, timeout: float) -> Answer:
    """The model's whole completion of ``prompt``, from its ``complete`` method (awaited, no thread held)."""
    answer: dict[str, Any] = await model.acall(
        "complete",
        prompt,
        sampling.max_tokens,
        temperature=sampling.temperature,
        seed=sampling.seed,
        timeout=timeout,
    )
    return Answer(answer["text"], len(answer["tokens"]), answer["finish_reason"])


async def _model_chunks(
    model: LoadedModel, prompt: str, sampling: Sampling, timeout: float
) -> AsyncGenerator[str, None]:
    """The tokens of the model's ``generate`` generator, each as the text it adds, as the worker yields them.

    The one place streaming depends on the worker API. ``timeout`` is the longest wait for the next token
    (E0305 past it, and the worker is restarted). The streams below close this generator when they end or the
    client goes away (``aclosing``), which closes the model's generator inside its worker.
    """
    stream = model.astream(
        "generate",
        prompt,
        sampling.max_tokens,
        temperature=sampling.temperature,
        seed=sampling.seed,
        timeout=timeout,
    )
    try:
        async for token in stream:
            yield token
    finally:
        await stream.aclose()


def _finish(count: int, sampling: Sampling) -> str:
    # A model stops early only at its stop token; reaching the budget is "length", as OpenAI reports it.
    return "length" if count == sampling.max_tokens else "stop"


async def completion_events(
    model: LoadedModel,
    prompts: list[str],
    first: tuple[str | None, AsyncGenerator[str, None]],
    *,
    envelope: Envelope,
    sampling: Sampling,
    result: GuardResult | None,
    timeout: float,
) -> AsyncIterator[bytes]:
    """The SSE stream of a (batch) completion: each prompt's tokens as chunks of choice ``index``, a finishing
    chunk per prompt, the usage when asked for, then ``[DONE]``. ``first`` is the first prompt's first token
    (``None``: no tokens) and the rest of its stream, already started by the caller."""
    generated = 0
    try:
        for index, prompt in enumerate(prompts):
            token, tokens = first if index == 0 else (None, _model_chunks(model, prompt, sampling, timeout))
            count = 0
            async with contextlib.aclosing(tokens):
                if index == 0 and token is not None:
                    count += 1
                    yield event(envelope.body([completion_choice(index, token, None)]))
                async for token in tokens:
                    count += 1
                    yield event(envelope.body([completion_choice(index, token, None)]))
            generated += count
            yield event(envelope.body([completion_choice(index, "", _finish(count, sampling))]))
    except AutoGLMRuntimeError as exc:  # the status is sent already: the error travels as an event
        yield event(error_body(exc, "openai"))
        return
    if sampling.include_usage:
        yield event(envelope.body([], usage=usage(result, generated)))
    yield DONE


async def chat_events(
    first: tuple[str | None, AsyncGenerator[str, None]],
    *,
    envelope: Envelope,
    sampling: Sampling,
    result: GuardResult | None,
) -> AsyncIterator[bytes]:
    """The SSE stream of a chat completion: the assistant's role, one chunk per token, the finishing chunk, the
    usage when asked for, then ``[DONE]``."""
    token, tokens = first
    count = 0
    yield event(envelope.body([chat_delta({"role": "assistant", "content": ""})]))
    try:
        async with contextlib.aclosing(tokens):
            if token is not None:
                count += 1
                yield event(envelope.body([chat_delta({"content": token})]))
            async for token in tokens:
                count += 1
                yield event(envelope.body([chat_delta({"content": token})]))
    except AutoGLMRuntimeError as exc:
        yield event(error_body(exc, "openai"))
        return
    yield event(envelope.body([chat_delta({}, _finish(count, sampling))]))
    if sampling.include_usage:
        yield event(envelope.body([], usage=usage(result, count)))
    yield DONE


async def started(
    model: LoadedModel, prompt: str, sampling: Sampling, timeout: float
) -> tuple[str | None, AsyncGenerator[str, None]]:
    """The first token of the model's stream and the rest of it: errors before the first token (an unknown
    worker state, a timeout) surface here, while the response can still carry their status."""
    tokens = _model_chunks(model, prompt, sampling, timeout)
    try:
        return await tokens.__anext__(), tokens
    except StopAsyncIteration:
        return None, tokens
