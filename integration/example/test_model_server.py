"""End to end with the official ``openai`` client: ``bash scripts/serve --zk`` (the example model server under
uvicorn) on the harness's ZooKeeper, with its two real numpy models in their own environments and workers
(the ``server`` fixture, conftest.py).

Expected texts and token counts come from the same code the server runs: the example's n-gram package with
``temperature=0`` (its most frequent continuation, the same on every numpy), its tokenizer and chat templates.
"""

from __future__ import annotations

import json
import os
import re
import signal
from types import ModuleType
from typing import Any

import httpx
import openai
import pytest
import tokenizers
from integration.example._server import CHARS, WORDS, Server, answer, greedy, until
from kazoo.client import KazooClient
from prometheus_client.parser import text_string_to_metric_families
from tests._support.telemetry import promtool_check_metrics

from autoglm_runtime.validation import ChatTemplate, ContextWindowGuard, HFTokenizer, OpenAIExtractor
from examples.model_server.assets import MODELS, tokenizer_path


def _prompt_tokens(server: Server, model: str, body: dict[str, Any]) -> int:
    """What the server's guard counts for ``body``: its tokenizer and the model's own chat template."""
    template = ChatTemplate.from_file(MODELS / model / "tokenizer_config.json")
    guard = ContextWindowGuard(HFTokenizer.from_file(tokenizer_path(server.state)), 10_000, chat_template=template)
    return guard.judge(OpenAIExtractor().extract(body).guard_input()).input_tokens


def test_the_models_list_shows_the_numpy_each_model_imported(server: Server) -> None:
    listed = {model.id: model for model in server.client.models.list()}
    assert sorted(listed) == [CHARS, WORDS]
    assert getattr(listed[WORDS], "numpy").startswith("1.26.")  # noqa: B009 (an extra field of the model object)
    assert int(getattr(listed[CHARS], "numpy").split(".")[0]) == 2  # noqa: B009
    one = server.client.models.retrieve(WORDS)
    assert (one.id, one.object, one.owned_by) == (WORDS, "model", "autoglm-runtime-example")
    assert str(state := server.state) not in server.http.get("/v1/models").text, state  # no host paths


def test_chat_and_completion_answer_with_usage(server: Server, ngramlm: ModuleType) -> None:
    messages: Any = [{"role": "user", "content": "How does the server follow ZooKeeper?"}]
    chat = server.client.chat.completions.create(model=WORDS, messages=messages, max_tokens=8, temperature=0)
    body = {"model": WORDS, "messages": messages, "max_tokens": 8}
    rendered = ChatTemplate.from_file(MODELS / WORDS / "tokenizer_config.json").render(messages)
    expected = answer(ngramlm, WORDS, rendered, 8)
    assert chat.choices[0].message.content == expected["text"]
    assert chat.choices[0].finish_reason == expected["finish_reason"]
    assert chat.usage is not None
    assert chat.usage.prompt_tokens == _prompt_tokens(server, WORDS, body)
    assert chat.usage.completion_tokens == len(expected["tokens"])
    numpy = server.http.get(f"/v1/models/{WORDS}").json()["numpy"]
    assert chat.system_fingerprint == f"numpy-{numpy}"

    done = server.client.completions.create(model=CHARS, prompt="The model server", max_tokens=8, temperature=0)
    assert done.choices[0].text == greedy(ngramlm, CHARS, "The model server", 8)
    assert done.choices[0].finish_reason == "length"
    assert done.usage is not None
    assert done.usage.completion_tokens == 8
    assert done.usage.prompt_tokens == _prompt_tokens(server, CHARS, {"prompt": "The model server"})


