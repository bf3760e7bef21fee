"""The text the example server prints once its port serves: where it listens, and a walk-through that works.

Every step says what it shows and the status it gets; the numbers come from the server's own tokenizer
and limits, so the text stays true when either changes (``integration/example/test_serve.py`` runs the
printed commands and checks every claim).
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from autoglm_runtime.isolation.workers.serving import ServingOptions
from autoglm_runtime.validation import ChatTemplate, ContextWindowGuard, GuardInput, OpenAIExtractor, Tokenizer
from examples.model_server.model_limits import DEFAULT_LIMITS, DEFAULT_MAX_OUTPUT_TOKENS, Reading, limits_prefix
from examples.model_server.store import ConfigStore

#: The prompt of the hot-reload steps: most of a line of the corpus (so it counts in few tokens), which the
#: models then finish.
PROMPT = "The model server reads its configuration from ZooKeeper and keeps a local copy"
SHORT_PROMPT = "The model server"
QUESTION = "How does the server follow ZooKeeper?"
MAX_TOKENS = 8
HEADER_LENGTH = 600  # over the server's 512-byte limit for one header value
PACE = 4  # tokens a second: slow enough to watch the streamed chat arrive token by token
#: The model whose window the walk-through changes (and which streams the chat), and the one left alone.
RELOADED = "words-numpy1"
OTHER = "chars-numpy2"


def chat_body(stream: bool = True) -> dict[str, Any]:
    """The body of the walk-through's chat request."""
    body: dict[str, Any] = {
        "model": RELOADED,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": MAX_TOKENS,
    }
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return body


@dataclass(frozen=True)
class Walkthrough:
    """The numbers the walk-through's claims rest on."""

    prompt_tokens: int
    lowered_window: int
    truncated_tokens: int
    chat_tokens: int

    @classmethod
    def for_tokenizer(cls, tokenizer: Tokenizer, template: ChatTemplate) -> Walkthrough:
        """Pick a lowered window the prompt no longer fits but a truncated prompt still can, and ask the
        server's own guard how many tokens truncation then removes, and how many the chat request counts with
        ``template`` (the chat model's own)."""
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
        chat: GuardInput = OpenAIExtractor().extract(chat_body()).guard_input()
        judged = ContextWindowGuard(tokenizer, DEFAULT_LIMITS.context_window, chat_template=template).judge(chat)
        return cls(tokens, lowered, removed, judged.input_tokens)


def _curl(url: str, model: str, prompt: str) -> str:
    body = f'{{"model": "{model}", "prompt": "{prompt}", "max_tokens": {MAX_TOKENS}}}'
    return f"curl -si {url}/v1/completions -H 'content-type: application/json' -d {shlex.quote(body)}"


def _config_set(cli: str, store: ConfigStore, root: str, model: str, setting: tuple[str, str]) -> str:
    key, value = setting
    return (
        f"{shlex.quote(cli)} config set {limits_prefix(model)}{key} {shlex.quote(value)} "
        f"--hosts {shlex.quote(store.hosts)} --root {root}"
    )


DEFAULT_READING = Reading(DEFAULT_LIMITS, DEFAULT_MAX_OUTPUT_TOKENS)


def _value(value: Any) -> str:
    """A setting as the config CLI takes it (JSON text): ``true``, ``64``, ``0`` (not ``0.0``), ``0.5``, ``"left"``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return json.dumps(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _limits(limits: Reading) -> str:
    return " ".join(f"{key}={_value(value)}" for key, value in limits.as_dict().items())


def _serving(options: ServingOptions) -> str:
    """How a model is served, as its model.toml's [serving] table says."""
    replicas = f"{options.replicas} replica{'s' if options.replicas != 1 else ''}"
    calls = f"{options.max_inflight} call{'s' if options.max_inflight != 1 else ''} at once"
    each = " each" if options.replicas != 1 else ""
    return f"{replicas} ({options.concurrency}, {calls}{each}), queue {options.max_queue}"


