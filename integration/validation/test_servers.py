"""The guards wired as vLLM wires a middleware (``app.add_middleware(cls)``, settings from a file named by an
environment variable) on a real FastAPI app under uvicorn, driven over real HTTP by the official openai client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import uvicorn
from fastapi import FastAPI, Request
from integration._helpers import served
from starlette.middleware.base import BaseHTTPMiddleware
from tests.validation._helpers import write_chat_model

from autoglm_runtime.errors import UsageError
from autoglm_runtime.validation import (
    ChatTemplate,
    ContextWindowGuard,
    EnvValidationMiddleware,
    HFTokenizer,
    OpenAIExtractor,
    ValidationMiddleware,
)
from autoglm_runtime.validation.configured import CONFIG_ENV_VAR, GuardSettings

CHATML = (
    "{{ bos_token }}{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WINDOW = 64


def build_app() -> FastAPI:
    """A small OpenAI-compatible server whose usage counts come from the guard (it never tokenizes itself)."""
    app = FastAPI()

    def usage(request: Request, completion: int) -> dict[str, int]:
        prompt = request.state.guard_result.input_tokens
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        body = await request.json()
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": usage(request, 1),
        }

    @app.post("/v1/completions")
    async def complete(request: Request) -> dict[str, Any]:
        body = await request.json()
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        choices = [
            {"index": i, "text": p[-3:], "finish_reason": "stop", "logprobs": None} for i, p in enumerate(prompts)
        ]
        return {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 0,
            "model": body["model"],
            "choices": choices,
            "usage": usage(request, len(prompts)),
        }

    app.add_middleware(EnvValidationMiddleware)  # exactly what vLLM's --middleware does with a class
    return app


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return write_chat_model(tmp_path / "model", CHATML)


@pytest.fixture
def server(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    settings = tmp_path / "guard.toml"
    settings.write_text(
        f'context_window = {WINDOW}\ntokenizer = "{model_dir / "tokenizer.json"}"\n'
        f'chat_template = "{model_dir / "tokenizer_config.json"}"\nerror_style = "openai"\nbody_timeout = 0.5\n',
        encoding="utf-8",
    )
    monkeypatch.setenv(CONFIG_ENV_VAR, str(settings))
    with served(build_app()) as url:
        yield url
    assert not [t for t in threading.enumerate() if t.name.startswith("autoglm-guard")]


@pytest.fixture
def client(server: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server}/v1", api_key="test", max_retries=0, timeout=30) as client:
        yield client


def expected_chat_tokens(model_dir: Path, messages: list[dict[str, str]]) -> int:
    # Counted in a window no chat here reaches, so chats longer than the server's window are counted too.
    guard = ContextWindowGuard(
        HFTokenizer.from_file(model_dir / "tokenizer.json"), 2**20, chat_template=ChatTemplate.from_file(model_dir)
    )
    return guard.judge(OpenAIExtractor().extract({"messages": messages}).guard_input()).input_tokens


def test_the_middleware_is_pure_asgi() -> None:
    assert not issubclass(EnvValidationMiddleware, BaseHTTPMiddleware)


def test_chat_usage_comes_from_the_guard_counting_with_the_template(client: openai.OpenAI, model_dir: Path) -> None:
    messages = [{"role": "user", "content": "hello world"}]
    response = client.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
    assert response.choices[0].message.content == "ok"
    assert response.usage is not None
    assert response.usage.prompt_tokens == expected_chat_tokens(model_dir, messages)


def test_an_overlong_chat_raises_bad_request_with_context_length_exceeded(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "the quick brown fox " * 30}],
            max_completion_tokens=10,
        )
    error = info.value
    assert error.code == "context_length_exceeded"
    assert error.param == "messages"
    assert error.response.headers["x-autoglm-error-code"] == "E0513"
    assert error.message.startswith("Error code: 400")
    assert f"E0513: This model's maximum context length is {WINDOW} tokens." in error.message


def test_an_absurd_output_budget_names_its_field(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="m", prompt="hi", max_tokens=10**9)
    assert (info.value.code, info.value.param) == ("context_length_exceeded", "max_tokens")


def test_a_batch_prompt_is_judged_prompt_by_prompt(client: openai.OpenAI) -> None:
    response = client.completions.create(model="m", prompt=["hello " * 20, "world " * 20], max_tokens=4)
    assert len(response.choices) == 2
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="m", prompt=["hello", "world " * 200], max_tokens=4)
    assert info.value.param == "prompt[1]"


def test_a_slow_loris_body_gets_408_and_the_connection_closed(server: str) -> None:
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"prompt": '
        )
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"x-autoglm-error-code: E0517" in head
    assert json.loads(body)["error"]["message"] == (
        "E0517: the request body did not arrive within 0.5 seconds: send the body promptly (the server's body_timeout)"
    )


def test_without_the_environment_variable_the_error_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)
    with pytest.raises(UsageError) as info:
        EnvValidationMiddleware(build_app())
    assert info.value.message == (
        "EnvValidationMiddleware reads its settings from the file named by AUTOGLM_VALIDATION_CONFIG, which is not "
        "set: set it to a TOML or JSON settings file (see docs/validation.md)"
    )


def test_every_settings_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "guard.json"
    path.write_text(json.dumps({"tokenizer": "t.json", "max_body_bytes": "big", "colour": "red"}), encoding="utf-8")
    with pytest.raises(UsageError) as info:
        GuardSettings.from_file(path)
    assert info.value.message == (
        f"the guard settings in {str(path)!r} are not valid: unknown key 'colour'; 'max_body_bytes' cannot be 'big'; "
        "'tokenizer' needs 'context_window': fix them (see docs/validation.md)"
    )


def test_the_async_streaming_client_sees_the_code_and_the_header(server: str) -> None:
    async def call() -> openai.BadRequestError:
        async with openai.AsyncOpenAI(base_url=f"{server}/v1", api_key="test", max_retries=0, timeout=30) as client:
            with pytest.raises(openai.BadRequestError) as info:
                await client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "fox " * 100}], stream=True
                )
            return info.value

    error = asyncio.run(call())
    assert (error.code, error.param, error.status_code) == ("context_length_exceeded", "messages", 400)
    assert error.response.headers["x-autoglm-error-code"] == "E0513"


def test_a_chat_is_judged_on_the_budget_vllm_uses(client: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "hello"}]
    # vLLM runs this with 4 output tokens (max_completion_tokens wins); the larger max_tokens was refused before.
    response = client.chat.completions.create(model="m", messages=messages, max_completion_tokens=4, max_tokens=10**6)
    assert response.choices[0].message.content == "ok"
    # A budget sent as text, as vLLM's pydantic models read it.
    assert client.chat.completions.create(model="m", messages=messages, extra_body={"max_tokens": "16"}).usage
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="m", messages=messages, max_tokens=0)
    assert (info.value.param, info.value.response.headers["x-autoglm-error-code"]) == ("max_tokens", "E5010")
    assert "max_tokens must be at least 1, got 0" in info.value.message


def test_a_chat_filling_the_window_without_a_budget_is_refused(client: openai.OpenAI, model_dir: Path) -> None:
    # vLLM refuses a prompt that leaves no room for the one token the model writes at least.
    words = 1
    while expected_chat_tokens(model_dir, [{"role": "user", "content": "fox " * words}]) < WINDOW:
        words += 1
    messages: Any = [{"role": "user", "content": "fox " * words}]
    # ("fox " is one token with this tokenizer, so some length fills the window exactly.)
    assert expected_chat_tokens(model_dir, messages) == WINDOW
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="m", messages=messages)
    assert info.value.code == "context_length_exceeded"
    assert "(64 in the input, 1 for the completion by default" in info.value.message
    shorter: Any = [{"role": "user", "content": "fox " * (words - 1)}]
    assert expected_chat_tokens(model_dir, shorter) < WINDOW
    assert client.chat.completions.create(model="m", messages=shorter).choices[0].message.content == "ok"


def _run_until_started_or_stopped(server: uvicorn.Server, exits: list[object]) -> tuple[threading.Thread, bool]:
    """``server`` run on a thread until it serves (True) or gives up starting (False, its exit code in ``exits``)."""

    def run() -> None:
        try:
            server.run()
        except SystemExit as stopped:  # how uvicorn gives up starting: sys.exit(STARTUP_FAILURE)
            exits.append(stopped.code)

    thread = threading.Thread(target=run, name="uvicorn-test-server")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive():
        assert time.monotonic() < deadline, "uvicorn neither started nor stopped within 30 seconds"
        time.sleep(0.01)
    return thread, server.started


@pytest.mark.parametrize("lifespan", ["auto", "on"])
def test_bad_settings_stop_the_server_at_start_up_whatever_its_lifespan_mode(
    lifespan: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # FastAPI builds its middleware at the lifespan's start-up. uvicorn's default lifespan mode ("auto", vLLM's too)
    # took the error raised there for an app without lifespan support, logged only "ASGI 'lifespan' protocol appears
    # unsupported." at INFO and served a 500 for every request.
    settings = tmp_path / "guard.toml"
    settings.write_text("max_body_bytes = -1\n", encoding="utf-8")
    monkeypatch.setenv(CONFIG_ENV_VAR, str(settings))
    server = uvicorn.Server(uvicorn.Config(build_app(), host="127.0.0.1", port=0, lifespan=lifespan, log_config=None))
    exits: list[object] = []
    thread, started = _run_until_started_or_stopped(server, exits)
    if started:
        server.should_exit = True
    thread.join(30)
    assert (started, exits) == (False, [uvicorn.config.STARTUP_FAILURE])
    refused = [r.getMessage() for r in caplog.records if r.name == "uvicorn.error" and r.levelname == "ERROR"]
    assert (
        f"E0001: the guard settings in {str(settings)!r} are not valid: 'max_body_bytes' must be at least 1, got -1: "
        "fix them (see docs/validation.md)"
    ) in refused


def test_without_lifespan_every_request_gets_a_coded_500_and_the_log_says_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)
    server = uvicorn.Server(uvicorn.Config(build_app(), host="127.0.0.1", port=0, lifespan="off", log_config=None))
    thread, started = _run_until_started_or_stopped(server, [])
    try:
        assert started
        port = server.servers[0].sockets[0].getsockname()[1]
        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="test", max_retries=0) as client:
            for _ in range(2):
                with pytest.raises(openai.InternalServerError) as info:
                    client.completions.create(model="m", prompt="hi")
                assert info.value.response.headers["x-autoglm-error-code"] == "E0001"
                # The settings' problems stay in the server's log: they name its files.
                assert info.value.response.json() == {
                    "error": {
                        "code": "E0001",
                        "message": "E0001: the server's request guard is not configured: its log says why",
                        "param": None,
                        "type": "server_error",
                    }
                }
    finally:
        server.should_exit = True
        thread.join(30)
    logged = [r for r in caplog.records if r.name.startswith("autoglm_runtime") and r.levelname == "ERROR"]
    assert [(r.getMessage(), getattr(r, "error_code", None)) for r in logged] == [
        (
            "EnvValidationMiddleware refuses every request: EnvValidationMiddleware reads its settings from the file "
            "named by AUTOGLM_VALIDATION_CONFIG, which is not set: set it to a TOML or JSON settings file (see "
            "docs/validation.md)",
            "E0001",
        )
    ]


def test_a_bad_option_given_to_add_middleware_stops_the_server_before_the_apps_start_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The same for ValidationMiddleware's own options: the app's lifespan start-up was skipped without a word.
    started: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        started.append("app")
        yield

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(ValidationMiddleware, error_style="opnai")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None))
    exits: list[object] = []
    thread, up = _run_until_started_or_stopped(server, exits)
    if up:
        server.should_exit = True
    thread.join(30)
    assert (up, exits, started) == (False, [uvicorn.config.STARTUP_FAILURE], [])
    refused = [r.getMessage() for r in caplog.records if r.name == "uvicorn.error" and r.levelname == "ERROR"]
    assert "E0001: error_style must be 'autoglm' or 'openai', got 'opnai'" in refused


def test_under_uvicorn_workers_bad_settings_stop_the_whole_server_with_status_0(tmp_path: Path) -> None:
    # docs/validation.md said uvicorn exits with status 3 after the error; that holds for one process only. Under
    # `uvicorn --workers N` each worker exits with 3 and the parent stops too, but ends with status 0 (uvicorn's
    # Multiprocess supervisor): a supervisor restarting only failed servers would not notice. The docs say so now.
    (tmp_path / "guarded_app.py").write_text(
        "from fastapi import FastAPI\n"
        "from autoglm_runtime.validation import ValidationMiddleware\n"
        "app = FastAPI()\n"
        "app.add_middleware(ValidationMiddleware, error_style='opnai')\n",
        encoding="utf-8",
    )
    src = Path(__file__).resolve().parents[2] / "src"
    command = [sys.executable, "-m", "uvicorn", "guarded_app:app", "--workers", "2", "--port", "0"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(src)])}
    done = subprocess.run(command, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.stderr.count("ERROR:    E0001: error_style must be 'autoglm' or 'openai', got 'opnai'") >= 1
    assert "failed to start, stopping the parent process." in done.stderr
    assert done.returncode == 0
