"""Real worker processes: calls, timeouts, deaths, crash loops, logging, and close() leaving nothing."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from integration.isolation._helpers import in_background, pid_in
from tests._support.telemetry import span_exporter

from autoglm_runtime.errors import ModelCallError, ModelLoadError, ModelTimeoutError, UsageError, WorkerError
from autoglm_runtime.isolation import ModelLoader

pytestmark = pytest.mark.slow

MODEL = """
import ctypes, os, subprocess, sys, threading, time
import conflictlib

class Model:
    def echo(self, value, suffix=""):
        return [value, suffix]

    def pid(self):
        return os.getpid()

    def hang(self, marker):
        open(marker, "w").write(str(os.getpid()))
        threading.Event().wait()

    def exit(self, code):
        sys.exit(code)

    def segfault(self):
        ctypes.string_at(0)

    def fail(self):
        raise ValueError("bad input: 42")

    def talk(self):
        print("to stdout")
        print("to stderr", file=sys.stderr)
        sys.stdout.flush(); sys.stderr.flush()
        return True

    def spawn(self):
        return subprocess.Popen(["sleep", "600"]).pid

    def unsendable(self):
        return object()

    def big_int(self):
        sys.set_int_max_str_digits(0)  # this worker may print it; the host (default limit) cannot read it
        return 10 ** 5000

    def isolation(self):
        import importlib.util
        names = ("autoglm_runtime", "kazoo", "packaging", "pytest")
        return {"isolated": sys.flags.isolated, "importable": [n for n in names if importlib.util.find_spec(n)],
                "prefix": sys.prefix, "path": sys.path}

def load():
    here = os.path.dirname(__file__)
    if os.path.exists(os.path.join(here, "CRASH_ON_START")):
        open(os.path.join(here, "STARTED_PID"), "w").write(str(os.getpid()))
        os._exit(9)
    if os.path.exists(os.path.join(here, "SLOW_START")):  # load slowly: until the file goes, at most 5 s
        open(os.path.join(here, "STARTED_PID"), "w").write(str(os.getpid()))
        deadline = time.monotonic() + 5
        while os.path.exists(os.path.join(here, "SLOW_START")) and time.monotonic() < deadline:
            time.sleep(0.01)
    return Model()
