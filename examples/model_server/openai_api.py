"""OpenAI's wire format for the example server: request options, response bodies, stream chunks and errors.

Shapes follow OpenAI's API reference (``text_completion``, ``chat.completion``, ``chat.completion.chunk``, the
``{"error": {...}}`` body), so the official clients parse them. Errors keep the SDK's convention of
``error_style="openai"``: OpenAI's code where one exists (``model_not_found``, ``context_length_exceeded``),
our E-code at the start of the message and in the ``x-autoglm-error-code`` header.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse

from autoglm_runtime.errors import AutoGLMRuntimeError, InvalidRequestError
from autoglm_runtime.validation import GuardResult, http_error
from examples.model_server.model_limits import Reading

#: Output tokens when a request names none (the guards assume the same; see app.py).
DEFAULT_MAX_TOKENS = 16
OWNER = "autoglm-runtime-example"


def error_response(exc: AutoGLMRuntimeError, *, status: int | None = None, code: str | None = None) -> JSONResponse:
    """``exc`` as OpenAI's error body; ``status`` and ``code`` override the class's where OpenAI has its own."""
    answer = http_error(exc, "openai", status=status, code=code)
    return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)


def model_not_found(name: str, known: Sequence[str]) -> JSONResponse:
    """404 ``model_not_found``, naming the models that are served."""
    exc = InvalidRequestError(
        f"the model {name!r} does not exist here: choose one of {', '.join(sorted(known))} (GET /v1/models lists them)",
        param="model",
    )
    return error_response(exc, status=404, code="model_not_found")


# What these models cannot give: refused when asked for, never dropped (a client asking for log probabilities would
# get "logprobs": null, one sending tools a plain text answer, one sending stop sequences text past them, one asking
# for nucleus sampling or a penalty the plain temperature sampling it did not ask for). The sampling options after
# OpenAI's are vLLM's, which its clients send in extra_body.
_UNSUPPORTED = {
    "logprobs": "log probabilities",
    "top_logprobs": "log probabilities",
    "echo": "echoing the prompt",
    "best_of": "best-of sampling",
    "suffix": "suffixes",
    "stop": "stop sequences",
    "logit_bias": "logit biases",
    "tools": "tool calls",
    "tool_choice": "tool calls",
    "functions": "function calls",
    "function_call": "function calls",
    "response_format": "response formats other than text",
    "modalities": "output other than text",
    "audio": "audio output",
    "web_search_options": "web search",
    "top_p": "nucleus sampling",
    "presence_penalty": "presence penalties",
    "frequency_penalty": "frequency penalties",
    "top_k": "top-k sampling",
    "min_p": "min-p sampling",
    "repetition_penalty": "repetition penalties",
    "min_tokens": "a minimum length",
    "ignore_eos": "generating past the end of the text",
    "stop_token_ids": "stop tokens",
}
# The values that ask for nothing (what a client sends when it leaves the option at its default).
_NOTHING_ASKED: dict[str, tuple[Any, ...]] = {
    "best_of": (1,),
    "tool_choice": ("none", "auto"),
    "function_call": ("none", "auto"),
    "response_format": ({"type": "text"},),
    "modalities": (["text"],),
    "top_p": (1,),
    "top_k": (-1,),  # vLLM's "all tokens" (0 too, as every option's 0)
    "repetition_penalty": (1,),
}
# Tools a request forbids calling ("none": "the model will not call any tool and instead generates a message") ask
# for nothing these models cannot give: a plain answer is what such a request wants.
_CALLS_FORBIDDEN_BY = {"tools": "tool_choice", "functions": "function_call"}


def _unsupported(body: Mapping[str, Any]) -> list[tuple[str, str]]:
    problems = []
    for name, what in _UNSUPPORTED.items():
        value = body.get(name)
        # (A completion's logprobs=0 asks for the log probability of each chosen token: only false asks nothing.)
        zero_asks = name == "logprobs" and type(value) is int
        if (value in (None, False, 0, "", [], {}) and not zero_asks) or value in _NOTHING_ASKED.get(name, ()):
            continue
        if name in _CALLS_FORBIDDEN_BY and body.get(_CALLS_FORBIDDEN_BY[name]) == "none":
            continue
        problems.append((name, f"{name} asks for {what}, which these models do not give, got {value!r:.40}"))
    return problems


#: The least seed taken: a signed 64-bit integer's (vLLM's range starts there too).
_LEAST_SEED = -(2**63)


def _unreadable_parts(body: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The content parts of a chat the models cannot read (images, audio, files): the chat template renders text
    parts alone, so the model would answer as if they had not been sent."""
    messages = body.get("messages")
    problems = []
    for index, message in enumerate(messages if isinstance(messages, list) else ()):
        content = message.get("content") if isinstance(message, dict) else None
        for number, part in enumerate(content if isinstance(content, list) else ()):
            kind = part.get("type") if isinstance(part, dict) else None
            if isinstance(kind, str) and kind != "text":
                where = f"messages[{index}].content[{number}]"
                problems.append((where, f"{where} is a part of type {kind!r:.40}, which these models cannot read"))
    return problems


