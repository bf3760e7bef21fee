"""The README's first command, end to end: ``bash scripts/serve`` from the repository root, default state dir.

Each test starts the command as a newcomer would (only ``--port`` added, to stay off a port in use), reads
the banner it prints, runs every command of the walk-through exactly as printed (bash from the repository
root), and checks each response against the status and details the banner claims, and against what the
test knows. So the test breaks when the banner lies. Restarts check that the limits persist in the state
directory, that environments are reused (not rebuilt), and that ``--reset`` starts from the defaults. After
every stop no server, worker or java process is left.

The local-ZooKeeper run needs ZooKeeper installed (it is on CI; elsewhere the test is skipped with a
message); the file:// run uses ``--config-store file``, the store a machine without ZooKeeper gets.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests._support.processes import is_running, processes_matching

from autoglm_runtime.deps import load_manifest
from autoglm_runtime.isolation import EnvironmentBuilder
from autoglm_runtime.testing import ZooKeeperUnavailableError, build_wheel, fail_in_ci_else_skip
from autoglm_runtime.testing._local import find_local_installation
from examples.model_server.assets import build_local_wheels

REPO = Path(__file__).resolve().parents[2]
STATE = REPO / ".autoglm" / "example"  # the default --state-dir, as the README runs it
DEFAULTS = {
    "context_window": 64,
    "truncate_on_overflow": False,
    "truncation_side": "left",
    "max_output_tokens": 32,
    "tokens_per_second": 0,
}
MODELS = ("chars-numpy2", "words-numpy1")

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _poll(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)  # polling a condition with a deadline


@dataclass
class Serve:
    """One run of ``bash scripts/serve``: its process, its log, and the banner it printed."""

    args: list[str]
    log_path: Path
    #: Where standard error goes when it is kept apart from standard output (then ``log_path``).
    stderr_path: Path | None = None
    proc: subprocess.Popen[bytes] = field(init=False)
    banner: str = ""

    def start(self) -> Serve:
        env = {k: v for k, v in os.environ.items() if k not in ("AUTOGLM_ZK_HOSTS", "PORT")}
        with self.log_path.open("wb") as log, (self.stderr_path or Path(os.devnull)).open("wb") as errors:
            self.proc = subprocess.Popen(
                ["bash", "scripts/serve", *self.args], cwd=REPO, env=env, stdout=log,
                stderr=subprocess.STDOUT if self.stderr_path is None else errors, start_new_session=True,
            )  # fmt: skip
        text = _poll(lambda: self._banner() or self.proc.poll() is not None, 300, "the banner")
        if not isinstance(text, str):
            raise AssertionError(f"scripts/serve exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
        self.banner = text
        return self

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def _banner(self) -> str | None:
        lines = [line for line in self.log().splitlines() if not line.startswith("{")]  # JSON log lines
        for index, line in enumerate(lines):
            if line.startswith("autoglm-runtime example model server listening on"):
                end = next((i for i in range(index, len(lines)) if lines[i].strip().endswith("/health")), None)
                return "\n".join(lines[index : end + 1]) if end is not None else None
        return None

    @property
    def url(self) -> str:
        return re.search(r"listening on (\S+)", self.banner).group(1)  # type: ignore[union-attr]

    @property
    def hosts(self) -> str:
        return re.search(r"^config: .*: (\S+) root ", self.banner, re.M).group(1)  # type: ignore[union-attr]

    @property
    def root(self) -> str:
        return re.search(r"^config: .* root (\S+)$", self.banner, re.M).group(1)  # type: ignore[union-attr]

    def line(self, prefix: str) -> str:
        return next(line for line in self.banner.splitlines() if line.startswith(prefix))

    def stop(self) -> None:
        """Ctrl-C, as a user stops it; then nothing it started may be left."""
        models = httpx.get(f"{self.url}/health", timeout=30).json()["models"].values()
        workers = [replica["pid"] for model in models for replica in model["replicas"]]
        self.proc.send_signal(signal.SIGINT)  # bash exec'd python: this is the server itself
        try:
            assert self.proc.wait(60) == 130, self.log()[-4000:]  # 128 + SIGINT, after a clean stop
        finally:
            self.kill()
        # Before, nothing said what was stopped: now one line on standard output, after the banner.
        stopped = "stopped: 3 model workers (chars-numpy2 1, words-numpy1 2)"
        if self.hosts.startswith("127.0.0.1:"):  # the local ZooKeeper
            stopped += f" and the local ZooKeeper at {self.hosts} (its data stays in {STATE / 'zookeeper'})"
        said = [line for line in self.log().splitlines() if not line.startswith("{")]
        assert said[-1] == stopped, said[-5:]
        _poll(lambda: not any(is_running(pid) for pid in workers), 30, f"the workers {workers} to exit")
        _poll(lambda: not processes_matching(str(STATE / "zookeeper").encode()), 30, "the local ZooKeeper to exit")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@dataclass
class Step:
    """A command of the walk-through and the claim of its comment (``[400, E0513: ...]``)."""

    command: str
    claim: str


def walkthrough(banner: str) -> list[Step]:
    """Every command printed after "Try it", each with the bracketed claim of the comment above it."""
    steps: list[Step] = []
    claim, after_command = "", True
    for raw in banner.split("Try it", 1)[1].splitlines()[1:]:
        line = raw.strip()
        if line.startswith("#"):
            if after_command:  # a new block of comments: the claim above no longer holds
                claim, after_command = "", False
            found = re.search(r"\[(.*)\]", line)
            claim = found.group(1) if found else claim
        elif line:
            steps.append(Step(line, claim))
            after_command = True
    return steps


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: Any


def _run(command: str) -> str:
    done = subprocess.run(["bash", "-c", command], cwd=REPO, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, f"{command!r} exited with {done.returncode}: {done.stderr.decode()}"
    return done.stdout.decode()  # not text=True: that would turn HTTP's CRLF into LF


def _parse_http(output: str) -> Response:
    """A response as curl -si printed it; a server-sent event stream's body is the list of its events' data."""
    head, _, body = output.partition("\r\n\r\n")
    status_line, *header_lines = head.split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    if headers.get("content-type", "").startswith("text/event-stream"):
        assert body.endswith("\n\n"), body
        events = [event.removeprefix("data: ") for event in body.split("\n\n")[:-1]]
        return Response(int(status_line.split()[1]), headers, events)
    return Response(int(status_line.split()[1]), headers, json.loads(body))


def walk(serve: Serve) -> list[tuple[Step, Response | None]]:
    """Run every step as printed; after a ``config set``, wait (with a deadline) until the server follows."""
    done: list[tuple[Step, Response | None]] = []
    for step in walkthrough(serve.banner):
        output = _run(step.command)
        if step.command.startswith("curl"):
            response = _parse_http(output)
            done.append((step, response))
            _check_claim(step, response)
            continue
        setting = re.search(r" config set limits/([\w-]+)/(\w+) (\S+) ", step.command)
        assert setting is not None, f"an unexpected command in the walk-through: {step.command}"
        model, key, text = setting.groups()
        value: Any = json.loads(shlex.split(text)[0])  # JSON text, as the config CLI takes it
        assert output == f"set limits/{model}/{key} under {serve.root} at {serve.hosts}\n", output

        def followed(model: str = model, key: str = key, value: Any = value) -> bool:
            return httpx.get(f"{serve.url}/health", timeout=30).json()["limits"][model][key] == value

        _poll(followed, 30, f"the server to follow {model}'s {key}={text}")
        done.append((step, None))
    return done


def _check_claim(step: Step, response: Response) -> None:
    """The status and the details the banner claims for this step."""
    status, *details = [part.strip() for part in step.claim.split(",", 1)]
    assert response.status == int(status), (step, response)
    detail = details[0] if details else ""
    code = re.match(r"(E\d{4})", detail)
    if code:
        assert response.headers["x-autoglm-error-code"] == code.group(1), (step, response)
        assert response.body["error"]["message"].startswith(f"{code.group(1)}: "), (step, response)
    numbers = re.match(r"E0513: (\d+) tokens, more than the context window of (\d+)", detail)
    if numbers:
        total, window = numbers.groups()
        assert response.body["error"]["code"] == "context_length_exceeded", (step, response)
        message = response.body["error"]["message"]
        assert f"maximum context length is {window} tokens. However, you requested {total} tokens (" in message, (
            step,
            response,
        )
    truncated = re.match(r"x-autoglm-truncated-tokens: (\d+)", detail)
    if truncated:
        assert response.headers["x-autoglm-truncated-tokens"] == truncated.group(1), (step, response)
        assert response.headers["x-autoglm-warning-code"] == "E0514"
    versions = re.match(r"numpy (\S+) and (\S+)", detail)
    if versions:
        claimed = set(versions.groups())
        if isinstance(response.body, dict) and response.body.get("object") == "list":
            assert {model["numpy"] for model in response.body["data"]} == claimed, (step, response)
        else:
            assert response.body["system_fingerprint"].removeprefix("numpy-") in claimed, (step, response)
    streamed = re.match(r"text/event-stream, usage: (\d+) prompt tokens", detail)
    if streamed:
        assert response.headers["content-type"].startswith("text/event-stream"), (step, response)
        assert response.body[-1] == "[DONE]", (step, response)
        chunks = [json.loads(data) for data in response.body[:-1]]
        assert chunks[-1]["usage"]["prompt_tokens"] == int(streamed.group(1)), (step, response)


def _check_full_walk(done: list[tuple[Step, Response | None]], restore_first: bool) -> None:
    """What the test knows about each step, beyond the banner's own claims."""
    responses = [r for _, r in done]
    if restore_first:  # config sets putting the defaults back come first
        assert responses[0] is None
        while responses[0] is None:
            responses = responses[1:]
    statuses = [None if r is None else r.status for r in responses]
    assert statuses == [200, 200, 200, 200, None, 200, None, 200, None, 400, 200, None, 200, None, None, 431, 200]
    listed, one, two, chat, _, paced, _, fits, _, rejected, other, _, truncated, _, _, refused, health = responses
    numpy = {m["id"]: m["numpy"] for m in listed.body["data"]}  # type: ignore[union-attr]
    assert numpy["words-numpy1"].startswith("1.26."), numpy
    assert numpy["chars-numpy2"].startswith("2."), numpy
    assert one.body["system_fingerprint"] == f"numpy-{numpy['words-numpy1']}"  # type: ignore[union-attr]
    assert two.body["system_fingerprint"] == f"numpy-{numpy['chars-numpy2']}"  # type: ignore[union-attr]
    for answer in (one, two):
        assert answer.body["choices"][0]["text"], answer  # type: ignore[union-attr]
        assert answer.body["usage"]["completion_tokens"] <= 8  # type: ignore[union-attr]
    for streamed in (chat, paced):
        chunks = [json.loads(data) for data in streamed.body[:-1]]  # type: ignore[union-attr]
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        words = [c["choices"][0]["delta"]["content"] for c in chunks[1:-2]]
        assert 1 <= len(words) <= 8, words
        assert all(words), words
        assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
        assert chunks[-1]["usage"]["completion_tokens"] == len(words)
    assert "x-autoglm-truncated-tokens" not in fits.headers  # type: ignore[union-attr]
    assert rejected.body["error"]["code"] == "context_length_exceeded"  # type: ignore[union-attr]
    assert "x-autoglm-truncated-tokens" not in other.headers  # type: ignore[union-attr]
    assert int(truncated.headers["x-autoglm-truncated-tokens"]) > 0  # type: ignore[union-attr]
    assert refused.headers["x-autoglm-error-code"] == "E0512"  # type: ignore[union-attr]
    assert health.body["status"] == "ok"  # type: ignore[union-attr]
    assert health.body["limits"] == dict.fromkeys(MODELS, DEFAULTS)  # type: ignore[union-attr]
    serving = {name: model["serving"] for name, model in health.body["models"].items()}  # type: ignore[union-attr]
    assert serving == {
        "chars-numpy2": {"replicas": 1, "concurrency": "threads", "max_inflight": 4, "max_queue": 8},
        "words-numpy1": {"replicas": 2, "concurrency": "serial", "max_inflight": 1, "max_queue": 8},
    }


