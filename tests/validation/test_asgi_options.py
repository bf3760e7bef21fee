"""What the middleware says of its options when it is built: old extractors keep working, unguarded embedding paths
are named."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from tests.validation._helpers import char_tok
from tests.validation.test_embeddings import echo, error, post

from autoglm_runtime.validation import (
    ContextWindowGuard,
    EnvValidationMiddleware,
    ExtractedInput,
    OpenAIExtractor,
    ValidationMiddleware,
)

PATHS = ("/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/embed")
ROUTES = [Route(path, echo, methods=["POST"]) for path in PATHS]
LOGGER = "autoglm_runtime.validation"


class OldExtractor(OpenAIExtractor):
    """A subclass written for the extractor before embeddings: its override takes no ``embedding``."""

    def extract(self, body: Any, *, max_text_chars: int | None = None) -> ExtractedInput:  # type: ignore[override]
        return super().extract(body, max_text_chars=max_text_chars)


class PassingExtractor(OpenAIExtractor):
    def extract(self, body: Any, **options: Any) -> ExtractedInput:
        return super().extract(body, **options)


def middleware(**options: Any) -> ValidationMiddleware:
    guard = ContextWindowGuard(char_tok(), 10, message_tokens=0)
    return ValidationMiddleware(Starlette(routes=ROUTES), context_guard=guard, **options)


def warnings(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, Any]]:
    return [(r.levelname, r.getMessage(), getattr(r, "error_code", None)) for r in caplog.records]


OLD_WARNING = (
    "the extractor tests.validation.test_asgi_options.OldExtractor has an extract() without the embedding argument, "
    "so it cannot read an embeddings body: bodies on /v1/embeddings are checked for size and JSON only, never "
    "counted; give extract() an 'embedding: bool = False' argument and pass it on to OpenAIExtractor.extract, or "
    "leave it out of paths"
)


def test_an_extractor_overridden_without_embedding_still_guards_completions_and_chats(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Before: every guarded request called extract(..., embedding=...), a TypeError in such an override: a 500 on
    # /v1/completions and /v1/chat/completions, which it had guarded.
    with caplog.at_level(logging.WARNING, LOGGER):
        guarded = middleware(extractor=OldExtractor())
    assert warnings(caplog) == [("WARNING", OLD_WARNING, "E0001")]
    fits = post(guarded, {"prompt": "abc", "max_tokens": 2}, "/v1/completions")
    assert (fits.status_code, fits.json()["input_tokens"]) == (200, 3)
    assert error(post(guarded, {"prompt": "x" * 9, "max_tokens": 2}, "/v1/completions"))[:3] == (400, "E0513", "prompt")
    chat = {"messages": [{"role": "user", "content": "x" * 12}]}
    assert error(post(guarded, chat, "/v1/chat/completions"))[:3] == (400, "E0513", "messages")


def test_its_embeddings_bodies_are_checked_for_size_and_json_only() -> None:
    guarded = middleware(extractor=OldExtractor(), require_input=True, max_body_bytes=100)
    # Not counted (it cannot read them), not refused for lacking a prompt: forwarded as before embeddings were judged.
    long = post(guarded, {"input": "x" * 50})
    assert (long.status_code, long.json()["input_tokens"]) == (200, None)
    assert post(guarded, {"input": "x" * 200}).status_code == 413
    assert error(post(guarded, {"model": "m"}, "/v1/completions"))[:2] == (400, "E5010")  # require_input elsewhere


def test_an_extractor_that_takes_embedding_is_handed_it_and_nothing_is_said(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, LOGGER):
        apps = [middleware(extractor=PassingExtractor()), middleware(extractor=OpenAIExtractor()), middleware()]
    assert warnings(caplog) == []
    for guarded in apps:
        assert error(post(guarded, {"input": ["x", "y" * 11]}))[:3] == (400, "E0513", "input[1]")


def test_an_old_extractor_is_not_warned_of_when_no_embedding_path_is_guarded(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, LOGGER):
        middleware(extractor=OldExtractor(), paths=("/v1/completions",))
        middleware(extractor=OldExtractor(), embedding_paths=())
    assert warnings(caplog) == []


def test_an_embedding_path_paths_does_not_guard_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    # Before: /embed was silently left unguarded, its bodies forwarded unread.
    with caplog.at_level(logging.WARNING, LOGGER):
        guarded = middleware(paths=("/v1/completions",), embedding_paths=("/embed", "/v1/embeddings"))
    assert warnings(caplog) == [
        (
            "WARNING",
            "embedding_paths names /embed, /v1/embeddings, which paths does not guard: bodies there are not judged "
            "at all; add them to paths, or drop them from embedding_paths",
            "E0001",
        )
    ]
    assert post(guarded, {"input": "x" * 50}, "/embed").json()["input_tokens"] is None  # what the warning says


def test_custom_paths_that_leave_out_the_default_embeddings_path_are_not_warned_of(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, LOGGER):
        middleware(paths=("/v1/completions", "/v1/chat/completions"))  # the default embedding_paths
        middleware(paths=None, embedding_paths=("/embed",))  # every path guarded
        partly = middleware(paths=("/embed",), embedding_paths=("/embed",))
    assert warnings(caplog) == []
    assert error(post(partly, {"input": "x" * 11}, "/embed"))[:3] == (400, "E0513", "input")


@pytest.mark.parametrize(
    ("settings", "warned"),
    [
        ({"paths": ["/v1/completions"]}, False),
        ({"paths": ["/v1/completions"], "embedding_paths": ["/embed"]}, True),
        ({"paths": ["/v1/completions", "/embed"], "embedding_paths": ["/embed"]}, False),
    ],
)
def test_the_settings_file_is_held_to_the_same_rule(
    settings: dict[str, Any],
    warned: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "guard.json"
    path.write_text(json.dumps(settings))
    monkeypatch.setenv("AUTOGLM_VALIDATION_CONFIG", str(path))
    with caplog.at_level(logging.WARNING, LOGGER):
        EnvValidationMiddleware(Starlette(routes=ROUTES))
    expected = (
        "embedding_paths names /embed, which paths does not guard: bodies there are not judged at all; add it to "
        "paths, or drop it from embedding_paths"
    )
    assert warnings(caplog) == ([("WARNING", expected, "E0001")] if warned else [])
