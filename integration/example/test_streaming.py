"""Streaming from the example's own models, through the official ``openai`` client over real HTTP.

Both tests hold a generation open with the example's stream pacing (``limits/<model>/tokens_per_second``, live
from ZooKeeper): paced to one token in 1000 s, the server takes a stream's second token from the model's worker
only once the test lifts the pace, and the worker runs at most 32 tokens ahead of what the server took
(docs/isolation.md). So a generation of 48 tokens cannot end before the test acts on its first chunk: no timing
is assumed. What the model's generator did is read from the model's own words: ``ngramlm.Served`` says on the
worker's stdout when each request started and how it ended (``finished`` or ``aborted``), under the response's
id, and the server logs those lines.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from types import ModuleType

import pytest
from integration.example._server import CHARS, Server, answer, until

#: More tokens than the worker may run ahead of the server (32) plus the one the server took.
TOKENS = 48
PROMPT = "Two models"  # chars-numpy2 continues it with a corpus line longer than TOKENS
PACE, CAP = f"limits/{CHARS}/tokens_per_second", f"limits/{CHARS}/max_output_tokens"


def _limits(server: Server) -> dict[str, object]:
    limits: dict[str, object] = server.health()["limits"][CHARS]
    return limits


@pytest.fixture
def held(server: Server) -> Iterator[None]:
    """chars-numpy2's streams held after their first token, with an output cap that allows TOKENS; the defaults
    are back afterwards."""
    server.set_config({CAP: str(TOKENS).encode(), PACE: b"0.001"})
    until(lambda: _limits(server)["tokens_per_second"] == 0.001 and _limits(server)["max_output_tokens"] == TOKENS,
          10, "the server to follow the pace")  # fmt: skip
    try:
        yield
    finally:
        server.set_config({CAP: b"32", PACE: b"0"})
        until(lambda: _limits(server)["tokens_per_second"] == 0 and _limits(server)["max_output_tokens"] == 32,
              10, "the server to follow the defaults")  # fmt: skip


def _said(server: Server, request: str) -> list[str]:
    """What chars-numpy2's worker said about ``request``."""
    return [line for line in server.log_messages(CHARS) if line.startswith(f"request {request} ")]


def _inflight(server: Server) -> int:
    return int(server.health()["models"][CHARS]["inflight"])


def test_chunks_arrive_before_the_generation_ends(server: Server, ngramlm: ModuleType, held: None) -> None:
    expected = answer(ngramlm, CHARS, PROMPT, TOKENS)
    assert len(expected["tokens"]) == TOKENS  # nothing but the budget ends this generation
    stream = server.client.completions.create(model=CHARS, prompt=PROMPT, max_tokens=TOKENS, temperature=0, stream=True)
    with stream:
        chunks = iter(stream)
        first = next(chunks)
        # The client holds the first token while the generation cannot have ended: its generator is open in the
        # worker (started, not finished) and the server's stream from the worker is in flight.
        assert first.choices[0].text == expected["tokens"][0]
        request = first.id
        until(lambda: _said(server, request), 10, "the model to say the request started")
        assert _said(server, request) == [f"request {request} started: up to {TOKENS} tokens"]
        assert _inflight(server) == 1
        server.set_config({PACE: b"0"})  # the client has read the first chunk: let the rest come
        rest = [chunk.choices[0] for chunk in chunks if chunk.choices]
    assert first.choices[0].text + "".join(choice.text for choice in rest) == expected["text"]
    assert rest[-1].finish_reason == "length"
    until(lambda: len(_said(server, request)) == 2, 10, "the model to say the request finished")
    assert _said(server, request)[1] == f"request {request} finished: {TOKENS} tokens (length)"
    until(lambda: _inflight(server) == 0, 10, "the stream to leave health's inflight")


def test_a_client_leaving_mid_stream_closes_the_generator_and_frees_the_worker(server: Server, held: None) -> None:
    stream = server.client.completions.create(model=CHARS, prompt=PROMPT, max_tokens=TOKENS, temperature=0, stream=True)
    first = next(iter(stream))
    request = first.id
    until(lambda: _said(server, request), 10, "the model to say the request started")
    assert _inflight(server) == 1
    stream.close()  # the client goes away mid-stream: its connection closes
    ended = until(lambda: _said(server, request)[1:], 30, "the model's generator to be closed")
    found = re.fullmatch(
        rf"request {request} aborted after (\d+) tokens: the stream was closed before the end", ended[0]
    )
    assert found is not None, ended
    assert 1 <= int(found.group(1)) < TOKENS
    until(lambda: _inflight(server) == 0, 30, "health's inflight to be back to 0")
    model = server.health()["models"][CHARS]
    assert [replica["inflight"] for replica in model["replicas"]] == [0]
    assert model["queued"] == 0


def test_a_pace_that_is_not_a_rate_is_logged_and_the_last_good_one_stays(server: Server) -> None:
    server.set_config({PACE: b"2.5"})
    try:
        until(lambda: _limits(server)["tokens_per_second"] == 2.5, 10, "the pace")
        server.set_config({PACE: b"-1"})  # a number, but not a rate: logged as E0409 when read
        warned = f"the value of config key '{PACE}' is not a valid stream pace"
        until(lambda: server.health() and warned in server.log.read_text(), 10, "the warning")
        warning = next(json.loads(line) for line in server.log.read_text().splitlines() if warned in line)
        assert (warning["error_code"], warning["key"], warning["message"]) == (
            "E0409", PACE, f"{warned} (expected a number of tokens per second, 0 or more; 0 turns pacing off); the "
            "last good value stays in force",
        )  # fmt: skip
        assert _limits(server)["tokens_per_second"] == 2.5
    finally:
        server.set_config({PACE: b"0"})
    until(lambda: _limits(server)["tokens_per_second"] == 0, 10, "the default")
