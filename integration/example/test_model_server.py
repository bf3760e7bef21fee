"""End to end: ``bash scripts/serve --zk`` (the example model server under uvicorn) on the harness's ZooKeeper,
with real isolated workers, in a state directory of its own."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kazoo.client import KazooClient
from prometheus_client.parser import text_string_to_metric_families

from autoglm_runtime.testing import fail_in_ci_else_skip

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except httpx.TransportError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def server(zk_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, str, str]]:
    state = tmp_path_factory.mktemp("example-state")
    root = f"/example-{os.getpid()}"
    port = _free_port()
    log_path = state / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["bash", "scripts/serve", "--zk", zk_server.hosts, "--root", root,
             "--port", str(port), "--state-dir", str(state)],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        _until(lambda: proc.poll() is not None or client.get("/health").status_code == 200, 240, "the server")
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        yield client, zk_server.hosts, root
    finally:
        client.close()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    workers = [line for line in log_path.read_text().splitlines() if "worker started (pid" in line]
    for line in workers:
        pid = int(json.loads(line)["message"].split("pid ")[1].split(",")[0])
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def _complete(client: httpx.Client, model: str, prompt: str, **headers: str) -> httpx.Response:
    return client.post("/v1/completions", json={"model": model, "prompt": prompt, "max_tokens": 8}, headers=headers)


def test_conflicting_models_answer_side_by_side(server: tuple[httpx.Client, str, str]) -> None:
    client, _, _ = server
    one = _complete(client, "summarizer-v1", "hello there world")
    two = _complete(client, "summarizer-v2", "hello there world")
    assert (one.status_code, one.json()["conflictlib"], one.json()["choices"][0]["text"]) == (
        200, "1.0", "hello there world",
    )  # fmt: skip
    assert (two.status_code, two.json()["conflictlib"]) == (200, "2.0")
    models = {m["id"]: m["versions"] for m in client.get("/v1/models").json()["data"]}
    assert models["summarizer-v1"]["conflictlib"]["version"] == "1.0"
    assert models["summarizer-v2"]["conflictlib"]["version"] == "2.0"


def test_a_limit_changed_in_zookeeper_judges_the_next_request(server: tuple[httpx.Client, str, str]) -> None:
    client, hosts, root = server
    prompt = "one two three four five six seven eight nine ten"
    assert _complete(client, "summarizer-v1", prompt).status_code == 200
    zk = KazooClient(hosts=hosts)
    zk.start()
    try:
        zk.set(f"{root}/limits/context_window", b"16")
        _until(lambda: client.get("/health").json()["limits"]["context_window"] == 16, 10, "the new limit")
        rejected = _complete(client, "summarizer-v1", prompt)
        assert rejected.status_code == 400
        assert rejected.json()["error"]["code"] == "E0513"
        assert "more than the context window of 16 tokens" in rejected.json()["error"]["message"]

        zk.set(f"{root}/limits/truncate_on_overflow", b"true")
        _until(lambda: client.get("/health").json()["limits"]["truncate_on_overflow"], 10, "truncation on")
        truncated = _complete(client, "summarizer-v1", prompt)
        assert truncated.status_code == 200
        assert truncated.headers["x-autoglm-warning-code"] == "E0514"
        assert int(truncated.headers["x-autoglm-truncated-tokens"]) > 0
    finally:
        zk.set(f"{root}/limits/context_window", b"64")
        zk.set(f"{root}/limits/truncate_on_overflow", b"false")
        zk.stop()
        zk.close()


def test_a_killed_worker_comes_back(server: tuple[httpx.Client, str, str]) -> None:
    client, _, _ = server
    before = client.get("/health").json()["models"]["summarizer-v2"]
    os.kill(before["pid"], signal.SIGKILL)

    def answered() -> httpx.Response | None:
        response = _complete(client, "summarizer-v2", "back again")
        return response if response.status_code == 200 else None

    assert _until(answered, 30, "the restarted worker to answer").json()["conflictlib"] == "2.0"
    after = client.get("/health").json()["models"]["summarizer-v2"]
    assert after["state"] == "ready"
    assert after["pid"] != before["pid"]
    assert after["restarts"] == before["restarts"] + 1


def test_an_overlong_authorization_header_gets_431_e0512(server: tuple[httpx.Client, str, str]) -> None:
    client, _, _ = server
    response = _complete(client, "summarizer-v1", "hi", authorization="Bearer " + "x" * 600)
    assert response.status_code == 431
    assert response.json()["error"] == {
        "message": "the authorization header is 607 bytes long, more than the limit of 512: send a shorter value, "
        "or raise the limit if such values are legitimate",
        "type": "invalid_request_error",
        "param": "authorization",
        "code": "E0512",
    }


def test_health_reports_config_and_workers(server: tuple[httpx.Client, str, str]) -> None:
    client, _, _ = server
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert health["config"]["connected"] is True
    assert health["config"]["stale_seconds"] == 0.0
    assert health["config"]["source"] == "zookeeper"
    assert {name: w["state"] for name, w in health["models"].items()} == {
        "summarizer-v1": "ready",
        "summarizer-v2": "ready",
    }


def _scrape(client: httpx.Client) -> tuple[str, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    response = client.get("/metrics")
    assert response.status_code == 200
    values = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    return response.text, values


def test_metrics_move_by_exactly_what_the_requests_did(server: tuple[httpx.Client, str, str]) -> None:
    client, hosts, root = server
    _, before = _scrape(client)
    zk = KazooClient(hosts=hosts)
    zk.start()
    try:
        assert _complete(client, "summarizer-v1", "hello").status_code == 200
        assert _complete(client, "summarizer-v1", "hi", authorization="Bearer " + "x" * 600).status_code == 431
        too_much = client.post("/v1/completions", json={"model": "summarizer-v1", "prompt": "hi", "max_tokens": 999})
        assert too_much.headers["x-autoglm-error-code"] == "E0513"
        rejected_before = client.get("/health").json()["config"]["rejected"]
        zk.set(f"{root}/limits/context_window", b"{not json")
        _until(lambda: client.get("/health").json()["config"]["rejected"] == rejected_before + 1, 10, "a rejection")
        zk.set(f"{root}/limits/context_window", b"16")
        zk.set(f"{root}/limits/truncate_on_overflow", b"true")
        _until(lambda: client.get("/health").json()["limits"]["truncate_on_overflow"], 10, "truncation on")
        cut = _complete(client, "summarizer-v1", "one two three four five six seven eight nine ten eleven twelve")
        removed = int(cut.headers["x-autoglm-truncated-tokens"])
        pid = client.get("/health").json()["models"]["summarizer-v2"]["pid"]
        os.kill(pid, signal.SIGKILL)
        _until(lambda: client.get("/health").json()["models"]["summarizer-v2"]["state"] == "dead", 10, "the death")
        assert _complete(client, "summarizer-v2", "back").status_code == 200
        text, after = _scrape(client)
    finally:
        zk.set(f"{root}/limits/context_window", b"64")
        zk.set(f"{root}/limits/truncate_on_overflow", b"false")
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
        "v1 calls ok": moved("autoglm_worker_calls_total", model="summarizer-v1", outcome="ok"),
        "v2 calls ok": moved("autoglm_worker_calls_total", model="summarizer-v2", outcome="ok"),
        "v2 restarts": moved("autoglm_worker_starts_total", model="summarizer-v2", reason="restart"),
        "config rejected": moved("autoglm_config_updates_rejected_total", root=root, code="E0409", reason="decode"),
        "resyncs": moved("autoglm_config_resyncs_total", root=root, reason="reconnect"),
    } == {
        "checks": 5.0,
        "E0512": 1.0,
        "E0513": 1.0,
        "truncations": 1.0,
        "tokens removed": float(removed),
        "v1 calls ok": 2.0,
        "v2 calls ok": 1.0,
        "v2 restarts": 1.0,
        "config rejected": 1.0,
        "resyncs": 0.0,
    }
    assert after[("autoglm_worker_up", frozenset({("model", "summarizer-v2"), ("replica", "0")}))] == 1.0
    assert after[("autoglm_config_connected", frozenset({("root", root)}))] == 1.0
    promtool = shutil.which("promtool")
    if promtool is None:
        fail_in_ci_else_skip("promtool is not installed: 'apt-get install prometheus' (scripts/test does it as root)")
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60, check=False
    )
    assert (check.returncode, check.stdout + check.stderr) == (0, "")
