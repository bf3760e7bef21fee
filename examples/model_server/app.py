"""The example model server's ASGI app: all three parts of autoglm-runtime, wired as a real server would.

- ``/v1/chat/completions`` and ``/v1/completions`` (batch prompts: one choice per prompt), both also with
  ``stream: true`` as server-sent events, answer in OpenAI's format with ``usage``. Each is judged by the guards
  of the model it names (``guards.py``): the Authorization header's length (E0512, 431) before anything parses
  the request, then the prompt, rendered with the model's own chat template, against that model's limits read
  live from the config (``limits/<model>/context_window`` and ``.../truncate_on_overflow``; E0513, or truncation
  said in the ``x-autoglm-truncated-tokens`` header); ``.../max_output_tokens`` caps ``max_tokens`` (E5010);
  ``.../tokens_per_second`` paces streamed responses.
- ``/v1/models`` and ``/v1/models/{id}`` list the models in OpenAI's shape, with the numpy each one imported:
  two small n-gram models on numpy 1.26 and numpy 2, which cannot share a process, each in its own environment
  and worker (:class:`ModelLoader`).
- ``/metrics`` is the Prometheus exposition: guard, model-call, config and worker metrics (docs/operations.md).
- ``/health`` reports config connection and staleness, each model's limits (``rejected_limits``: the config keys
  whose value is refused now, each with why, while the last good value stays in force), its workers' state and how
  it is served (``serving``: replicas, concurrency, max_inflight, max_queue from its ``model.toml``; 503 when
  degraded: the config is not following ZooKeeper -- disconnected, or still serving the snapshot a start during
  an outage served -- or a worker is not ready). Unknown paths and methods answer in OpenAI's error shape (404,
  405), as do unknown models (404 ``model_not_found``).

A route is one entry of ``routes`` in :func:`create_app`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from autoglm_runtime import ConfigClient
from autoglm_runtime.errors import AutoGLMRuntimeError, InvalidRequestError, UsageError
from autoglm_runtime.isolation import LoadedModel, ModelLoader
from autoglm_runtime.observability import ConfigMetrics, ModelMetrics
from autoglm_runtime.validation import (
    ChatTemplate,
    ContextWindowGuard,
    GuardResult,
    HeaderTokenGuard,
    Tokenizer,
    ValidationMiddleware,
)
from examples.model_server import generation
from examples.model_server.guards import PerModelGuards
from examples.model_server.model_limits import ModelLimits
from examples.model_server.openai_api import (
    DEFAULT_MAX_TOKENS,
    Envelope,
    Sampling,
    chat_choice,
    completion_choice,
    error_response,
    model_card,
    model_not_found,
    usage,
)

GUARDED = ("/v1/completions", "/v1/chat/completions")


def numpy_version(model: LoadedModel) -> str | None:
    """The numpy the model's worker imported, from its handshake (the version only, never the path)."""
    found = model.versions.get("numpy")
    return found["version"] if found else None


def _required(body: Mapping[str, Any], field: str, what: str) -> None:
    if body.get(field) is None:
        raise InvalidRequestError(f"the request has no {field!r}: send {what}", param=field)


