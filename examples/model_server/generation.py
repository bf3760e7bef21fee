"""Running the models for a request: whole answers, and the token streams behind ``stream: true``.

Everything that touches a model's worker is in :func:`model_complete` and :func:`_model_chunks`; the SSE streams
are built on the latter, so they do not care how the tokens arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
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


def _unpaced() -> float:
    return 0.0


@dataclass(frozen=True)
class Run:
    """What running one request on a model takes: the model, the request's options, the request's id (the model
    logs each request's start and end under it), the longest wait for the model (s), and the stream's pace read
    live (tokens a second, ``0``: as fast as the model writes them)."""

    model: LoadedModel
    sampling: Sampling
    request_id: str
    timeout: float
    pace: Callable[[], float] = _unpaced

    def prompt_id(self, index: int, count: int) -> str:
        """The id the model gets for prompt ``index`` of ``count``: the request's, ``[index]`` added in a batch."""
        return self.request_id if count == 1 else f"{self.request_id}[{index}]"


#: The longest a paced stream sleeps before it reads its pace again: a change applies to waiting streams too.
PACE_RECHECK = 0.2


def _model_arguments(run: Run, request_id: str) -> dict[str, Any]:
    """What ``complete`` and ``generate`` take besides the prompt, and the call's timeout."""
    sampling = run.sampling
    return {
        "max_tokens": sampling.max_tokens,
        "temperature": sampling.temperature,
        "seed": sampling.seed,
        "request_id": request_id,
        "timeout": run.timeout,
    }


async def model_complete(run: Run, prompt: str, request_id: str) -> Answer:
    """The model's whole completion of ``prompt``, from its ``complete`` method (awaited, no thread held)."""
    answer: dict[str, Any] = await run.model.acall("complete", prompt, **_model_arguments(run, request_id))
    return Answer(answer["text"], len(answer["tokens"]), answer["finish_reason"])


async def _paced(pace: Callable[[], float], last: float) -> None:
    """Return once the next token is due, ``1 / pace()`` s after the ``last`` one (a loop time)."""
    loop = asyncio.get_running_loop()
    while (rate := pace()) > 0 and (left := last + 1 / rate - loop.time()) > 0:
        await asyncio.sleep(min(left, PACE_RECHECK))


async def _model_chunks(run: Run, prompt: str, request_id: str) -> AsyncGenerator[str, None]:
    """The tokens of the model's ``generate`` generator, each as the text it adds, as the worker yields them.

    The one place streaming depends on the worker API. ``run.timeout`` is the longest wait for the next token
    (E0305 past it, and the worker is restarted). A paced stream takes its next token from the worker only once
    it is due; the worker runs at most 32 tokens ahead of what is taken (docs/isolation.md), so pacing slows
    the model's generator too. The streams below close this generator when they end or the client goes away
    (``aclosing``), which closes the model's generator inside its worker.
    """
    stream = run.model.astream("generate", prompt, **_model_arguments(run, request_id))
    loop = asyncio.get_running_loop()
    last: float | None = None
    try:
        while True:
            if last is not None:
                await _paced(run.pace, last)
            try:
                token = await stream.__anext__()
            except StopAsyncIteration:
                return
            last = loop.time()
            yield token
    finally:
        await stream.aclose()


def _finish(count: int, sampling: Sampling) -> str:
    # A model stops early only at its stop token; reaching the budget is "length", as OpenAI reports it.
    return "length" if count == sampling.max_tokens else "stop"


async def completion_events(
    run: Run,
    prompts: list[str],
    first: tuple[str | None, AsyncGenerator[str, None]],
    *,
    envelope: Envelope,
    result: GuardResult | None,
) -> AsyncIterator[bytes]:
    """The SSE stream of a (batch) completion: each prompt's tokens as chunks of choice ``index``, a finishing
    chunk per prompt, the usage when asked for, then ``[DONE]``. ``first`` is the first prompt's first token
    (``None``: no tokens) and the rest of its stream, already started by the caller."""
    sampling = run.sampling
    generated = 0
    try:
        for index, prompt in enumerate(prompts):
            request_id = run.prompt_id(index, len(prompts))
            token, tokens = first if index == 0 else (None, _model_chunks(run, prompt, request_id))
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


async def started(run: Run, prompt: str, request_id: str) -> tuple[str | None, AsyncGenerator[str, None]]:
    """The first token of the model's stream and the rest of it: errors before the first token (an unknown
    worker state, a timeout) surface here, while the response can still carry their status."""
    tokens = _model_chunks(run, prompt, request_id)
    try:
        return await tokens.__anext__(), tokens
    except StopAsyncIteration:
        return None, tokens
