"""The guards in front of the models: one set for every request, and one per model for the model it names.

Each model has its own tokenizer, chat template and limits (``limits/<model>/...`` in the config), so a request
is judged by the guard of the model it names. The SDK's :class:`ValidationMiddleware` judges a request for one
guard; :class:`PerModelGuards` reads the ``model`` field of a guarded request (already size-, decode- and
shape-checked by the outer middleware) and hands the request to that model's middleware. A body that names no
model is a 400 (E5010), a model that is not served a 404 ``model_not_found``: no model's guard could judge it.
A ``max_tokens`` over the model's output cap is a 400 (E5010) before its guard judges the window.

With tracing on, the two layers make one ``autoglm.guard.check`` span per request: the outer middleware's, which
lasts until the app has answered; the model's middleware records its verdict on it (the request's scope carries
it), and the request's model call is its child.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection, Mapping, MutableMapping
from typing import Any

from autoglm_runtime.errors import InvalidRequestError
from autoglm_runtime.validation import ValidationMiddleware
from autoglm_runtime.validation.asgi import replaying
from examples.model_server.model_limits import ModelLimits
from examples.model_server.openai_api import error_response, model_not_found

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class PerModelGuards:
    """Pure ASGI: each POST to one of ``paths`` goes through ``guards[body["model"]]``; the rest straight to
    ``app``."""

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        guards: Mapping[str, ValidationMiddleware],
        paths: Collection[str],
        limits: Mapping[str, ModelLimits],
    ) -> None:
        self.app = app
        self.guards = dict(guards)
        self.paths = frozenset(paths)
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:  # the outer middleware hands the whole body over, already read and checked
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        parsed = json.loads(body)  # a JSON object: the outer middleware checked both
        name = parsed.get("model")
        if not isinstance(name, str):
            shown = "no model" if name is None else f"a model of type {type(name).__name__}"
            exc = InvalidRequestError(
                f"the request names {shown}: set 'model' to one of {', '.join(sorted(self.guards))}", param="model"
            )
            await error_response(exc)(scope, receive, send)
            return
        guard = self.guards.get(name)
        if guard is None:
            await model_not_found(name, list(self.guards))(scope, receive, send)
            return
        # The output cap before the window: a max_tokens over both is told the cap, never "lower it to at most the
        # window minus the input", which the cap would refuse next. (Other spellings are judged after the guard.)
        fields = ("max_completion_tokens", "max_tokens") if "messages" in parsed else ("max_tokens",)
        asked = next((parsed[field] for field in fields if parsed.get(field) is not None), None)
        if type(asked) is int:
            try:
                self.limits[name].refuse_over_cap(asked)
            except InvalidRequestError as exc:
                await error_response(exc)(scope, receive, send)
                return
        await guard(scope, replaying(body, receive), send)
