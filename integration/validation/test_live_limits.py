"""Live limits through a real ZooKeeper: a change to context_window judges the very next request."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from kazoo.client import KazooClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from autoglm_runtime.config import ConfigChange, ConfigClient
from autoglm_runtime.validation import (
    CallableTokenizer,
    ConfigLimits,
    ContextWindowGuard,
    Limits,
    ValidationMiddleware,
)

PREFIX = "models/llm/"


class Changes:
    """Waits for the client to apply a given value to a key (a listener event, no sleeping)."""

    def __init__(self, client: ConfigClient) -> None:
        self._seen: list[tuple[str, Any]] = []
        self._cond = threading.Condition()
        self.unsubscribe = client.subscribe(PREFIX, self._on_change)

    def _on_change(self, change: ConfigChange) -> None:
        with self._cond:
            self._seen.append((change.key, change.new))
            self._cond.notify_all()

    def wait(self, key: str, value: Any, timeout: float = 10.0) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: (PREFIX + key, value) in self._seen, timeout), (key, value)


@pytest.fixture
def config(zk_hosts: str, zk_root: str, zk_client: KazooClient) -> Iterator[ConfigClient]:
    zk_client.create(f"{zk_root}/{PREFIX}context_window", b"50", makepath=True)
    client = ConfigClient(hosts=zk_hosts, root=zk_root, codec="json")
    client.start(timeout=10.0)
    try:
        yield client
    finally:
        client.stop()


async def echo(request: Request) -> JSONResponse:
    return JSONResponse(await request.json())


def post(app: Any, body: dict[str, Any]) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.post("/v1/completions", json=body)

    return asyncio.run(go())


def test_limit_changes_in_zookeeper_apply_to_the_next_request(
    config: ConfigClient, zk_client: KazooClient, zk_root: str, caplog: pytest.LogCaptureFixture
) -> None:
    tokenizer = CallableTokenizer(lambda t: [ord(c) for c in t], decode=lambda ids: "".join(map(chr, ids)))
    limits = ConfigLimits(config, prefix=PREFIX, defaults=Limits(context_window=4096))
    guard = ContextWindowGuard(tokenizer, limits)
    app = ValidationMiddleware(
        Starlette(routes=[Route("/v1/completions", echo, methods=["POST"])]), context_guard=guard
    )
    changes = Changes(config)
    body = {"prompt": "x" * 30, "max_tokens": 5}

    assert post(app, body).status_code == 200

    zk_client.set(f"{zk_root}/{PREFIX}context_window", b"20")
    changes.wait("context_window", 20)
    rejected = post(app, body)
    assert rejected.status_code == 400
    assert rejected.json()["error"]["message"] == (
        "This model's maximum context length is 20 tokens. However, you requested 35 tokens (30 in the "
        "input, 5 in the completion asked for by max_tokens), more than the context window of 20 "
        "tokens: shorten the input or lower max_tokens"
    )

    zk_client.create(f"{zk_root}/{PREFIX}truncate_on_overflow", b"true")
    changes.wait("truncate_on_overflow", True)
    truncated = post(app, body)
    assert truncated.status_code == 200
    assert truncated.json() == {"prompt": "x" * 15, "max_tokens": 5}
    assert truncated.headers["x-autoglm-truncated-tokens"] == "15"

    with caplog.at_level(logging.WARNING, logger="autoglm_runtime.validation"):
        zk_client.set(f"{zk_root}/{PREFIX}context_window", json.dumps("huge").encode())
        changes.wait("context_window", "huge")
        assert post(app, body).headers["x-autoglm-truncated-tokens"] == "15"  # the last good window, 20, holds
    [record] = [r for r in caplog.records if r.name == "autoglm_runtime.validation.limits"]
    assert record.getMessage() == (
        f"the value of config key '{PREFIX}context_window' is not a valid limit (expected a whole number of "
        "tokens); the last good value stays in force"
    )
    assert record.error_code == "E0409"  # type: ignore[attr-defined]

    zk_client.delete(f"{zk_root}/{PREFIX}context_window")
    zk_client.delete(f"{zk_root}/{PREFIX}truncate_on_overflow")
    changes.wait("context_window", None)
    changes.wait("truncate_on_overflow", None)
    assert guard.limits == Limits(context_window=4096)
    changes.unsubscribe()
