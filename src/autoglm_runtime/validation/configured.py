"""GuardSettings and EnvValidationMiddleware: the guards for servers that build a middleware from its class alone.

vLLM's ``--middleware pkg.Class`` (and any ``app.add_middleware(Class)``) instantiates the class with the app and
nothing else. :class:`EnvValidationMiddleware` reads its settings from the TOML or JSON file named by the
``AUTOGLM_VALIDATION_CONFIG`` environment variable::

    # guard.toml
    context_window = 8192
    tokenizer = "/models/llm/tokenizer.json"
    chat_template = "/models/llm/tokenizer_config.json"
    error_style = "openai"

    AUTOGLM_VALIDATION_CONFIG=guard.toml vllm serve /models/llm \\
        --middleware autoglm_runtime.validation.configured.EnvValidationMiddleware

Every key of the file is optional except ``context_window`` when a ``tokenizer`` is given; unknown keys, values
of the wrong type and values out of range are all reported together (E0001), naming the file, when the server
builds its middleware (built at the ASGI lifespan's start-up, as FastAPI does, the middleware fails that start-up
with the error: see :class:`EnvValidationMiddleware`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from autoglm_runtime.errors import UsageError
from autoglm_runtime.validation._openai import OpenAIExtractor
from autoglm_runtime.validation.asgi import ASGIApp, ValidationMiddleware
from autoglm_runtime.validation.chat_template import ChatTemplate
from autoglm_runtime.validation.context_window import ContextWindowGuard
from autoglm_runtime.validation.headers import HeaderTokenGuard
from autoglm_runtime.validation.http_errors import ErrorStyle
from autoglm_runtime.validation.limits import TruncationSide
from autoglm_runtime.validation.tokenizers import HFTokenizer

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["CONFIG_ENV_VAR", "EnvValidationMiddleware", "GuardSettings"]

#: The environment variable naming the settings file of :class:`EnvValidationMiddleware`.
CONFIG_ENV_VAR = "AUTOGLM_VALIDATION_CONFIG"


@dataclass(frozen=True)
class GuardSettings:
    """Everything a :class:`ValidationMiddleware` can be configured with, as plain values from a file.

    >>> GuardSettings.from_mapping({"max_body_bytes": 1024}).max_body_bytes
    1024
    """

    context_window: int | None = None
    tokenizer: str | None = None
    chat_template: str | None = None
    truncate_on_overflow: bool = False
    truncation_side: TruncationSide = "left"
    default_output_tokens: int = 0
    message_tokens: int = 4
    max_body_bytes: int = 4 * 1024 * 1024
    paths: tuple[str, ...] | None = ("/v1/completions", "/v1/chat/completions", "/v1/embeddings")
    embedding_paths: tuple[str, ...] = ("/v1/embeddings",)
    require_input: bool = False
    max_concurrent_checks: int = 4
    retry_after: int = 1
    body_timeout: float | None = 30.0
    error_style: ErrorStyle = "autoglm"
    max_header_length: int = 512
    guarded_headers: tuple[str, ...] = ("authorization",)
    max_prompts: int = 2048
    max_messages: int = 4096
    max_parts: int = 8192
    roles: tuple[str, ...] | None = None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, source: str = "the settings") -> GuardSettings:
        """Settings from parsed TOML/JSON; every unknown key, wrongly typed value and value out of range is reported
        at once, in one :class:`~autoglm_runtime.errors.UsageError` naming ``source``."""
        known = {f.name: f for f in fields(cls)}
        problems = [f"unknown key {key!r}" for key in values if key not in known]
        kwargs: dict[str, Any] = {}
        for key, raw in values.items():
            if key not in known:
                continue
            value = tuple(raw) if isinstance(raw, list) else raw
            if not _valid(key, value):
                problems.append(f"{key!r} cannot be {value!r:.60}")
                continue
            bound = _BOUNDS.get(key)
            if bound is not None and value is not None and not bound[0](value):
                problems.append(f"{key!r} {bound[1]}, got {value!r:.60}")
                continue
            kwargs[key] = value
        # Judged on what the file gives, so that a value refused above is not also reported as absent.
        if values.get("tokenizer") is not None and values.get("context_window") is None:
            problems.append("'tokenizer' needs 'context_window'")
        if values.get("tokenizer") is None:
            # Without a tokenizer no context guard is built: these would be silently ignored.
            problems.extend(
                f"{key!r} needs 'tokenizer' (no tokens can be counted without one)"
                for key in ("context_window", "chat_template", "truncate_on_overflow")
                if values.get(key) not in (None, False)
            )
        if problems:
            raise UsageError(f"{source} are not valid: {'; '.join(problems)}: fix them (see docs/validation.md)")
        return cls(**kwargs)

    @classmethod
    def from_file(cls, path: str | Path) -> GuardSettings:
        """Settings from a ``.toml`` or ``.json`` file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            values = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read the guard settings file {str(path)!r}: {exc}") from exc
        if not isinstance(values, dict):
            raise UsageError(f"the guard settings file {str(path)!r} must hold a table of settings")
        return cls.from_mapping(values, source=f"the guard settings in {str(path)!r}")

    def middleware(self, app: ASGIApp) -> ValidationMiddleware:
        """A :class:`ValidationMiddleware` around ``app`` with these settings."""
        return ValidationMiddleware(app, **self.middleware_options())

    def middleware_options(self, *, source: str = "the guard settings") -> dict[str, Any]:
        """The keyword arguments of :class:`ValidationMiddleware` these settings stand for (files are loaded).

        A tokenizer and a chat template that cannot be loaded are both named, in one
        :class:`~autoglm_runtime.errors.UsageError` naming ``source``."""
        guard = None
        if self.tokenizer is not None:
            assert self.context_window is not None
            tokenizer, template = self._files(source)
            guard = ContextWindowGuard(
                tokenizer,
                self.context_window,
                truncate_on_overflow=self.truncate_on_overflow,
                truncation_side=self.truncation_side,
                default_output_tokens=self.default_output_tokens,
                message_tokens=self.message_tokens,
                chat_template=template,
            )
        return {
            "context_guard": guard,
            "header_guard": HeaderTokenGuard(self.max_header_length, self.guarded_headers),
            "extractor": OpenAIExtractor(
                max_prompts=self.max_prompts,
                max_messages=self.max_messages,
                max_parts=self.max_parts,
                roles=self.roles,
            ),
            "max_body_bytes": self.max_body_bytes,
            "paths": self.paths,
            "embedding_paths": self.embedding_paths,
            "require_input": self.require_input,
            "max_concurrent_checks": self.max_concurrent_checks,
            "retry_after": self.retry_after,
            "body_timeout": self.body_timeout,
            "error_style": self.error_style,
        }

    def _files(self, source: str) -> tuple[HFTokenizer, ChatTemplate | None]:
        """The tokenizer and chat template the settings name, or one error naming every file that failed."""
        assert self.tokenizer is not None
        problems: list[str] = []
        tokenizer = template = None
        try:
            tokenizer = HFTokenizer.from_file(self.tokenizer)
        except UsageError as exc:
            problems.append(f"'tokenizer': {exc.message}")
        if self.chat_template:
            try:
                template = ChatTemplate.from_file(self.chat_template)
            except UsageError as exc:
                problems.append(f"'chat_template': {exc.message}")
        if problems or tokenizer is None:
            raise UsageError(f"{source} name files that cannot be used: {'; '.join(problems)}")
        return tokenizer, template