class _Handlers:
    """The endpoints; one instance per app."""

    def __init__(
        self,
        config: ConfigClient,
        loader: ModelLoader,
        tokenizer: Tokenizer,
        limits: Mapping[str, ModelLimits],
        call_timeout: float,
        *,
        vocabulary: int | None,
    ) -> None:
        self.config = config
        self.loader = loader
        self.tokenizer = tokenizer
        self.vocabulary = vocabulary
        self.limits = limits
        self.call_timeout = call_timeout
        self.created = int(time.time())

    def _model(self, body: Mapping[str, Any]) -> LoadedModel:
        return self.loader.models[body["model"]]  # the per-model guard let only served models through

    def _capped(self, name: str, sampling: Sampling) -> Sampling:
        """``sampling`` within the model's output cap: a default budget is lowered to it, a larger one asked
        for is refused."""
        limits = self.limits[name]
        cap = limits.current().max_output_tokens
        if sampling.max_tokens <= cap:
            return sampling
        if not sampling.explicit:
            return dataclasses.replace(sampling, max_tokens=cap)
        limits.refuse_over_cap(sampling.max_tokens)
        return sampling  # the cap was raised meanwhile

    def _run(self, model: LoadedModel, sampling: Sampling, envelope: Envelope) -> generation.Run:
        """The request on ``model``, under the response's id, its stream paced by the model's live setting."""
        pace = self.limits[model.name].tokens_per_second
        return generation.Run(model, sampling, envelope.id, self.call_timeout, pace)

    @staticmethod
    def _judged(request: Request) -> GuardResult | None:
        result: GuardResult | None = getattr(request.state, "guard_result", None)
        return result

    async def completions(self, request: Request) -> Response:
        body = await request.json()  # the middleware decoded and judged it already
        try:
            _required(body, "prompt", "a prompt: a string, a list of strings, or token ids")
            result = self._judged(request)
            sampling = self._capped(body["model"], Sampling.from_body(body, result.output_tokens if result else None))
            prompts = self._prompts(body["prompt"], result)
            model = self._model(body)
            envelope = Envelope.new("text_completion", model.name, f"numpy-{numpy_version(model)}")
            run = self._run(model, sampling, envelope)
            if sampling.stream:
                first = await generation.started(run, prompts[0], run.prompt_id(0, len(prompts)))
                events = generation.completion_events(run, prompts, first, envelope=envelope, result=result)
                return StreamingResponse(events, media_type="text/event-stream")
            answers = [
                await generation.model_complete(run, prompt, run.prompt_id(index, len(prompts)))
                for index, prompt in enumerate(prompts)
            ]
        except AutoGLMRuntimeError as exc:
            return error_response(exc)
        choices = [completion_choice(i, a.text, a.finish_reason) for i, a in enumerate(answers)]
        return JSONResponse(envelope.body(choices, usage=usage(result, sum(a.tokens for a in answers))))

    def _prompts(self, sent: Any, result: GuardResult | None) -> list[str]:
        """Each prompt as the guard let it through (truncated if it truncated), token ids decoded."""
        if sent == []:
            raise InvalidRequestError("prompt is an empty list: send at least one prompt", param="prompt")
        if result is None:  # the guard judges every body with a prompt
            raise InvalidRequestError("the request has no prompt to complete: send a prompt", param="prompt")
        pieces = [one.segments[0] for one in result.batch] if result.batch else [result.segments[0]]
        for index, piece in enumerate(pieces):
            if isinstance(piece, str) or self.vocabulary is None:
                continue
            bad = next((token for token in piece if not 0 <= token < self.vocabulary), None)
            if bad is not None:  # a decode would drop it, or fail on a negative one
                param = f"prompt[{index}]" if result.batch else "prompt"
                raise InvalidRequestError(
                    f"{param} holds token id {bad}, which the models' tokenizer does not have (its ids are 0 to "
                    f"{self.vocabulary - 1}): send ids of its vocabulary, or the text",
                    param=param,
                )
        return [piece if isinstance(piece, str) else self.tokenizer.decode(piece) for piece in pieces]

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        try:
            _required(body, "messages", "the conversation as a list of messages")
            result = self._judged(request)
            if result is None or result.prompt is None or not body["messages"]:
                raise InvalidRequestError("messages is empty: send at least one message", param="messages")
            sampling = self._capped(body["model"], Sampling.from_body(body, result.output_tokens))
            model = self._model(body)
            envelope = Envelope.new("chat.completion", model.name, f"numpy-{numpy_version(model)}")
            run = self._run(model, sampling, envelope)
            if sampling.stream:
                first = await generation.started(run, result.prompt, run.request_id)
                chunks = Envelope(envelope.id, "chat.completion.chunk", model.name, envelope.fingerprint,
                                  envelope.created)  # fmt: skip
                events = generation.chat_events(first, envelope=chunks, sampling=sampling, result=result)
                return StreamingResponse(events, media_type="text/event-stream")
            answer = await generation.model_complete(run, result.prompt, run.request_id)
        except AutoGLMRuntimeError as exc:
            return error_response(exc)
        return JSONResponse(
            envelope.body([chat_choice(answer.text, answer.finish_reason)], usage=usage(result, answer.tokens))
        )

    def _card(self, name: str, model: LoadedModel) -> dict[str, Any]:
        return model_card(name, numpy_version(model), self.created, self.limits[name].current())

    async def models(self, _: Request) -> JSONResponse:
        cards = [self._card(name, model) for name, model in sorted(self.loader.models.items())]
        return JSONResponse({"object": "list", "data": cards})

    async def model(self, request: Request) -> JSONResponse:
        name = request.path_params["model"]
        model = self.loader.models.get(name)
        if model is None:
            return model_not_found(name, list(self.loader.models))
        return JSONResponse(self._card(name, model))

    async def health(self, _: Request) -> JSONResponse:
        config_health = self.config.health()  # a ConfigHealth dict, JSON-ready as is
        workers = self.loader.health()
        # Not "connected": a server that started on its snapshot is connected before the tree is loaded.
        healthy = config_health["following"] and all(w["state"] == "ready" for w in workers.values())
        limits = {name: source.current().as_dict() for name, source in sorted(self.limits.items())}
        # Values refused now (the last good one in force), by config key: until now only a WARNING line said so.
        rejected = {key: why for source in self.limits.values() for key, why in source.rejected().items()}
        # Each worker's health, and how the model is served: the [serving] table of its model.toml.
        models = {
            name: {**workers[name], "serving": dataclasses.asdict(model.serving)}
            for name, model in sorted(self.loader.models.items())
            if name in workers
        }
        payload = {"status": "ok" if healthy else "degraded", "config": config_health, "limits": limits,
                   "rejected_limits": dict(sorted(rejected.items())), "models": models}  # fmt: skip
        return JSONResponse(payload, status_code=200 if healthy else 503)