@dataclass(frozen=True)
class Sampling:
    """The generation options of one request, checked (every problem named at once)."""

    max_tokens: int
    explicit: bool
    temperature: float
    seed: int | None
    stream: bool
    include_usage: bool

    @classmethod
    def from_body(cls, body: Mapping[str, Any], judged: int | None = None) -> Sampling:
        """The options of ``body``; raises :class:`InvalidRequestError` (E5010) naming every bad field.

        ``judged`` is the output budget the guard judged (``GuardResult.output_tokens``): the field vLLM would use,
        read as vLLM reads it (``"16"`` is 16), or the default when the request sends none.
        """
        problems: list[tuple[str, str]] = []
        # A chat's max_completion_tokens comes before its max_tokens; a completion has only max_tokens.
        fields = ("max_completion_tokens", "max_tokens") if "messages" in body else ("max_tokens",)
        sent = [body[name] for name in fields if body.get(name) is not None]
        if judged is None:
            judged = sent[0] if sent and type(sent[0]) is int else DEFAULT_MAX_TOKENS
        temperature = body.get("temperature", 1.0)
        if temperature is None:
            temperature = 1.0
        if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
            problems.append(("temperature", f"temperature must be a number from 0 to 2, got {temperature!r:.40}"))
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            problems.append(("seed", f"seed must be an integer, got {seed!r:.40}"))
        elif seed is not None and seed < _LEAST_SEED:
            problems.append(("seed", f"seed must be an integer of at least {_LEAST_SEED}, got {seed}"))
        elif seed is not None and seed < 0:
            # vLLM takes any 64-bit seed, numpy's generators none below 0: its 64-bit two's complement samples alike.
            seed %= 2**64
        stream = body.get("stream", False)
        if not isinstance(stream, bool) and stream is not None:
            problems.append(("stream", f"stream must be true or false, got {stream!r:.40}"))
        options = body.get("stream_options") or {}
        if not isinstance(options, dict):
            problems.append(("stream_options", f"stream_options must be an object, got {options!r:.40}"))
            options = {}
        elif options and stream is not True:
            problems.append((
                "stream_options",
                f"stream_options is for streamed responses (as vLLM refuses it without stream: true), got "
                f"{options!r:.40}",
            ))  # fmt: skip
        include = options.get("include_usage")
        if include is not None and not isinstance(include, bool):
            shown = f"stream_options.include_usage must be true or false, got {include!r:.40}"
            problems.append(("stream_options", shown))
        if body.get("n", 1) not in (1, None):
            problems.append(("n", f"n must be 1 (these models write one choice per prompt), got {body['n']!r:.40}"))
        problems += _unsupported(body)
        problems += _unreadable_parts(body)
        if problems:
            raise InvalidRequestError(
                "; ".join(message for _, message in problems) + ": fix the request body", param=problems[0][0]
            )
        return cls(
            max_tokens=judged,
            explicit=bool(sent),
            temperature=float(temperature),
            seed=seed,
            stream=bool(stream),
            include_usage=bool(options.get("include_usage", False)),
        )


def usage(result: GuardResult | None, completion_tokens: int) -> dict[str, int]:
    """``usage``: prompt tokens as the guard counted them (the model's tokenizer and chat template), completion
    tokens as the model counted what it generated."""
    prompt_tokens = result.input_tokens if result is not None else 0
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


@dataclass(frozen=True)
class Envelope:
    """What every body and chunk of one response shares."""

    id: str
    object: str
    model: str
    fingerprint: str
    created: int

    @classmethod
    def new(cls, kind: str, model: str, fingerprint: str) -> Envelope:
        prefix = "chatcmpl" if kind.startswith("chat") else "cmpl"
        return cls(f"{prefix}-{uuid.uuid4().hex[:24]}", kind, model, fingerprint, int(time.time()))

    def body(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.fingerprint,
            "choices": choices,
            **extra,
        }


def completion_choice(index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}


def chat_choice(text: str, finish_reason: str) -> dict[str, Any]:
    return {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "logprobs": None,
        "finish_reason": finish_reason,
    }


def chat_delta(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def event(data: Mapping[str, Any] | str) -> bytes:
    """One server-sent event: ``data: <json>`` and a blank line."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode()


DONE = event("[DONE]")


def model_card(name: str, numpy_version: str | None, created: int, limits: Reading) -> dict[str, Any]:
    """One entry of ``/v1/models``: OpenAI's fields plus the numpy the model's worker imported, its window
    (``max_model_len``, as vLLM names it) and output cap; no host paths."""
    return {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": OWNER,
        "max_model_len": limits.guard.context_window,
        "max_output_tokens": limits.max_output_tokens,
        "numpy": numpy_version,
    }