#: What a value of the right type must also be, as the part it configures requires (the part refuses the same
#: values, one at a time: a settings file is judged whole). ``None`` (a JSON null) passes wherever it is allowed.
_BOUNDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "context_window": (lambda v: v >= 1, "must be at least 1 token"),
    "truncation_side": (lambda v: v in ("left", "right"), "must be 'left' or 'right'"),
    "default_output_tokens": (lambda v: v >= 0, "must not be negative"),
    "message_tokens": (lambda v: v >= 0, "must not be negative"),
    "max_body_bytes": (lambda v: v >= 1, "must be at least 1"),
    "max_concurrent_checks": (lambda v: v >= 1, "must be at least 1"),
    "retry_after": (lambda v: v >= 0, "must not be negative"),
    "body_timeout": (lambda v: v > 0, "must be positive"),
    "error_style": (lambda v: v in ("autoglm", "openai"), "must be 'autoglm' or 'openai'"),
    "max_header_length": (lambda v: v >= 1, "must be at least 1"),
    "guarded_headers": (lambda v: len(v) >= 1, "must name at least one header"),
    "max_prompts": (lambda v: v >= 1, "must be at least 1"),
    "max_messages": (lambda v: v >= 1, "must be at least 1"),
    "max_parts": (lambda v: v >= 1, "must be at least 1"),
    "roles": (lambda v: len(v) >= 1, "must name at least one role"),
}

_OPTIONAL_TEXT = frozenset({"tokenizer", "chat_template"})
_TEXT_LISTS = frozenset({"paths", "embedding_paths", "guarded_headers", "roles"})
#: Lists a JSON null may stand for: every path guarded, any role taken.
_OPEN_LISTS = frozenset({"paths", "roles"})


def _valid(key: str, value: Any) -> bool:
    if key in _OPTIONAL_TEXT:
        return value is None or isinstance(value, str)
    if key in _TEXT_LISTS:
        return (value is None and key in _OPEN_LISTS) or (
            isinstance(value, tuple) and all(isinstance(item, str) for item in value)
        )
    if key == "body_timeout":
        return value is None or (isinstance(value, int | float) and not isinstance(value, bool))
    if key == "context_window":
        return type(value) is int
    return type(value) is type(getattr(GuardSettings, key))


class EnvValidationMiddleware(ValidationMiddleware):
    """A :class:`ValidationMiddleware` built from the app alone, configured by the file ``$AUTOGLM_VALIDATION_CONFIG``.

    For vLLM's ``--middleware`` and ``app.add_middleware(EnvValidationMiddleware)``; it is pure ASGI like its base.
    Settings it cannot use raise :class:`UsageError` (E0001), except when the middleware is built inside a running
    event loop: Starlette and FastAPI build their middleware there, at the lifespan's start-up, where uvicorn's
    default lifespan mode would take the error for an app without lifespan support and serve a 500 for every
    request. There the middleware fails the lifespan's start-up with the error, so the server stops at once with
    it in its log; without a lifespan, it answers every request with 500 (E0001) and logs the error once.
    """

    def __init__(self, app: ASGIApp) -> None:
        try:
            path = os.environ.get(CONFIG_ENV_VAR)
            if not path:
                raise UsageError(
                    f"EnvValidationMiddleware reads its settings from the file named by {CONFIG_ENV_VAR}, which is "
                    "not set: set it to a TOML or JSON settings file (see docs/validation.md)"
                )
            options = GuardSettings.from_file(path).middleware_options(source=f"the guard settings in {path!r}")
        except UsageError as exc:
            self._refuse(app, exc)
            return
        super().__init__(app, **options)