def render(
    *,
    url: str,
    store: ConfigStore,
    root: str,
    limits: Mapping[str, Reading],
    numpy: Mapping[str, str | None],
    serving: Mapping[str, ServingOptions],
    environments: str,
    walkthrough: Walkthrough,
    cli: str,
) -> str:
    """The banner: where the server listens, the config and limits in force, the models with the numpy each
    imported and how each is served (``serving``: its model.toml's [serving] table), and the walk-through."""
    default_window = DEFAULT_LIMITS.context_window
    total = walkthrough.prompt_tokens + MAX_TOKENS
    lowered = walkthrough.lowered_window
    changed = sorted(name for name, current in limits.items() if current != DEFAULT_READING)
    in_force = "; ".join(f"{name} {_limits(current)}" for name, current in sorted(limits.items()))
    versions = " and ".join(f"{numpy[name]}" for name in (RELOADED, OTHER))
    lines = [
        "",
        f"autoglm-runtime example model server listening on {url}",
        f"config: {store.description}: {store.hosts} root {root}",
        f"limits in force: {in_force} (kept in {store.data} across restarts; --reset starts from "
        f"{_limits(DEFAULT_READING)})",
        "models: "
        + ", ".join(f"{name} (numpy {version}; {_serving(serving[name])})" for name, version in sorted(numpy.items()))
        + ", each in its own environment and workers ([serving] in its model.toml)",
        f"environments: {environments}",
        "",
        "Try it (in another shell; each step's expected status is in brackets):",
        "",
    ]
    if changed:
        lines += [
            "  # the limits in force are not the defaults the steps below start from: put the defaults back",
            "  # (or restart with --reset)",
            *(f"  {command}" for name in changed for command in _reset(cli, store, root, name, all_keys=True)),
            "",
        ]
    chat = shlex.quote(json.dumps(chat_body()))
    lines += [
        f"  # the models, in OpenAI's shape, with the numpy each one imported [200, numpy {versions}]",
        f"  curl -si {url}/v1/models",
        f"  # two models whose numpy versions cannot share a process answer side by side [200, numpy {versions}]",
        f"  {_curl(url, RELOADED, SHORT_PROMPT)}",
        f"  {_curl(url, OTHER, SHORT_PROMPT)}",
        "",
        f"  # a streamed chat completion: {RELOADED}'s own chat template renders the messages, the tokens arrive",
        f"  # as server-sent events [200, text/event-stream, usage: {walkthrough.chat_tokens} prompt tokens]",
        f"  curl -siN {url}/v1/chat/completions -H 'content-type: application/json' -d {chat}",
        f"  # ... paced to {PACE} tokens a second (limits/<model>/tokens_per_second, live like every limit): the same",
        f"  # chat arrives token by token [200, text/event-stream, usage: {walkthrough.chat_tokens} prompt tokens]",
        f"  {_config_set(cli, store, root, RELOADED, ('tokens_per_second', str(PACE)))}",
        f"  curl -siN {url}/v1/chat/completions -H 'content-type: application/json' -d {chat}",
        "  # ... and back to 0: each token as soon as the model writes it",
        f"  {_config_set(cli, store, root, RELOADED, ('tokens_per_second', '0'))}",
        "",
        f"  # hot reload: a prompt of {walkthrough.prompt_tokens} tokens plus max_tokens {MAX_TOKENS} fits "
        f"{RELOADED}'s context window of {default_window} [200]",
        f"  {_curl(url, RELOADED, PROMPT)}",
        f"  # ... lower {RELOADED}'s window to {lowered} in the config; within a second its next request is judged",
        f"  # by it [400, E0513: {total} tokens, more than the context window of {lowered}]",
        f"  {_config_set(cli, store, root, RELOADED, ('context_window', str(lowered)))}",
        f"  {_curl(url, RELOADED, PROMPT)}",
        f"  # ... while {OTHER} keeps its own window [200]",
        f"  {_curl(url, OTHER, PROMPT)}",
        "  # ... or let it truncate, and the response says so [200, x-autoglm-truncated-tokens: "
        f"{walkthrough.truncated_tokens}]",
        f"  {_config_set(cli, store, root, RELOADED, ('truncate_on_overflow', 'true'))}",
        f"  {_curl(url, RELOADED, PROMPT)}",
        "  # ... and back to the defaults",
        *(f"  {command}" for command in _reset(cli, store, root, RELOADED)),
        "",
        "  # an overlong Authorization header is refused before parsing [431, E0512]",
        f"  curl -si {url}/v1/completions -H \"Authorization: Bearer $(printf 'x%.0s' $(seq {HEADER_LENGTH}))\" "
        "-d '{}'",
        "",
        "  # config connection and staleness; each model's limits, its workers' state, the calls in flight and queued,",
        "  # and how it is served: replicas, concurrency, max_inflight, max_queue from its model.toml [200]",
        f"  curl -si {url}/health",
        "",
    ]
    return "\n".join(lines)


def _reset(cli: str, store: ConfigStore, root: str, model: str, *, all_keys: bool = False) -> list[str]:
    """The commands putting ``model``'s default limits back: those the walk-through changes, or ``all_keys``."""
    keys = DEFAULT_READING.as_dict() if all_keys else {"context_window": 0, "truncate_on_overflow": 0}
    return [_config_set(cli, store, root, model, (key, _value(DEFAULT_READING.as_dict()[key]))) for key in keys]