"""


@pytest.fixture(scope="module")
def loader(wheelhouse: Path, env_root: Path) -> Iterator[ModelLoader]:
    with ModelLoader(
        env_root, wheelhouse=wheelhouse, offline=True, backend="process", max_restarts=2, backoff=0.01
    ) as loader:
        yield loader


@pytest.fixture
def model(loader: ModelLoader, make_model: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    name = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:60].strip("-")
    loaded = loader.load(make_model(name, MODEL))
    yield loaded
    loaded.close()


def test_call_returns_the_result(model: Any) -> None:
    assert model.call("echo", {"x": [1, 2]}, suffix="!", timeout=30) == [{"x": [1, 2]}, "!"]
    assert model.call("echo", b"\x00\xff", timeout=30) == [b"\x00\xff", ""]
    assert model.health()["state"] == "ready"


def test_model_exception_becomes_model_call_error(model: Any) -> None:
    with pytest.raises(ModelCallError) as info:
        model.call("fail", timeout=30)
    assert info.value.message == f"model '{model.name}' raised ValueError: bad input: 42 in fail()"
    assert info.value.remote_type == "ValueError"
    assert 'raise ValueError("bad input: 42")' in info.value.remote_traceback
    assert model.call("echo", 1, timeout=30) == [1, ""]


def test_unsendable_values_are_refused_with_clear_errors(model: Any) -> None:
    with pytest.raises(UsageError) as info:
        model.call("echo", object(), timeout=30)
    assert info.value.message == (
        f"arguments of {model.name}.echo() cannot be sent to its worker: object of type object cannot be sent to "
        "or from a model (JSON values, bytes and arrays only)"
    )
    with pytest.raises(ModelCallError) as result_info:
        model.call("unsendable", timeout=30)
    assert result_info.value.remote_type == "TypeError"


def test_timeout_raises_e0305_and_restarts_the_worker(model: Any, tmp_path: Path, wait_gone: Any) -> None:
    old_pid = model.call("pid", timeout=30)
    with pytest.raises(ModelTimeoutError) as info:
        model.call("hang", str(tmp_path / "marker"), timeout=0.5)
    assert info.value.code == "E0305"
    assert info.value.message == (
        f"model '{model.name}' did not answer hang() within 0.5 s; its worker was killed and is restarting: "
        "raise the timeout if the model is merely slow"
    )
    assert wait_gone(old_pid, 10.0)
    new_pid = model.call("pid", timeout=30)
    assert new_pid != old_pid
    health = model.health()
    assert (health["state"], health["pid"], health["restarts"]) == ("ready", new_pid, 1)


def test_sigkill_fails_the_call_in_flight(model: Any, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    caller, outcome = in_background(model.call, "hang", str(marker), timeout=60)
    pid = pid_in(marker)
    os.kill(pid, signal.SIGKILL)
    caller.join(30)
    assert len(outcome) == 1
    assert isinstance(outcome[0], WorkerError)
    assert outcome[0].message == (
        f"model '{model.name}' worker (pid {pid}) died during hang(): killed by signal 9 (SIGKILL); "
        "the next call restarts it"
    )
    assert model.health()["state"] == "dead"
    assert model.health()["last_exit"] == "killed by signal 9 (SIGKILL)"
    assert model.call("echo", "again", timeout=30) == ["again", ""]
    assert model.health()["state"] == "ready"


def test_sigkill_of_an_idle_worker_is_reported_dead(model: Any) -> None:
    pid = model.health()["pid"]
    os.kill(pid, signal.SIGKILL)
    event = threading.Event()
    for _ in range(3000):
        if model.health()["state"] == "dead":
            break
        event.wait(0.01)
    health = model.health()
    assert (health["state"], health["pid"], health["last_exit"]) == ("dead", None, "killed by signal 9 (SIGKILL)")
    assert model.call("pid", timeout=30) != pid


@pytest.mark.parametrize(
    ("method", "args", "status"),
    [("exit", [7], "exited with status 7"), ("segfault", [], "killed by signal 11 (SIGSEGV)")],
)
def test_worker_death_names_model_and_status(model: Any, method: str, args: list[Any], status: str) -> None:
    pid = model.health()["pid"]
    with pytest.raises(WorkerError) as info:
        model.call(method, *args, timeout=30)
    assert info.value.message.startswith(
        f"model '{model.name}' worker (pid {pid}) died during {method}(): {status}; the next call restarts it"
    )
    assert model.call("echo", 1, timeout=30) == [1, ""]


def test_crash_loop_gives_up_with_a_clear_error(model: Any) -> None:
    (model.manifest.directory / "CRASH_ON_START").write_text("")
    with pytest.raises(WorkerError) as first:
        model.call("exit", 3, timeout=30)
    assert "died during exit(): exited with status 3" in first.value.message
    with pytest.raises(WorkerError) as info:
        model.call("echo", 1, timeout=30)
    assert info.value.message == (
        f"model '{model.name}' failed 3 times in a row (last: exited with status 9); gave up after 2 restarts: "
        "read its stderr in the logs, fix it and load it again"
    )
    health = model.health()
    assert (health["state"], health["pid"], health["restarts"]) == ("failed", None, 2)
    with pytest.raises(WorkerError) as again:
        model.call("echo", 1, timeout=30)
    assert again.value.message == info.value.message


def test_worker_output_reaches_logging_tagged_with_the_model(model: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="autoglm_runtime.isolation.workers.process")
    assert model.call("talk", timeout=30) is True
    event = threading.Event()
    for _ in range(3000):
        if len([r for r in caplog.records if getattr(r, "model", None) == model.name]) >= 2:
            break
        event.wait(0.01)
    records = {(r.getMessage(), r.levelname, r.stream) for r in caplog.records if getattr(r, "model", None)}
    assert (f"model {model.name} stdout: to stdout", "INFO", "stdout") in records
    assert (f"model {model.name} stderr: to stderr", "WARNING", "stderr") in records


def test_entrypoint_failure_is_a_model_load_error(loader: ModelLoader, make_model: Any) -> None:
    directory = make_model("broken", "import no_such_module_here\n")
    with pytest.raises(ModelLoadError) as info:
        loader.load(directory)
    assert info.value.message.startswith(
        "model 'broken' failed to load its entrypoint broken_model:load: ModuleNotFoundError: "
        "No module named 'no_such_module_here'"
    )
    assert "broken" not in loader.models


def test_close_leaves_no_child_process(
    wheelhouse: Path, env_root: Path, make_model: Any, wait_gone: Any, no_leaked_children: None
) -> None:
    loader = ModelLoader(env_root, wheelhouse=wheelhouse, offline=True, backend="process")
    first = loader.load(make_model("close-1", MODEL))
    second = loader.load(make_model("close-2", MODEL))
    workers = [first.health()["pid"], second.health()["pid"]]
    grandchild = first.call("spawn", timeout=30)
    loader.close()
    assert all(wait_gone(pid, 10.0) for pid in [*workers, grandchild])
    threads = [
        t.name for t in threading.enumerate() if t.name.startswith(("autoglm-worker-close-1", "autoglm-worker-close-2"))
    ]
    assert threads == []
    assert loader.health() == {}
    assert first.health()["state"] == "dead"
    with pytest.raises(WorkerError) as info:
        first.call("echo", 1, timeout=5)
    assert info.value.message == "model 'close-1' was closed; load it again to use it"
    with pytest.raises(UsageError):
        loader.load(make_model("close-3", MODEL))


def test_close_during_a_call_fails_it_and_returns(
    wheelhouse: Path, env_root: Path, make_model: Any, tmp_path: Path, wait_gone: Any
) -> None:
    loader = ModelLoader(env_root, wheelhouse=wheelhouse, offline=True, backend="process")
    model = loader.load(make_model("close-busy", MODEL))
    marker = tmp_path / "marker"
    caller, outcome = in_background(model.call, "hang", str(marker), timeout=120)
    pid = pid_in(marker)
    loader.close()
    caller.join(30)
    assert not caller.is_alive()
    assert wait_gone(pid, 10.0)
    assert len(outcome) == 1
    assert isinstance(outcome[0], WorkerError)
    assert outcome[0].message == "model 'close-busy' was closed while hang() was running"


def test_a_name_loads_once(loader: ModelLoader, make_model: Any) -> None:
    directory = make_model("twice", MODEL)
    first = loader.load(directory)
    with pytest.raises(UsageError) as info:
        loader.load(directory)
    assert info.value.message == "a model named 'twice' is already loaded; close it first"
    first.close()
    assert "twice" not in loader.models
    loader.load(directory).close()


def test_worker_sees_only_its_environment(model: Any) -> None:
    seen = model.call("isolation", timeout=30)
    assert seen["isolated"] == 1
    assert seen["importable"] == []
    assert seen["prefix"] == str(model.environment.path)
    assert seen["path"][0] == str(model.manifest.directory)
    site = [p for p in seen["path"] if p.endswith("site-packages")]
    assert site == [
        str(model.environment.path / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages")
    ]


# --- regressions from review -------------------------------------------------------------------------------


@pytest.mark.parametrize("second_timeout", [None, 30.0], ids=["untimed", "timed"])
def test_a_call_sends_under_its_own_deadline(
    wheelhouse: Path, env_root: Path, make_model: Any, second_timeout: float | None
) -> None:
    # A timed call used to leave its socket timeout behind, so the next call's send of a large payload failed
    # once that old timeout ran out: a false ModelTimeoutError (worker killed), or a TypeError when untimed.
    name = f"own-deadline-{'untimed' if second_timeout is None else 'timed'}"
    with ModelLoader(env_root, wheelhouse=wheelhouse, offline=True, backend="process", default_timeout=None) as loader:
        model = loader.load(make_model(name, MODEL))
        pid = model.health()["pid"]
        assert model.call("echo", 1, timeout=1.0) == [1, ""]
        payload = "x" * (4 << 20)  # far more than the socket buffers hold
        os.kill(pid, signal.SIGSTOP)  # the worker stops reading, so the send must wait for it
        try:
            caller, results = in_background(model.call, "echo", payload, timeout=second_timeout)
            # Longer than any timeout the first call could have left (1 s): a send under it has failed by now.
            caller.join(2.0)
            finished_while_stopped = not caller.is_alive()
        finally:
            os.kill(pid, signal.SIGCONT)
        caller.join(60)
        assert not finished_while_stopped, results
        assert results == [[payload, ""]]
        assert (model.health()["state"], model.health()["pid"]) == ("ready", pid)


def test_waiting_for_an_earlier_call_is_bounded_by_the_timeout(model: Any, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    caller, outcome = in_background(model.call, "hang", str(marker), timeout=10)
    pid = pid_in(marker)
    with pytest.raises(ModelTimeoutError) as info:
        model.call("pid", timeout=0.2)
    assert info.value.code == "E0305"
    assert info.value.message == (
        f"model '{model.name}' did not answer pid() within 0.2 s: the call waited all that time in the queue for "
        "one of its 1 replica(s) (max_inflight=1); no worker was restarted: raise the timeout or add replicas"
    )
    assert (model.health()["state"], model.health()["pid"]) == ("ready", pid)  # left alone
    os.kill(pid, signal.SIGKILL)
    caller.join(30)
    assert [type(o) for o in outcome] == [WorkerError]


def test_waiting_for_a_restarted_worker_is_bounded_by_the_timeout(model: Any, tmp_path: Path) -> None:
    slow = model.manifest.directory / "SLOW_START"
    slow.write_text("")
    try:
        with pytest.raises(ModelTimeoutError):
            model.call("hang", str(tmp_path / "marker"), timeout=0.5)
        restarted = pid_in(model.manifest.directory / "STARTED_PID")
        with pytest.raises(ModelTimeoutError) as info:
            model.call("pid", timeout=0.3)
        assert info.value.message == (
            f"model '{model.name}' did not answer pid() within 0.3 s: its restarted worker (pid {restarted}) is "
            "still loading the model; it was left loading and a later call uses it once it is ready (raise the "
            "timeout to wait for it)"
        )
    finally:
        slow.unlink()
    assert model.call("pid", timeout=30) == restarted  # the same worker, not killed for being slow


def test_dollar_keys_and_bytes_arrive_as_sent(model: Any) -> None:
    value = {"looks_tagged": {"$bytes": "aGk="}, "$$x": [b"\x00", {"$bytes": b"hi"}], "plain": {"$": None}}
    assert model.call("echo", value, timeout=30) == [value, ""]


def _body_length(message: Any) -> int:
    return len(json.dumps(message, separators=(",", ":")))


def test_a_reply_the_host_cannot_decode_is_a_model_call_error(model: Any) -> None:
    pid = model.health()["pid"]
    with pytest.raises(ModelCallError) as info:
        model.call("big_int", timeout=30)
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        length = _body_length({"id": 1, "ok": True, "result": 10**5000})
    finally:
        sys.set_int_max_str_digits(limit)
    assert info.value.code == "E0105"
    assert info.value.message == (
        f"model '{model.name}' answered big_int() with a reply the host cannot decode (frame of {length} bytes is "
        "not valid JSON: Exceeds the limit (4300 digits) for integer string conversion: value has 5001 digits; use "
        "sys.set_int_max_str_digits() to increase the limit); the worker keeps running: return JSON values (and "
        "bytes) from the model"
    )
    assert model.call("echo", 1, timeout=30) == [1, ""]
    health = model.health()
    assert (health["state"], health["pid"], health["restarts"], health["failures"]) == ("ready", pid, 0, 0)


def test_arguments_the_worker_cannot_decode_are_a_model_call_error(model: Any) -> None:
    pid = model.health()["pid"]
    span_exporter()  # tracing on, whatever ran before: the frame carries the call span's traceparent (55 chars)
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)  # the host can write it; the worker (default limit) cannot read it
    try:
        with pytest.raises(ModelCallError) as info:
            model.call("echo", 10**5000, timeout=30)
        request = {"id": 1, "type": "call", "method": "echo", "args": [10**5000], "kwargs": {}, "stream": False}
        request["traceparent"] = f"00-{'0' * 32}-{'0' * 16}-00"
        length = _body_length(request)
    finally:
        sys.set_int_max_str_digits(limit)
    assert info.value.message == (
        f"model '{model.name}' worker could not decode the arguments of echo(): frame of {length} bytes is not "
        "valid JSON: Exceeds the limit (4300 digits) for integer string conversion: value has 5001 digits; use "
        "sys.set_int_max_str_digits() to increase the limit; the worker keeps running"
    )
    assert model.call("echo", 2, timeout=30) == [2, ""]
    assert model.health()["pid"] == pid


def test_closing_a_stale_handle_keeps_the_newer_model(loader: ModelLoader, make_model: Any) -> None:
    directory = make_model("stale-handle", MODEL)
    old = loader.load(directory)
    old.close()
    new = loader.load(directory)
    old.close()
    assert loader.models == {"stale-handle": new}
    assert new.call("echo", 1, timeout=30) == [1, ""]
    new.close()
    assert loader.models == {}


def test_close_stops_a_worker_that_is_still_loading(
    wheelhouse: Path, env_root: Path, make_model: Any, wait_gone: Any, no_leaked_children: None
) -> None:
    directory = make_model("close-mid-load", MODEL)
    (directory / "SLOW_START").write_text("")
    loader = ModelLoader(env_root, wheelhouse=wheelhouse, offline=True, backend="process")
    loading, outcome = in_background(loader.load, directory)
    pid = pid_in(directory / "STARTED_PID")
    loader.close()
    assert wait_gone(pid, 0.0)  # gone when close() returns, not when the load finishes
    loading.join(30)
    assert [type(o) for o in outcome] == [UsageError]
    assert (
        outcome[0].message == "model 'close-mid-load' was not loaded: the ModelLoader was closed while it was loading"
    )
    assert loader.models == {}


def test_timeouts_count_towards_the_crash_loop_limit(model: Any, tmp_path: Path) -> None:
    # max_restarts=2: the third failure in a row (here: timeouts) gives up instead of restarting for ever.
    restarting = (
        f"model '{model.name}' did not answer hang() within 0.5 s; its worker was killed and is restarting: raise "
        "the timeout if the model is merely slow"
    )
    gave_up = (
        f"model '{model.name}' did not answer hang() within 0.5 s; its worker was killed; it has failed 3 times in "
        "a row, more than max_restarts=2, and will not be restarted: fix it and load it again"
    )
    messages = []
    for _ in range(20):  # a restarted worker slow to load times out without counting: tolerate that
        with pytest.raises(ModelTimeoutError) as info:
            model.call("hang", str(tmp_path / "marker"), timeout=0.5)
        messages.append(info.value.message)
        if info.value.message == gave_up:
            break
    assert [m for m in messages if "still loading" not in m] == [restarting, restarting, gave_up]
    health = model.health()
    assert (health["state"], health["pid"], health["restarts"], health["failures"]) == ("failed", None, 2, 3)
    with pytest.raises(WorkerError) as info_loop:
        model.call("echo", 1, timeout=30)
    assert info_loop.value.message == (
        f"model '{model.name}' failed 3 times in a row (last: timed out in hang() after 0.5 s); gave up after 2 "
        "restarts: read its stderr in the logs, fix it and load it again"
    )


def test_death_before_the_handshake_says_the_model_was_not_loaded(loader: ModelLoader, make_model: Any) -> None:
    directory = make_model("dies-loading", MODEL)
    (directory / "CRASH_ON_START").write_text("")
    with pytest.raises(WorkerError) as info:
        loader.load(directory)
    pid = int((directory / "STARTED_PID").read_text())
    assert info.value.message == (
        f"model 'dies-loading' worker (pid {pid}) died before its handshake: exited with status 9; the model was not "
        "loaded: read its stderr, fix it and load it again"
    )
    assert "dies-loading" not in loader.models