def _env_dirs() -> dict[str, int]:
    envs = STATE / "envs"
    return {p.name: p.stat().st_ino for p in envs.iterdir() if not p.name.startswith(".")}


def _an_environment_of_an_older_wheelhouse(tmp_path: Path) -> Path:
    """A real environment in the state directory that the server no longer uses (another numpy 1.26.4 build)."""
    wheels = tmp_path / "older-wheels"
    build_wheel(wheels, "numpy", "1.26.4", modules={"numpy/__init__.py": "__version__ = '1.26.4'  # older\n"})
    build_local_wheels(wheels)
    model = REPO / "examples" / "model_server" / "models" / "words-numpy1"
    env = EnvironmentBuilder(STATE / "envs", wheelhouse=wheels, offline=True).ensure(load_manifest(model))
    assert env.created
    return env.path


def _lower_the_window(serve: Serve) -> int:
    """Run the banner's command that lowers the window (each start's local ZooKeeper has its own port)."""
    command = next(s.command for s in walkthrough(serve.banner) if re.search(r"context_window (?!64 )", s.command))
    _run(command)
    return int(re.search(r"context_window (\d+) ", command).group(1))  # type: ignore[union-attr]


@pytest.fixture
def runs() -> Iterator[list[Serve]]:
    started: list[Serve] = []
    yield started
    for serve in started:
        serve.kill()


