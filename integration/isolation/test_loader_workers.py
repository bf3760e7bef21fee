"""Real worker processes: calls, timeouts, deaths, crash loops, logging, and close() leaving nothing."""

from __future__ import annotations

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

    def isolation(self):
        import importlib.util
        names = ("autoglm_runtime", "kazoo", "packaging", "pytest")
        return {"isolated": sys.flags.isolated, "importable": [n for n in names if importlib.util.find_spec(n)],
                "prefix": sys.prefix, "path": sys.path}

def load():
    if os.path.exists(os.path.join(os.path.dirname(__file__), "CRASH_ON_START")):
        os._exit(9)
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


def _wait_for_file(path: Path, timeout: float = 30.0) -> int:
    event = threading.Event()
    while not path.exists() or not path.read_text():
        if event.wait(0.01) or timeout <= 0:
            raise AssertionError(f"{path} never appeared")
        timeout -= 0.01
    return int(path.read_text())


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
        "or from a model (JSON values only)"
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
    errors: list[BaseException] = []

    def call() -> None:
        try:
            model.call("hang", str(marker), timeout=60)
        except BaseException as exc:
            errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    pid = _wait_for_file(marker)
    os.kill(pid, signal.SIGKILL)
    caller.join(30)
    assert len(errors) == 1
    assert isinstance(errors[0], WorkerError)
    assert errors[0].message == (
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
    caplog.set_level(logging.INFO, logger="autoglm_runtime.isolation.worker")
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
    errors: list[BaseException] = []

    def call() -> None:
        try:
            model.call("hang", str(marker), timeout=120)
        except BaseException as exc:
            errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    pid = _wait_for_file(marker)
    loader.close()
    caller.join(30)
    assert not caller.is_alive()
    assert wait_gone(pid, 10.0)
    assert len(errors) == 1
    assert isinstance(errors[0], WorkerError)
    assert errors[0].message == "model 'close-busy' was closed while hang was running"


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