def test_streams_parse_with_the_clients_stream_api(server: Server, ngramlm: ModuleType) -> None:
    messages: Any = [{"role": "user", "content": "What does a streamed completion send?"}]
    stream = server.client.chat.completions.create(
        model=WORDS, messages=messages, max_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    whole = server.client.chat.completions.create(model=WORDS, messages=messages, max_tokens=8, temperature=0)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens  # type: ignore[union-attr]
    assert len({chunk.id for chunk in chunks}) == 1

    prompts = ["The model server", "Two models"]
    batch = server.client.completions.create(model=CHARS, prompt=prompts, max_tokens=5, temperature=0, stream=True)
    texts = ["", ""]
    for chunk in batch:
        for choice in chunk.choices:
            texts[choice.index] += choice.text
    assert texts == [greedy(ngramlm, CHARS, prompt, 5) for prompt in prompts]


def test_a_batch_prompt_gets_one_choice_per_prompt(server: Server, ngramlm: ModuleType) -> None:
    prompts = ["The model server", "Each model", "A chat request"]
    done = server.client.completions.create(model=WORDS, prompt=prompts, max_tokens=4, temperature=0)
    assert [choice.index for choice in done.choices] == [0, 1, 2]
    assert [choice.text for choice in done.choices] == [greedy(ngramlm, WORDS, p, 4) for p in prompts]
    assert done.usage is not None
    assert done.usage.prompt_tokens == sum(_prompt_tokens(server, WORDS, {"prompt": p}) for p in prompts)


def test_an_overlong_chat_request_says_what_to_do(server: Server) -> None:
    messages: Any = [{"role": "user", "content": "The model server reads its configuration. " * 20}]
    with pytest.raises(openai.BadRequestError) as info:
        server.client.chat.completions.create(model=WORDS, messages=messages, max_tokens=8)
    assert info.value.code == "context_length_exceeded"
    assert info.value.param == "messages"
    assert info.value.response.headers["x-autoglm-error-code"] == "E0513"
    # The guard stops counting once the input cannot fit: "at least".
    found = re.fullmatch(
        r"E0513: This model's maximum context length is 64 tokens\. However, you requested at least (\d+) tokens "
        r"\(at least (\d+) in the input, 8 in the completion asked for by max_tokens\), more than the context window "
        r"of 64 tokens: shorten the input or lower max_tokens",
        info.value.body["message"],  # type: ignore[index]
    )
    assert found is not None, info.value.body
    assert int(found.group(1)) == int(found.group(2)) + 8 > 64


def test_a_window_changed_in_zookeeper_judges_that_models_next_request(server: Server) -> None:
    prompt = "one two three four five six seven eight nine ten"
    assert server.client.completions.create(model=WORDS, prompt=prompt, max_tokens=8).choices
    zk = KazooClient(hosts=server.hosts)
    zk.start()
    key = f"{server.root}/limits/{WORDS}/context_window"
    try:
        zk.set(key, b"16")
        until(lambda: server.http.get("/health").json()["limits"][WORDS]["context_window"] == 16, 10, "the limit")
        with pytest.raises(openai.BadRequestError) as info:
            server.client.completions.create(model=WORDS, prompt=prompt, max_tokens=8)
        assert info.value.code == "context_length_exceeded"
        assert "maximum context length is 16 tokens" in info.value.message
        assert server.client.completions.create(model=CHARS, prompt=prompt, max_tokens=8).choices  # its own window
        assert server.client.models.retrieve(WORDS).model_extra == {
            "max_model_len": 16, "max_output_tokens": 32, "numpy": _numpy(server),
        }  # fmt: skip
    finally:
        zk.set(key, b"64")
        zk.stop()
        zk.close()
    until(lambda: server.http.get("/health").json()["limits"][WORDS]["context_window"] == 64, 10, "the default")


def test_an_output_cap_changed_in_zookeeper_bounds_max_tokens(server: Server) -> None:
    zk = KazooClient(hosts=server.hosts)
    zk.start()
    key = f"{server.root}/limits/{CHARS}/max_output_tokens"
    try:
        zk.set(key, b"4")
        until(lambda: server.http.get("/health").json()["limits"][CHARS]["max_output_tokens"] == 4, 10, "the cap")
        with pytest.raises(openai.BadRequestError) as info:
            server.client.completions.create(model=CHARS, prompt="The model", max_tokens=5)
        assert (info.value.code, info.value.param) == ("E5010", "max_tokens")
        assert info.value.body["message"] == (  # type: ignore[index]
            f"E5010: max_tokens 5 is more than the output cap of 4 tokens of model {CHARS} (config key "
            f"limits/{CHARS}/max_output_tokens): lower max_tokens"
        )
        # Over the window too: the cap is named first (the window's advice, "at most 64 minus the input's
        # tokens", sent clients to a max_tokens the cap refused next).
        for field in ("max_tokens", "max_completion_tokens"):
            over = server.http.post(CHAT, json={"model": CHARS, "messages": [{"role": "user", "content": "hi"}],
                                                field: 100})  # fmt: skip
            assert over.json()["error"]["message"] == (
                f"E5010: max_tokens 100 is more than the output cap of 4 tokens of model {CHARS} (config key "
                f"limits/{CHARS}/max_output_tokens): lower max_tokens"
            )
        unasked = server.client.completions.create(model=CHARS, prompt="The model", temperature=0)
        assert unasked.usage is not None
        assert unasked.usage.completion_tokens == 4  # the default budget of 16, lowered to the cap
        zk.set(key, b'"many"')  # JSON, but not a number: logged as E0409 when read, the last good value stays
        log = server.state / "server.log"
        until(lambda: server.http.get("/health") and "is not a valid output cap" in log.read_text(), 10, "the warning")
        warning = next(json.loads(line) for line in log.read_text().splitlines() if "valid output cap" in line)
        assert (warning["error_code"], warning["key"]) == ("E0409", f"limits/{CHARS}/max_output_tokens")
        health = server.http.get("/health").json()
        assert health["limits"][CHARS]["max_output_tokens"] == 4
        # Shown where an operator looks, not only in the log (before: nothing in /health said a value was refused).
        why = "not a valid output cap (expected a whole number of tokens, at least 1)"
        assert (health["status"], health["rejected_limits"]) == ("ok", {f"limits/{CHARS}/max_output_tokens": why})
        zk.set(f"{server.root}/limits/{WORDS}/truncate_on_overflow", b'"maybe"')
        until(lambda: len(server.health()["rejected_limits"]) == 2, 10, "the guard's refused value in /health")
        assert server.health()["rejected_limits"][f"limits/{WORDS}/truncate_on_overflow"] == (
            "not a valid limit (expected true or false)"
        )
    finally:
        zk.set(key, b"32")
        zk.set(f"{server.root}/limits/{WORDS}/truncate_on_overflow", b"false")
        zk.stop()
        zk.close()
    until(lambda: server.http.get("/health").json()["limits"][CHARS]["max_output_tokens"] == 32, 10, "the default")
    until(lambda: server.health()["rejected_limits"] == {}, 10, "no refused value left")


def test_the_budget_run_is_the_one_the_guard_judged(server: Server) -> None:
    # max_completion_tokens wins over max_tokens in a chat (as in vLLM): 64 is over the cap of 32, but not used.
    messages: Any = [{"role": "user", "content": "How does the server follow ZooKeeper?"}]
    chat = server.client.chat.completions.create(
        model=WORDS, messages=messages, max_completion_tokens=3, max_tokens=64, temperature=0
    )
    assert chat.usage is not None
    assert chat.usage.completion_tokens <= 3
    # A budget sent as text is read as vLLM reads it.
    done = server.client.completions.create(
        model=CHARS, prompt="The model server", temperature=0, extra_body={"max_tokens": "3"}
    )
    assert done.usage is not None
    assert (done.usage.completion_tokens, done.choices[0].finish_reason) == (3, "length")


def _numpy(server: Server) -> str:
    return str(server.http.get(f"/v1/models/{WORDS}").json()["numpy"])


def test_unknown_models_and_paths_answer_in_openais_shape(server: Server) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        server.client.completions.create(model="gpt-4o", prompt="hi")
    assert info.value.code == "model_not_found"
    assert info.value.message == (
        f"Error code: 404 - E5010: the model 'gpt-4o' does not exist here: choose one of {CHARS}, {WORDS} "
        "(GET /v1/models lists them)"
    )
    with pytest.raises(openai.NotFoundError):
        server.client.models.retrieve("gpt-4o")
    with pytest.raises(openai.NotFoundError) as missing:
        server.client.embeddings.create(model=WORDS, input="hi")
    assert missing.value.response.headers["x-autoglm-error-code"] == "E0001"
    wrong = server.http.get("/v1/chat/completions")
    assert (wrong.status_code, wrong.json()["error"]["type"], wrong.headers["allow"]) == (
        405, "invalid_request_error", "POST",
    )  # fmt: skip


COMPLETIONS, CHAT = "/v1/completions", "/v1/chat/completions"


@pytest.mark.parametrize(
    ("path", "body", "param", "message"),
    [
        (COMPLETIONS, {"model": WORDS}, "prompt", "E5010: the request has no 'prompt': send a prompt: a string, a "
         "list of strings, or token ids"),
        (COMPLETIONS, {"prompt": "hi"}, "model", f"E5010: the request names no model: set 'model' to one of {CHARS}, "
         f"{WORDS}"),
        (COMPLETIONS, {"model": WORDS, "prompt": [], "max_tokens": 2}, "prompt", "E5010: prompt is an empty list: "
         'send at least one prompt (vLLM: "please provide at least one prompt")'),
        (COMPLETIONS, {"model": WORDS, "prompt": "hi", "temperature": "hot", "n": 3}, "temperature", "E5010: "
         "temperature must be a number from 0 to 2, got 'hot'; n must be 1 (these models write one choice per "
         "prompt), got 3: fix the request body"),
        (COMPLETIONS, {"model": WORDS, "prompt": {"text": "hi"}}, "prompt", "E5010: prompt must be a string, a list "
         "of strings or a list of token ids, got dict: fix the request body"),
        (CHAT, {"model": WORDS}, "messages", "E5010: the request has no 'messages': send the conversation as a list "
         "of messages"),
        (CHAT, {"model": WORDS, "messages": [], "max_tokens": 2}, "messages", "E5010: messages is empty: send at "
         "least one message"),
        (COMPLETIONS, {"model": WORDS, "prompt": "hi", "logprobs": 2, "echo": True, "stop": ["\n"]}, "logprobs",
         "E5010: logprobs asks for log probabilities, which these models do not give, got 2; echo asks for echoing "
         "the prompt, which these models do not give, got True; stop asks for stop sequences, which these models do "
         "not give, got ['\\n']: fix the request body"),
        (CHAT, {"model": WORDS, "messages": [{"role": "user", "content": "hi"}], "modalities": ["text", "audio"],
                "audio": {"voice": "alloy", "format": "wav"}}, "modalities", "E5010: modalities asks for output other "
         "than text, which these models do not give, got ['text', 'audio']; audio asks for audio output, which these "
         "models do not give, got {'voice': 'alloy', 'format': 'wav'}: fix the request body"),
        (CHAT, {"model": WORDS, "messages": [{"role": "user", "content": "hi"}], "tool_choice": "auto",
                "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "E5010: tools asks for tool "
         "calls, which these models do not give, got [{'type': 'function', 'function': {'name: fix the request body"),
        (CHAT, {"model": WORDS, "messages": [{"role": "user", "content": "hi"}], "top_p": 0.5, "presence_penalty": 1,
                "frequency_penalty": -0.5}, "top_p", "E5010: top_p asks for nucleus sampling, which these models do "
         "not give, got 0.5; presence_penalty asks for presence penalties, which these models do not give, got 1; "
         "frequency_penalty asks for frequency penalties, which these models do not give, got -0.5: fix the request "
         "body"),
        (COMPLETIONS, {"model": WORDS, "prompt": "hi", "top_k": 5, "min_p": 0.1, "repetition_penalty": 1.2,
                       "min_tokens": 4, "ignore_eos": True, "stop_token_ids": [2]}, "top_k", "E5010: top_k asks for "
         "top-k sampling, which these models do not give, got 5; min_p asks for min-p sampling, which these models do "
         "not give, got 0.1; repetition_penalty asks for repetition penalties, which these models do not give, got "
         "1.2; min_tokens asks for a minimum length, which these models do not give, got 4; ignore_eos asks for "
         "generating past the end of the text, which these models do not give, got True; stop_token_ids asks for stop "
         "tokens, which these models do not give, got [2]: fix the request body"),
        (CHAT, {"model": WORDS, "messages": [{"role": "system", "content": "hi"}, {"role": "user", "content": [
                {"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": "x.png"}},
                {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]}, "messages[1].content[1]",
         "E5010: messages[1].content[1] is a part of type 'image_url', which these models cannot read; "
         "messages[1].content[2] is a part of type 'input_audio', which these models cannot read: fix the request "
         "body"),
        (COMPLETIONS, {"model": WORDS, "prompt": "hi", "stream_options": {"include_usage": True}}, "stream_options",
         "E5010: stream_options is for streamed responses (as vLLM refuses it without stream: true), got "
         "{'include_usage': True}: fix the request body"),
        (CHAT, {"model": WORDS, "messages": [{"role": "user", "content": "hi"}], "stream": True, "stream_options": {
                "include_usage": "yes"}}, "stream_options", "E5010: stream_options.include_usage must be true or "
         "false, got 'yes': fix the request body"),
        (CHAT, {"model": CHARS, "messages": [{"role": "tool", "content": "42"}]}, "messages", "E5010: the model's "
         "chat template rejected the messages: roles are system, user and assistant; got tool: fix the conversation"),
        (CHAT, {"model": WORDS, "messages": [{"role": "user", "content": "hi"}, {"role": 5, "content": "hi"}]},
         "messages[1].role", "E5010: messages[1].role is an integer, not a string (OpenAI: \"Invalid type for "
         "'messages[1].role': expected a string, but got an integer instead.\"): give every message a role (a "
         "string)"),
        (CHAT, {"model": CHARS, "messages": [{"role": "robot", "content": "hi"}]}, "messages", "E5010: the model's "
         "chat template rejected the messages: roles are system, user and assistant; got robot: fix the "
         "conversation"),
    ],
)  # fmt: skip
def test_requests_the_guard_can_judge_get_coded_400s(
    server: Server, path: str, body: dict[str, Any], param: str, message: str
) -> None:
    response = server.http.post(path, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == {
        "message": message,
        "type": "invalid_request_error",
        "param": param,
        "code": "E5010",
    }


def test_a_message_without_a_role_is_refused_by_name_through_the_openai_client(server: Server) -> None:
    # Before, the chars model's template failed on the missing role: "E5010: the model's chat template failed on
    # the messages (UndefinedError: ...)", naming no message.
    messages: Any = [{"role": "system", "content": "Be brief."}, {"content": "How does the server start?"}]
    with pytest.raises(openai.BadRequestError) as info:
        server.client.chat.completions.create(model=CHARS, messages=messages, max_tokens=4)
    assert (info.value.code, info.value.param) == ("E5010", "messages[1].role")
    assert info.value.body["message"] == (  # type: ignore[index]
        "E5010: messages[1].role is missing (OpenAI: \"Missing required parameter: 'messages[1].role'.\"): give every "
        "message a role (a string)"
    )


def test_a_custom_role_is_answered_by_a_model_whose_template_takes_it(server: Server) -> None:
    # The words model's ChatML template writes any role, as vLLM runs it: GLM's tool results come as "observation"
    # messages. Before, the guards refused every role but OpenAI's six by default (E5010).
    messages: Any = [{"role": "user", "content": "How does the server start?"}, {"role": "observation", "content": "4"}]
    body = {"model": WORDS, "messages": messages, "max_tokens": 2}
    response = server.http.post(CHAT, json=body)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] == _prompt_tokens(server, WORDS, body)


def test_options_left_at_what_asks_for_nothing_are_accepted(server: Server) -> None:
    # What a client sends for an option it leaves alone: refusing these would refuse ordinary clients.
    done = server.client.completions.create(
        model=WORDS,
        prompt="hi",
        max_tokens=2,
        best_of=1,
        echo=False,
        logprobs=None,
        stop=None,
        logit_bias={},
        top_p=1,
        presence_penalty=0,
        frequency_penalty=0.0,
        extra_body={"top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0, "min_tokens": 0, "ignore_eos": False},
    )
    assert done.choices[0].finish_reason in ("length", "stop")
    chat = server.client.chat.completions.create(
        model=WORDS,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=2,
        logprobs=False,
        tool_choice="none",
        response_format={"type": "text"},
        modalities=["text"],
        top_p=1.0,
        presence_penalty=0.0,
        extra_body={"top_k": 0, "stop_token_ids": []},
    )
    assert chat.choices[0].message.role == "assistant"


@pytest.mark.parametrize(
    ("prompt", "param", "bad"), [([10**6], "prompt", 10**6), ([[5], [1, 2, 10**6]], "prompt[1]", 10**6)]
)
def test_token_ids_outside_the_vocabulary_are_a_coded_400(server: Server, prompt: Any, param: str, bad: int) -> None:
    # -1 was a bare "Internal Server Error" (the tokenizer's decode overflowed); 10**6 was dropped by the decode
    # while usage counted it (vLLM refuses both: "out of vocabulary").
    vocabulary = tokenizers.Tokenizer.from_file(str(tokenizer_path(server.state))).get_vocab_size()
    response = server.http.post(COMPLETIONS, json={"model": WORDS, "prompt": prompt, "max_tokens": 2})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, "E5010")
    assert error["message"] == (
        f"E5010: {param} holds token id {bad}, which the models' tokenizer does not have (its ids are 0 to "
        f"{vocabulary - 1}): send ids of its vocabulary, or the text"
    )
    # A negative id is no token id at all: the guard refuses it first, as vLLM's CompletionRequest does.
    negative = server.http.post(COMPLETIONS, json={"model": WORDS, "prompt": [-1], "max_tokens": 2})
    assert negative.status_code == 400, negative.text
    assert negative.json()["error"]["message"] == (
        "E5010: prompt[0] is -1, not a token id: token ids are whole numbers of at least 0 (vLLM refuses others): "
        "fix the request body"
    )


def test_a_tiny_temperature_is_answered_by_both_models(server: Server) -> None:
    # chars-numpy2 answered temperature=0.001 with a 500 (E0105: "Probabilities contain NaN").
    for model in (WORDS, CHARS):
        done = server.client.completions.create(model=model, prompt="The", max_tokens=4, temperature=0.001, seed=1)
        assert done.choices[0].finish_reason in ("length", "stop")


def test_a_negative_seed_is_its_64_bit_twos_complement(server: Server) -> None:
    # vLLM takes any 64-bit seed; numpy's generators take none below 0, and seed=-1 was a 500 (E0105: the model
    # raised ValueError) for a request the server could judge.
    def text(seed: int) -> str | None:
        return server.client.completions.create(model=WORDS, prompt="The", max_tokens=8, seed=seed).choices[0].text

    assert text(-1) == text(2**64 - 1)
    assert text(-(2**63)) == text(2**63)
    response = server.http.post(COMPLETIONS, json={"model": WORDS, "prompt": "hi", "seed": -(2**63) - 1})
    assert (response.status_code, response.json()["error"]["message"]) == (
        400, f"E5010: seed must be an integer of at least {-(2**63)}, got {-(2**63) - 1}: fix the request body"
    )  # fmt: skip


def test_an_empty_prompt_is_completed_from_nothing_as_openais_api_does(server: Server, ngramlm: ModuleType) -> None:
    # Only a missing prompt or an empty list of prompts is E5010 (the README says which).
    done = server.client.completions.create(model=WORDS, prompt="", max_tokens=4, temperature=0)
    assert done.choices[0].text == greedy(ngramlm, WORDS, "", 4)
    assert done.usage is not None
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (0, 4)


def test_token_id_prompts_are_decoded_with_the_models_tokenizer(server: Server, ngramlm: ModuleType) -> None:
    ids = HFTokenizer.from_file(tokenizer_path(server.state)).encode("The model server")
    done = server.client.completions.create(model=WORDS, prompt=ids, max_tokens=4, temperature=0)
    assert done.choices[0].text == greedy(ngramlm, WORDS, "The model server", 4)
    assert done.usage is not None
    assert done.usage.prompt_tokens == len(ids)


def test_a_killed_worker_comes_back(server: Server) -> None:
    before = server.http.get("/health").json()["models"][CHARS]
    os.kill(before["pid"], signal.SIGKILL)

    def answered() -> httpx.Response | None:
        response = server.http.post("/v1/completions", json={"model": CHARS, "prompt": "back", "max_tokens": 2})
        return response if response.status_code == 200 else None

    assert until(answered, 30, "the restarted worker to answer").json()["system_fingerprint"].startswith("numpy-2.")
    after = server.http.get("/health").json()["models"][CHARS]
    assert after["state"] == "ready"
    assert after["pid"] != before["pid"]
    assert after["restarts"] == before["restarts"] + 1


def test_an_overlong_authorization_header_gets_431_e0512(server: Server) -> None:
    response = server.http.post(
        "/v1/completions", json={"model": WORDS, "prompt": "hi"}, headers={"authorization": "Bearer " + "x" * 600}
    )
    assert response.status_code == 431
    assert response.json()["error"] == {
        "message": "E0512: the authorization header is 607 bytes long, more than the 512 bytes this server takes: "
        "send at most 512 bytes",
        "type": "invalid_request_error",
        "param": "authorization",
        "code": "E0512",
    }


def test_health_reports_config_limits_and_workers(server: Server) -> None:
    health = server.http.get("/health").json()
    assert health["status"] == "ok"
    assert (health["config"]["connected"], health["config"]["following"]) == (True, True)
    assert health["config"]["source"] == "zookeeper"
    defaults = {
        "context_window": 64,
        "truncate_on_overflow": False,
        "truncation_side": "left",  # seeded like every limit, so no start logs it as missing
        "max_output_tokens": 32,
        "tokens_per_second": 0,
    }
    assert health["limits"] == {CHARS: defaults, WORDS: defaults}
    assert health["rejected_limits"] == {}
    assert {name: w["state"] for name, w in health["models"].items()} == {CHARS: "ready", WORDS: "ready"}
    # How each model is served: the [serving] table of its model.toml, and the workers it started.
    served = {
        name: (w["serving"], [r["state"] for r in w["replicas"]], w["max_inflight"], w["max_queue"], w["queued"])
        for name, w in health["models"].items()
    }
    assert served == {
        CHARS: ({"replicas": 1, "concurrency": "threads", "max_inflight": 4, "max_queue": 8}, ["ready"], 4, 8, 0),
        WORDS: ({"replicas": 2, "concurrency": "serial", "max_inflight": 1, "max_queue": 8}, ["ready"] * 2, 1, 8, 0),
    }
    pids = [r["pid"] for r in health["models"][WORDS]["replicas"]]
    assert len(set(pids)) == 2, pids  # two worker processes


def _scrape(server: Server) -> tuple[str, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    response = server.http.get("/metrics")
    assert response.status_code == 200
    values = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    return response.text, values


def test_metrics_move_by_exactly_what_the_requests_did(server: Server) -> None:
    """Scraped around real requests: a pass, a 431, an E0513, a rejected config value, a truncation, a worker kill."""
    _, before = _scrape(server)
    zk = KazooClient(hosts=server.hosts)
    zk.start()
    window, truncate = (
        f"{server.root}/limits/{WORDS}/context_window",
        f"{server.root}/limits/{WORDS}/truncate_on_overflow",
    )
    prompt = "The model server reads its configuration from ZooKeeper and keeps a local copy in sync."
    body = {"model": WORDS, "prompt": prompt, "max_tokens": 8}
    try:
        assert server.http.post("/v1/completions", json=body).status_code == 200
        long = server.http.post("/v1/completions", json=body, headers={"authorization": "Bearer " + "x" * 600})
        assert long.status_code == 431
        over = server.http.post("/v1/completions", json={**body, "prompt": prompt * 4})
        assert over.headers["x-autoglm-error-code"] == "E0513"
        rejected_before = server.http.get("/health").json()["config"]["rejected"]
        zk.set(window, b"{not json")
        until(lambda: server.http.get("/health").json()["config"]["rejected"] == rejected_before + 1, 10, "rejection")
        zk.set(window, b"28")
        zk.set(truncate, b"true")
        until(lambda: server.http.get("/health").json()["limits"][WORDS]["truncate_on_overflow"], 10, "truncation")
        cut = server.http.post("/v1/completions", json=body)
        removed = int(cut.headers["x-autoglm-truncated-tokens"])
        pid = server.http.get("/health").json()["models"][CHARS]["pid"]
        os.kill(pid, signal.SIGKILL)
        until(lambda: server.http.get("/health").json()["models"][CHARS]["state"] == "dead", 10, "the death")
        assert server.http.post("/v1/completions", json={**body, "model": CHARS}).status_code == 200
        text, after = _scrape(server)
    finally:
        zk.set(window, b"64")
        zk.set(truncate, b"false")
        zk.stop()
        zk.close()

    def moved(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert removed > 0
    assert {
        "checks": moved("autoglm_guard_check_duration_seconds_count", surface="http"),
        "E0512": moved("autoglm_guard_rejections_total", code="E0512", surface="http"),
        "E0513": moved("autoglm_guard_rejections_total", code="E0513", surface="http"),
        "truncations": moved("autoglm_guard_truncations_total", surface="http"),
        "tokens removed": moved("autoglm_guard_truncated_tokens_total", surface="http"),
        "words calls ok": moved("autoglm_worker_calls_total", model=WORDS, outcome="ok"),
        "chars calls ok": moved("autoglm_worker_calls_total", model=CHARS, outcome="ok"),
        "chars restarts": moved("autoglm_worker_starts_total", model=CHARS, reason="crash"),
        "config rejected": moved(
            "autoglm_config_updates_rejected_total", root=server.root, code="E0409", reason="decode"
        ),
        "resyncs": moved("autoglm_config_resyncs_total", root=server.root, reason="reconnect"),
    } == {
        # Two guards see each guarded request (the outer one for headers and shape, the model's own for its
        # window); the 431 stops at the outer one: 2 + 1 + 2 + 2 + 2.
        "checks": 9.0,
        "E0512": 1.0,
        "E0513": 1.0,
        "truncations": 1.0,
        "tokens removed": float(removed),
        "words calls ok": 2.0,
        "chars calls ok": 1.0,
        "chars restarts": 1.0,
        "config rejected": 1.0,
        "resyncs": 0.0,
    }
    assert after[("autoglm_worker_up", frozenset({("model", CHARS), ("replica", "0")}))] == 1.0
    assert after[("autoglm_config_connected", frozenset({("root", server.root)}))] == 1.0
    for gauge, value in (("inflight", 0.0), ("queued", 0.0), ("replicas", 1.0)):
        assert after[(f"autoglm_worker_{gauge}", frozenset({("model", CHARS)}))] == value
    assert promtool_check_metrics(text) == (0, "")