async def _http_error(request: Request, exc: Exception) -> Response:
    """404 and 405 in OpenAI's error shape (Starlette answers them in plain text)."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        problem = UsageError(f"{request.method} is not allowed on {request.url.path}: use {allowed}")
    else:
        served = ", ".join(sorted({route.path for route in request.app.routes if isinstance(route, Route)}))
        problem = UsageError(
            f"there is no endpoint at {request.method} {request.url.path}: the server answers {served}"
        )
    response = error_response(problem, status=exc.status_code)
    response.headers.update(exc.headers or {})
    return response


def create_app(
    *,
    config: ConfigClient,
    loader: ModelLoader,
    tokenizer: Tokenizer,
    templates: Mapping[str, ChatTemplate],
    call_timeout: float = 10.0,
    max_header_length: int = 512,
    limits: Mapping[str, ModelLimits] | None = None,
    vocabulary: int | None = None,
) -> ValidationMiddleware:
    """The server's ASGI app; ``config`` is started and ``loader`` has its models loaded by the caller.

    ``templates`` holds each model's chat template (its ``tokenizer_config.json``); all models count tokens with
    ``tokenizer``, whose ids are ``0`` to ``vocabulary - 1`` (token-id prompts outside are refused when given).
    Run it with ASGI lifespan on: shutdown stops the guards' threads. ``limits``: each model's live limits, when
    the caller reads them too (the banner); else made here.
    """
    names = sorted(loader.models)
    limits = dict(limits) if limits is not None else {name: ModelLimits(config, name) for name in names}
    handlers = _Handlers(config, loader, tokenizer, limits, call_timeout, vocabulary=vocabulary)
    model_guards: dict[str, ValidationMiddleware] = {}

    # Read at each scrape, on prometheus_client's default registry (one app per process, as __main__ makes).
    ConfigMetrics(config).start()
    ModelMetrics(loader).start()

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        for guard in model_guards.values():
            guard.stop()

    app = Starlette(
        routes=[
            Route("/v1/completions", handlers.completions, methods=["POST"]),
            Route("/v1/chat/completions", handlers.chat, methods=["POST"]),
            Route("/v1/models", handlers.models, methods=["GET"]),
            Route("/v1/models/{model:path}", handlers.model, methods=["GET"]),
            Route("/health", handlers.health, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        exception_handlers={404: _http_error, 405: _http_error},
        lifespan=lifespan,
    )
    for name in names:
        guard = ContextWindowGuard(
            tokenizer, limits[name].guard, chat_template=templates[name], default_output_tokens=DEFAULT_MAX_TOKENS
        )
        model_guards[name] = ValidationMiddleware(
            app, context_guard=guard, header_guard=None, paths=GUARDED, error_style="openai"
        )
    # The outer middleware checks headers, body size and shape for every request, before any model is chosen.
    return ValidationMiddleware(
        PerModelGuards(app, model_guards, GUARDED, limits),
        header_guard=HeaderTokenGuard(max_length=max_header_length),
        paths=GUARDED,
        error_style="openai",
    )
