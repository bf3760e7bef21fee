"""``/v1/embeddings`` behind the guards as vLLM wires them (``app.add_middleware(EnvValidationMiddleware)``, settings
from a file), on a real FastAPI app under uvicorn, driven over real HTTP by the official openai client."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI, Request
from integration._helpers import served
from tests.validation._helpers import write_chat_model

from autoglm_runtime.validation import ContextWindowGuard, HFTokenizer, OpenAIExtractor
from autoglm_runtime.validation.configured import CONFIG_ENV_VAR, EnvValidationMiddleware

WINDOW = 16


def build_app() -> FastAPI:
    """An embeddings server whose vectors are (input tokens, 1) and whose usage comes from the guard."""
    app = FastAPI()

    @app.post("/v1/embeddings")
    async def embed(request: Request) -> dict[str, Any]:
        body = await request.json()
        result = request.state.guard_result
        counts = [one.input_tokens for one in result.batch] if result.batch else [result.input_tokens]
        data = []
        for index, count in enumerate(counts):
            vector = [float(count), 1.0]
            # The openai client asks for base64 unless told otherwise, and decodes little-endian float32.
            sent: Any = vector
            if body.get("encoding_format") == "base64":
                sent = base64.b64encode(struct.pack("<2f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": sent})
        usage = {"prompt_tokens": result.input_tokens, "total_tokens": result.input_tokens}
        return {"object": "list", "model": body["model"], "data": data, "usage": usage}

    app.add_middleware(EnvValidationMiddleware)  # exactly what vLLM's --middleware does with a class
    return app


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return write_chat_model(tmp_path / "model", "{% for m in messages %}{{ m['content'] }}{% endfor %}")


@pytest.fixture
def server(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    settings = tmp_path / "guard.toml"
    # The default paths: /v1/embeddings is guarded without being named.
    settings.write_text(
        f'context_window = {WINDOW}\ntokenizer = "{model_dir / "tokenizer.json"}"\nerror_style = "openai"\n'
        "require_input = true\n",
        encoding="utf-8",
    )
    monkeypatch.setenv(CONFIG_ENV_VAR, str(settings))
    with served(build_app()) as url:
        yield url


@pytest.fixture
def client(server: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server}/v1", api_key="test", max_retries=0, timeout=30) as client:
        yield client


def tokens(model_dir: Path, text: str) -> int:
    """``text``'s tokens as vLLM counts an embedding's input: the tokenizer's special tokens (its BOS) included."""
    guard = ContextWindowGuard(HFTokenizer.from_file(model_dir / "tokenizer.json"), 2**20)
    return guard.judge(OpenAIExtractor().extract({"input": text}, embedding=True).guard_input()).input_tokens


def filling(model_dir: Path, extra: int = 0) -> str:
    """A text of exactly ``WINDOW + extra`` tokens ("fox " is one token with this tokenizer)."""
    words = 1
    while tokens(model_dir, "fox " * words) < WINDOW + extra:
        words += 1
    text = "fox " * words
    assert tokens(model_dir, text) == WINDOW + extra
    return text


@pytest.mark.parametrize("encoding_format", ["float", None])
def test_string_list_and_token_id_inputs_are_counted_as_the_model_reads_them(
    client: openai.OpenAI, model_dir: Path, encoding_format: Any
) -> None:
    options: Any = {"encoding_format": encoding_format} if encoding_format else {}
    one = client.embeddings.create(model="m", input="hello world", **options)
    assert one.data[0].embedding == [float(tokens(model_dir, "hello world")), 1.0]
    # An input may fill the whole window: nothing is generated.
    full = filling(model_dir)
    batch = client.embeddings.create(model="m", input=["hello", full], **options)
    assert [item.embedding[0] for item in batch.data] == [tokens(model_dir, "hello"), WINDOW]
    assert batch.usage.prompt_tokens == tokens(model_dir, "hello") + WINDOW
    ids = client.embeddings.create(model="m", input=list(range(WINDOW)), **options)
    assert ids.data[0].embedding[0] == WINDOW
    lists = client.embeddings.create(model="m", input=[[5, 6], list(range(WINDOW))], **options)
    assert [item.embedding[0] for item in lists.data] == [2, WINDOW]


@pytest.mark.parametrize(
    ("make", "param"),
    [
        (lambda long: long, "input"),
        (lambda long: ["hello", long], "input[1]"),
        (lambda long: list(range(WINDOW + 1)), "input"),
        (lambda long: [[1, 2], [3], list(range(WINDOW + 1))], "input[2]"),
    ],
)
def test_an_input_past_the_window_reaches_the_client_as_a_coded_error(
    client: openai.OpenAI, model_dir: Path, make: Any, param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="m", input=make(filling(model_dir, extra=1)))
    error = info.value
    assert (error.status_code, error.code, error.param) == (400, "context_length_exceeded", param)
    assert error.response.headers["x-autoglm-error-code"] == "E0513"
    several = param.endswith("]")
    where, fix = (f"{param}, one of the request's inputs,", param) if several else ("the input", "the input")
    assert (
        f"E0513: This model's maximum context length is {WINDOW} tokens. However, you requested {WINDOW + 1} tokens "
        f"in {where} for embedding generation, more than the context window of {WINDOW} tokens: shorten {fix}"
    ) in error.message


def test_the_backends_own_cut_and_a_bad_shape(client: openai.OpenAI, model_dir: Path) -> None:
    long = filling(model_dir, extra=30)
    # vLLM keeps the last truncate_prompt_tokens tokens (-1: the whole window), so a long input passes as sent.
    kept = client.embeddings.create(model="m", input=long, extra_body={"truncate_prompt_tokens": -1})
    assert kept.data[0].embedding == [WINDOW, 1.0]
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="m", input="hi", extra_body={"truncate_prompt_tokens": WINDOW + 1})
    assert (info.value.param, info.value.response.headers["x-autoglm-error-code"]) == (
        "truncate_prompt_tokens",
        "E0513",
    )
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="m", input=["a", [1, 2]])  # type: ignore[list-item]
    assert (info.value.param, info.value.response.headers["x-autoglm-error-code"]) == ("input", "E5010")


def test_a_body_without_input_is_refused_with_require_input(server: str) -> None:
    response = httpx.post(f"{server}/v1/embeddings", json={"model": "m"}, timeout=30)
    assert (response.status_code, response.headers["x-autoglm-error-code"]) == (400, "E5010")
    assert response.json()["error"]["message"].startswith(
        "E5010: the request gives the model no input: it sends none of input, messages (or sends them null)"
    )
