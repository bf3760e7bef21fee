"""The checks :class:`~autoglm_runtime.validation.ValidationMiddleware` makes of its options when it is built.

Options it cannot use at all raise :class:`UsageError` (:func:`check_options`). Options it can use but that leave
something the operator asked for undone are said once, as a WARNING with code E0001 (:func:`warn_misconfigured`):
an ``embedding_paths`` entry that ``paths`` does not guard, and an extractor written before ``embedding`` existed,
which cannot read an embeddings body.
"""

from __future__ import annotations

import inspect
from collections.abc import Collection
from typing import Any

from autoglm_runtime.errors import UsageError
from autoglm_runtime.logging import get_logger

__all__ = ["check_options", "reads_embeddings", "takes_keyword", "warn_misconfigured"]

log = get_logger("autoglm_runtime.validation.asgi")

_USAGE = UsageError.code


def check_options(
    max_body_bytes: int, max_concurrent_checks: int, body_timeout: float | None, error_style: str, retry_after: int
) -> None:
    """Raise :class:`UsageError` (E0001) for an option the middleware cannot use."""
    if max_body_bytes < 1:
        raise UsageError(f"max_body_bytes must be at least 1, got {max_body_bytes}")
    if isinstance(max_concurrent_checks, bool) or max_concurrent_checks < 1:
        raise UsageError(f"max_concurrent_checks must be at least 1, got {max_concurrent_checks}")
    if body_timeout is not None and not body_timeout > 0:  # (nan too: it would never time out)
        raise UsageError(f"body_timeout must be positive or None, got {body_timeout}")
    if error_style not in ("autoglm", "openai"):
        raise UsageError(f"error_style must be 'autoglm' or 'openai', got {error_style!r}")
    if isinstance(retry_after, bool) or not isinstance(retry_after, int) or retry_after < 0:
        raise UsageError(f"retry_after must be a whole number of seconds >= 0, got {retry_after!r}")


def takes_keyword(function: Any, name: str) -> bool:
    """Whether ``function`` takes the keyword ``name`` (or any, with ``**kwargs``): an override written for an
    older :class:`OpenAIExtractor` may not. Read off its signature, never by calling it and catching ``TypeError``;
    one whose signature cannot be read is taken at its word."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(
        parameter.kind is inspect.Parameter.VAR_KEYWORD
        or (parameter.name == name and parameter.kind is not inspect.Parameter.POSITIONAL_ONLY)
        for parameter in parameters
    )


def reads_embeddings(extractor: Any) -> bool:
    """Whether ``extractor.extract`` takes the ``embedding`` keyword (an override written for an older
    :class:`OpenAIExtractor`, ``extract(body, *, max_text_chars=None)``, does not)."""
    return takes_keyword(extractor.extract, "embedding")


def warn_misconfigured(
    paths: frozenset[str] | None,
    embedding_paths: frozenset[str],
    default_embedding_paths: Collection[str],
    extractor: Any,
    *,
    reads: bool,
) -> None:
    """Log (WARNING, E0001) what the options leave undone; see the module."""
    # Custom paths that simply leave out the default /v1/embeddings are a choice, not a mistake: only embedding
    # paths set by hand are held to the paths guarded.
    if paths is not None and embedding_paths != frozenset(default_embedding_paths):
        unguarded = sorted(embedding_paths - paths)
        if unguarded:
            log.warning(
                "embedding_paths names %s, which paths does not guard: bodies there are not judged at all; add %s "
                "to paths, or drop %s from embedding_paths",
                ", ".join(unguarded),
                "them" if len(unguarded) > 1 else "it",
                "them" if len(unguarded) > 1 else "it",
                extra={"error_code": _USAGE, "paths": unguarded},
            )
    guarded = sorted(embedding_paths if paths is None else embedding_paths & paths)
    if guarded and not reads:
        name = f"{type(extractor).__module__}.{type(extractor).__qualname__}"
        log.warning(
            "the extractor %s has an extract() without the embedding argument, so it cannot read an embeddings "
            "body: bodies on %s are checked for size and JSON only, never counted; give extract() an "
            "'embedding: bool = False' argument and pass it on to OpenAIExtractor.extract, or leave %s out of paths",
            name,
            ", ".join(guarded),
            "them" if len(guarded) > 1 else "it",
            extra={"error_code": _USAGE, "paths": guarded},
        )