def _needs_local_zookeeper() -> None:
    try:
        find_local_installation()
    except ZooKeeperUnavailableError as exc:
        fail_in_ci_else_skip(f"scripts/serve starts a local ZooKeeper only where one is installed. {exc.message}")


@pytest.mark.parametrize("store", ["zookeeper", "file"])
def test_scripts_serve_walkthrough_restart_and_reset(store: str, tmp_path: Path, runs: list[Serve]) -> None:
    if shutil.which("curl") is None:
        fail_in_ci_else_skip("the walk-through scripts/serve prints runs curl, which is not installed")
    extra = [] if store == "zookeeper" else ["--config-store", "file"]
    if store == "zookeeper":
        _needs_local_zookeeper()
    port = _free_port()

    def serve(*flags: str, stderr_path: Path | None = None) -> Serve:
        run = Serve(["--port", str(port), *extra, *flags], tmp_path / f"serve-{len(runs)}.log", stderr_path)
        runs.append(run)
        return run.start()

    first = serve()
    assert first.url == f"http://127.0.0.1:{port}"
    expected_config = (
        "config: a local ZooKeeper for this example (it runs while the server does): 127.0.0.1:"
        if store == "zookeeper"
        else f"config: a file:// config directory (--config-store file): file://{STATE / 'config'} root"
    )
    assert first.line("config: ").startswith(expected_config)
    assert re.fullmatch(
        r"models: chars-numpy2 \(numpy 2\.\d+\.\d+; 1 replica \(threads, 4 calls at once\), queue 8\), "
        r"words-numpy1 \(numpy 1\.26\.\d+; 2 replicas \(serial, 1 call at once each\), queue 8\), each in its own "
        r"environment and workers \(\[serving\] in its model\.toml\)",
        first.line("models: "),
    )
    restore_first = "not the defaults" in first.banner  # left so by an earlier run in this checkout
    _check_full_walk(walk(first), restore_first)
    window = _lower_the_window(first)  # an operator's change, which a restart keeps
    envs_before = _env_dirs()
    first.stop()
    old = _an_environment_of_an_older_wheelhouse(tmp_path)

    second = serve()
    assert second.line("limits in force: ").startswith(
        'limits in force: chars-numpy2 context_window=64 truncate_on_overflow=false truncation_side="left" '
        f"max_output_tokens=32 tokens_per_second=0; words-numpy1 context_window={window} truncate_on_overflow=false "
        'truncation_side="left" max_output_tokens=32 tokens_per_second=0 (kept in '
    )
    assert second.line("environments: ") == "environments: .autoglm/example/envs: 2 reused, 0 built, 1 unused removed"
    assert _env_dirs() == envs_before  # the same directories: nothing rebuilt, the old one gone
    assert not old.exists()
    _check_full_walk(walk(second), restore_first=True)
    _lower_the_window(second)
    second.stop()

    third = serve("--reset", stderr_path=tmp_path / "serve-2.stderr")
    assert third.line("limits in force: ").startswith(
        'limits in force: chars-numpy2 context_window=64 truncate_on_overflow=false truncation_side="left" '
        "max_output_tokens=32 tokens_per_second=0; words-numpy1 context_window=64 truncate_on_overflow=false "
        'truncation_side="left" max_output_tokens=32 tokens_per_second=0 (kept in '
    )
    assert "not the defaults" not in third.banner
    assert httpx.get(f"{third.url}/health", timeout=30).json()["limits"] == dict.fromkeys(MODELS, DEFAULTS)
    headers = {"authorization": "x" * 600, "x-request-id": "req-7f3a"}
    rejected = httpx.post(f"{third.url}/v1/completions", headers=headers, timeout=30)
    assert (rejected.headers["x-autoglm-error-code"], rejected.headers["x-request-id"]) == ("E0512", "req-7f3a")
    third.stop()
    # The banner is on standard output: standard error is the JSON log alone, one object a line, as a log
    # shipper reads it (before, the banner's ~45 lines of text were among them)
    logged = [json.loads(line) for line in (tmp_path / "serve-2.stderr").read_text(encoding="utf-8").splitlines()]
    assert all(isinstance(entry, dict) and "error_code" in entry and "color_message" not in entry for entry in logged)
    # the rejection's line carries the id the client sent, as do the server's lines for that request
    assert [entry.get("trace_id") for entry in logged if entry["error_code"] == "E0512"] == ["req-7f3a"]


def test_a_port_in_use_is_a_usage_error_before_any_set_up(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        state = tmp_path / "state"
        done = subprocess.run(
            ["bash", "scripts/serve", "--port", str(port), "--state-dir", str(state)],
            cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        f"bash scripts/serve: error E0001: port {port} on 127.0.0.1 is in use by another program: stop it, or pass "
        "--port with a free port (--port 0 picks one)"
    )
    assert not state.exists()  # nothing was built
