"""The text the example server prints once its port serves: where it listens, and a walk-through that works.

Every step says what it shows and the status it gets; the numbers come from the server's own tokenizer
and limits, so the text stays true when either changes (``integration/example/test_serve.py`` runs the
printed commands and checks every claim).
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass

from autoglm_runtime.validation import ContextWindowGuard, Limits, Tokenizer
from examples.model_server.app import DEFAULT_LIMITS, LIMITS_PREFIX
from examples.model_server.store import ConfigStore

#: The prompt of the hot-reload steps: a sentence of the tokenizer's corpus, so it counts in few tokens.
PROMPT = "The model server reads its configuration from ZooKeeper and keeps a local copy in sync."
SHORT_PROMPT = "hello there world"
MAX_TOKENS = 8
HEADER_LENGTH = 600  # over the server's 512-byte limit for one header value


@dataclass(frozen=True)
class Walkthrough:
    """The numbers the hot-reload steps rest on."""

    prompt_tokens: int
    lowered_window: int
    truncated_tokens: int

    @classmethod
    def for_tokenizer(cls, tokenizer: Tokenizer) -> Walkthrough:
        """Pick a lowered window the prompt no longer fits but a truncated prompt still can, and ask the
        server's own guard how many tokens truncation then removes."""
        tokens = len(tokenizer.encode(PROMPT))
        if tokens + MAX_TOKENS > DEFAULT_LIMITS.context_window:
            raise ValueError(
                f"the walk-through prompt needs {tokens + MAX_TOKENS} tokens, more than the default window of "
                f"{DEFAULT_LIMITS.context_window}: choose a shorter prompt or a larger default"
            )
        lowered = MAX_TOKENS + (tokens + 1) // 2
        guard = ContextWindowGuard(tokenizer, lowered, truncate_on_overflow=True)
        # A rehearsal, not a request: the guard's E0514 warning would read as if a client had been truncated.
        quiet = logging.getLogger("autoglm_runtime.validation.context_window")
        level, quiet.disabled = quiet.disabled, True
        try:
            removed = guard.check(PROMPT, max_output_tokens=MAX_TOKENS).removed_tokens
        finally:
            quiet.disabled = level
        return cls(tokens, lowered, removed)


def _curl(url: str, model: str, prompt: str) -> str:
    body = f'{{"model": "{model}", "prompt": "{prompt}", "max_tokens": {MAX_TOKENS}}}'
    return f"curl -si {url}/v1/completions -H 'content-type: application/json' -d {shlex.quote(body)}"


def _config_set(cli: str, store: ConfigStore, root: str, key: str, value: str) -> str:
    return (
        f"{shlex.quote(cli)} config set {LIMITS_PREFIX}{key} {value} --hosts {shlex.quote(store.hosts)} --root {root}"
    )


def _limits(limits: Limits) -> str:
    return f"context_window={limits.context_window} truncate_on_overflow={str(limits.truncate_on_overflow).lower()}"


def render(
    *,
    url: str,
    store: ConfigStore,
    root: str,
    limits: Limits,
    models: str,
    environments: str,
    walkthrough: Walkthrough,
    cli: str,
) -> str:
    """The banner: where the server listens, the config and limits in force, and the walk-through."""
    default_window = DEFAULT_LIMITS.context_window
    total = walkthrough.prompt_tokens + MAX_TOKENS
    lowered = walkthrough.lowered_window
    reset_defaults = [
        _config_set(cli, store, root, "context_window", str(default_window)),
        _config_set(cli, store, root, "truncate_on_overflow", "false"),
    ]
    lines = [
        "",
        f"autoglm-runtime example model server listening on {url}",
        f"config: {store.description}: {store.hosts} root {root}",
        f"limits in force: {_limits(limits)} (kept in {store.data} across restarts; --reset starts from "
        f"{_limits(DEFAULT_LIMITS)})",
        f"models: {models}",
        f"environments: {environments}",
        "",
        "Try it (in another shell; each step's expected status is in brackets):",
        "",
    ]
    if limits != DEFAULT_LIMITS:
        lines += [
            "  # the limits in force are not the defaults the steps below start from: put the defaults back",
            "  # (or restart with --reset)",
            *(f"  {command}" for command in reset_defaults),
            "",
        ]
    lines += [
        "  # two models with conflicting requirements answer side by side [200, conflictlib 1.0 and 2.0]",
        f"  {_curl(url, 'summarizer-v1', SHORT_PROMPT)}",
        f"  {_curl(url, 'summarizer-v2', SHORT_PROMPT)}",
        "",
        f"  # hot reload: a prompt of {walkthrough.prompt_tokens} tokens plus max_tokens {MAX_TOKENS} fits the context "
        f"window of {default_window} [200]",
        f"  {_curl(url, 'summarizer-v1', PROMPT)}",
        f"  # ... lower the window to {lowered} in the config; within a second the next request is judged by it",
        f"  # [400, E0513: {total} tokens, more than the context window of {lowered}]",
        f"  {_config_set(cli, store, root, 'context_window', str(lowered))}",
        f"  {_curl(url, 'summarizer-v1', PROMPT)}",
        "  # ... or let it truncate, and the response says so [200, x-autoglm-truncated-tokens: "
        f"{walkthrough.truncated_tokens}]",
        f"  {_config_set(cli, store, root, 'truncate_on_overflow', 'true')}",
        f"  {_curl(url, 'summarizer-v1', PROMPT)}",
        "  # ... and back to the defaults",
        *(f"  {command}" for command in reset_defaults),
        "",
        "  # an overlong Authorization header is refused before parsing [431, E0512]",
        f"  curl -si {url}/v1/completions -H \"Authorization: Bearer $(printf 'x%.0s' $(seq {HEADER_LENGTH}))\" "
        "-d '{}'",
        "",
        "  # config connection, staleness, limits and each worker's state [200]",
        f"  curl -si {url}/health",
        "",
    ]
    return "\n".join(lines)
