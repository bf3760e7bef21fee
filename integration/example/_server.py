"""The example model server for the tests of this folder: ``bash scripts/serve --zk`` on the harness's ZooKeeper.

The server gets a state directory of its own; its wheelhouse starts from the numpy wheels of the default state
directory, filled first as ``bash scripts/serve`` fills it at first start (so a run fetches them once at most).
Its log (``Server.log``) holds the server's JSON log lines, with the lines the model workers write.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import openai
from kazoo.client import KazooClient

from autoglm_runtime.deps import load_manifest
from examples.model_server.assets import CORPUS, HERE, MODELS, fill_wheelhouse

REPO = Path(__file__).resolve().parents[2]
DEFAULT_WHEELS = REPO / ".autoglm" / "example" / "wheels"
WORDS, CHARS = "words-numpy1", "chars-numpy2"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
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


@dataclass
class Server:
    http: httpx.Client
    client: openai.OpenAI
    hosts: str
    root: str
    state: Path

    @property
    def log(self) -> Path:
        return self.state / "server.log"

    def log_messages(self, model: str) -> list[str]:
        """The lines ``model``'s workers wrote on stdout, as the server logged them so far."""
        prefix = f"model {model} stdout: "
        records = [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]
        return [r["message"].removeprefix(prefix) for r in records if r["message"].startswith(prefix)]

    def set_config(self, values: dict[str, bytes]) -> None:
        """Write config keys (relative to the server's root) in ZooKeeper."""
        zk = KazooClient(hosts=self.hosts)
        zk.start()
        try:
            for key, value in values.items():
                zk.set(f"{self.root}/{key}", value)
        finally:
            zk.stop()
            zk.close()

    def health(self) -> dict[str, Any]:
        health: dict[str, Any] = self.http.get("/health").json()
        return health


@contextlib.contextmanager
def running_server(hosts: str, state: Path, *, healthy: bool = True, root: str | None = None) -> Iterator[Server]:
    """``bash scripts/serve`` on ZooKeeper ``hosts`` with state directory ``state``; stopped with Ctrl-C after,
    and then none of its worker processes may be left. It is ready once ``/health`` says 200 (``healthy``) or
    answers at all (a server that cannot reach ZooKeeper says 503). ``root`` defaults to one per test process."""
    fill_wheelhouse(DEFAULT_WHEELS, [load_manifest(model) for model in sorted(MODELS.iterdir())])
    (state / "wheels").mkdir(exist_ok=True)
    for wheel in DEFAULT_WHEELS.glob("numpy-*.whl"):
        shutil.copy2(wheel, state / "wheels" / wheel.name)
    root = root or f"/example-{os.getpid()}"
    port = _free_port()
    log_path = state / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["bash", "scripts/serve", "--zk", hosts, "--root", root, "--port", str(port), "--state-dir", str(state)],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=url, timeout=30)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)
    try:
        ready = (200,) if healthy else (200, 503)
        until(lambda: proc.poll() is not None or http.get("/health").status_code in ready, 240, "the server")
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        yield Server(http, client, hosts, root, state)
    finally:
        client.close()
        http.close()
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


def load_ngramlm() -> ModuleType:
    """The example's n-gram package, imported here from its source (numpy of the test environment)."""
    spec = importlib.util.spec_from_file_location(
        "example_ngramlm", HERE / "packages" / "ngramlm-1.2" / "ngramlm" / "__init__.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def answer(ngramlm: ModuleType, model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    """What ``model`` answers to ``prompt`` with ``temperature=0``, computed here."""
    unit, order = ("word", 3) if model == WORDS else ("char", 6)
    lm = ngramlm.NGramLM(CORPUS.read_text(encoding="utf-8"), unit=unit, order=order)
    found: dict[str, Any] = lm.complete(prompt, max_tokens, temperature=0)
    return found


def greedy(ngramlm: ModuleType, model: str, prompt: str, max_tokens: int) -> str:
    return str(answer(ngramlm, model, prompt, max_tokens)["text"])
