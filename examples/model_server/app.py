"""The example model server's ASGI app: all three parts of autoglm-runtime, wired as a real server would.

- ``/v1/completions`` (OpenAI style) is guarded by :class:`ValidationMiddleware`: the Authorization header is
  length-checked before anything parses it (E0512, 431), the prompt is judged against a context window read
  live from ZooKeeper through :class:`ConfigLimits` (E0513, or truncation when configured, said in a header).
- The models run isolated through :class:`ModelLoader`: two models pinned to conflicting versions of
  ``conflictlib`` answer side by side, each from its own environment and worker.
- ``/health`` reports config connection and staleness and each worker's real state (503 when degraded).
- ``/metrics`` is the Prometheus exposition: guard, model-call, config and worker metrics (docs/operations.md).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from autoglm_runtime import ConfigClient
from autoglm_runtime.errors import AutoGLMRuntimeError, UsageError
from autoglm_runtime.isolation import LoadedModel, ModelLoader
from autoglm_runtime.observability import ConfigMetrics, ModelMetrics
from autoglm_runtime.validation import (
    ConfigLimits,
    ContextWindowGuard,
    HeaderTokenGuard,
    Limits,
    Tokenizer,
    ValidationMiddleware,
    error_body,
)

LIMITS_PREFIX = "limits/"
DEFAULT_LIMITS = Limits(context_window=64, truncate_on_overflow=False)


def _error(exc: AutoGLMRuntimeError) -> JSONResponse:
    return JSONResponse(error_body(exc), status_code=exc.http_status, headers={"x-autoglm-error-code": exc.code})


def create_app(
    *,
    config: ConfigClient,
    loader: ModelLoader,
    tokenizer: Tokenizer,
    call_timeout: float = 10.0,
    max_header_length: int = 512,
) -> ValidationMiddleware:
    """The server's ASGI app; ``config`` is started and ``loader`` has its models loaded by the caller."""
    limits = ConfigLimits(config, prefix=LIMITS_PREFIX, defaults=DEFAULT_LIMITS)

    def model_named(name: Any) -> LoadedModel:
        models = loader.models
        if not isinstance(name, str) or name not in models:
            known = ", ".join(sorted(models))
            raise UsageError(f"model {name!r} is not loaded here; choose one of: {known}")
        return models[name]

    async def completions(request: Request) -> JSONResponse:
        body = await request.json()  # the middleware already decoded and judged it
        try:
            model = model_named(body.get("model"))
            max_tokens = body.get("max_tokens", 16)
            answer: Mapping[str, Any] = await run_in_threadpool(
                model.call, "complete", body["prompt"], max_tokens=max_tokens, timeout=call_timeout
            )
        except AutoGLMRuntimeError as exc:
            return _error(exc)
        return JSONResponse(
            {
                "id": f"cmpl-{uuid.uuid4().hex[:12]}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": model.name,
                "choices": [{"index": 0, "text": answer["text"], "finish_reason": "length"}],
                "conflictlib": answer["conflictlib"],
            }
        )

    async def models(_: Request) -> JSONResponse:
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "backend": model.backend, "versions": dict(model.versions)}
                    for name, model in sorted(loader.models.items())
                ],
            }
        )

    async def health(_: Request) -> JSONResponse:
        config_health = config.health()  # a ConfigHealth dict, JSON-ready as is
        workers = loader.health()
        current = limits.current()
        healthy = config_health["connected"] and all(w["state"] == "ready" for w in workers.values())
        payload = {
            "status": "ok" if healthy else "degraded",
            "config": config_health,
            "limits": {
                "context_window": current.context_window,
                "truncate_on_overflow": current.truncate_on_overflow,
            },
            "models": workers,
        }
        return JSONResponse(payload, status_code=200 if healthy else 503)

    # Read at each scrape, on prometheus_client's default registry (one app per process, as __main__ makes).
    ConfigMetrics(config).start()
    ModelMetrics(loader).start()

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app = Starlette(
        routes=[
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ]
    )
    return ValidationMiddleware(
        app,
        context_guard=ContextWindowGuard(tokenizer, limits),
        header_guard=HeaderTokenGuard(max_length=max_header_length),
        paths=("/v1/completions",),
    )
