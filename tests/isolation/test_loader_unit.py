"""The loader's parts that need no environment build: backends, exit statuses, reuse, workers on the host
interpreter, and the ``env build`` command's progress output."""

from __future__ import annotations

import inspect
import io
import json
import os
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from autoglm_runtime.cli import main
from autoglm_runtime.cli.env import ProgressBar, ProgressLines
from autoglm_runtime.deps import load_manifest
from autoglm_runtime.errors import (
    BackendUnsupportedError,
    DependencyConflictError,
    ModelLoadError,
    UsageError,
    WorkerError,
)
from autoglm_runtime.isolation import BuildEvent, EnvironmentBuilder, ModelLoader
from autoglm_runtime.isolation.envs.build import METADATA_NAME
from autoglm_runtime.isolation.envs.key import interpreter_info
from autoglm_runtime.isolation.workers._output import describe_exit
from autoglm_runtime.isolation.workers.process import WorkerProcess, WorkerSpec
from autoglm_runtime.isolation.workers.subinterp import resolve_backend


def _model(tmp_path: Path, body: str, python: str | None = None) -> Path:
    directory = tmp_path / "model"
    directory.mkdir()
    extra = f'python = "{python}"\n' if python else ""
    (directory / "model.toml").write_text(
        f'[model]\nname = "unit"\nentrypoint = "unit_model:load"\nrequirements = []\n{extra}'
    )
    (directory / "unit_model.py").write_text(textwrap.dedent(body))
    return directory


ECHO = """
import json
class Model:
    def echo(self, value):
        return value
def load():
    return Model()
"""


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (None, "still running"),
        (0, "exited with status 0"),
        (3, "exited with status 3"),
        (-9, "killed by signal 9 (SIGKILL)"),
        (-11, "killed by signal 11 (SIGSEGV)"),
        (-200, "killed by signal 200 (unknown signal)"),
    ],
)
def test_describe_exit(code: int | None, text: str) -> None:
    assert describe_exit(code) == text


def test_resolve_backend() -> None:
    info = interpreter_info(sys.executable)
    assert resolve_backend("process", info) == "process"
    with pytest.raises(UsageError) as info_error:
        resolve_backend("thread", info)
    assert info_error.value.message == "backend must be 'auto', 'process' or 'subinterp', got 'thread'"


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="the host interpreter itself supports subinterpreters")
def test_subinterp_refused_on_an_old_interpreter() -> None:
    info = interpreter_info(sys.executable)
    assert resolve_backend("auto", info) == "process"
    with pytest.raises(BackendUnsupportedError) as error:
        resolve_backend("subinterp", info)
    assert error.value.message == (
        "the subinterpreter backend needs CPython 3.12+ (isolated subinterpreters), but the environment "
        f"interpreter {sys.executable} is cpython {info.version}; use backend='process', or pass python= a 3.12+ "
        "interpreter"
    )


def test_loader_rejects_unknown_backend(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        ModelLoader(tmp_path, backend="threads")  # type: ignore[arg-type]
    assert info.value.message == "backend must be 'auto', 'process' or 'subinterp', got 'threads'"


def test_calls_are_bounded_by_default() -> None:
    assert inspect.signature(ModelLoader).parameters["default_timeout"].default == 60.0


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf"), 1e30])
def test_loader_rejects_a_default_timeout_no_wait_can_take(tmp_path: Path, value: float) -> None:
    with pytest.raises(UsageError) as info:
        ModelLoader(tmp_path, default_timeout=value)
    assert info.value.message == (
        f"default_timeout must be a positive number of seconds (at most {threading.TIMEOUT_MAX:g}) or None, "
        f"got {value!r}"
    )


def test_existing_key_is_reused_without_building(tmp_path: Path) -> None:
    builder = EnvironmentBuilder(tmp_path / "envs", offline=True)
    manifest = load_manifest(_model(tmp_path, ECHO))
    key = builder.key_for(manifest)
    (tmp_path / "envs" / key).mkdir()
    (tmp_path / "envs" / key / METADATA_NAME).write_text(json.dumps({"key": key}))
    env = builder.ensure(manifest)
    assert (env.key, env.path, env.created) == (key, tmp_path / "envs" / key, False)
    assert env.python == tmp_path / "envs" / key / "bin" / "python"


def test_python_requirement_is_checked_before_building(tmp_path: Path) -> None:
    builder = EnvironmentBuilder(tmp_path / "envs", offline=True)
    manifest = load_manifest(_model(tmp_path, ECHO, python=">=4"))
    with pytest.raises(DependencyConflictError) as info:
        builder.ensure(manifest)
    version = "{}.{}.{}".format(*sys.version_info[:3])
    assert info.value.message == (
        f"model 'unit' needs Python >=4 but the environment interpreter {os.path.abspath(sys.executable)} is "
        f"{version}: give an interpreter that fits (ModelLoader(python=...), or --python for env build)"
    )
    assert list((tmp_path / "envs").iterdir()) == []


def test_worker_on_the_host_interpreter(tmp_path: Path) -> None:
    directory = _model(tmp_path, ECHO)
    worker = WorkerProcess(WorkerSpec("unit", sys.executable, str(directory), "unit_model:load"))
    hello = worker.start()
    try:
        assert hello["ok"] is True
        assert hello["pid"] == worker.health()["pid"]
        assert worker.call("echo", {"a": [1, None]}, timeout=30) == {"a": [1, None]}
        assert worker.health()["state"] == "ready"
        for bad in (0, float("inf"), 1e30):  # (inf would fail deep inside a lock wait: OverflowError)
            with pytest.raises(UsageError) as info:
                worker.call("echo", 1, timeout=bad)
            assert info.value.message == (
                f"timeout of unit.echo() must be a positive number of seconds (at most {threading.TIMEOUT_MAX:g}; "
                f"None waits for ever), got {bad!r}"
            )
    finally:
        worker.close()
    assert worker.health() == {
        "state": "dead",
        "pid": None,
        "restarts": 0,
        "last_exit": None,
        "backend": "process",
        "failures": 0,
        "restart_reasons": {},
        "restarted_after": {},
        "inflight": 0,
    }
    with pytest.raises(WorkerError):
        worker.call("echo", 1)


def test_worker_reports_entrypoint_errors(tmp_path: Path) -> None:
    directory = _model(tmp_path, "def load():\n    raise RuntimeError('no weights at /models/x')\n")
    worker = WorkerProcess(WorkerSpec("unit", sys.executable, str(directory), "unit_model:load"))
    with pytest.raises(ModelLoadError) as info:
        worker.start()
    assert info.value.message.splitlines()[0] == (
        "model 'unit' failed to load its entrypoint unit_model:load: RuntimeError: no weights at /models/x"
    )
    assert worker.health()["state"] == "failed"
    assert worker.health()["pid"] is None


def test_progress_bar_redraws_one_line() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream, width=8)
    bar(BuildEvent("k", 2, 4, "install", "Resolved 1 package"))
    bar(BuildEvent("k", 4, 4, "done", "ready"))
    assert stream.getvalue() == (
        "\r\x1b[2K[####----] 2/4 install Resolved 1 package\r\x1b[2K[########] 4/4 done    ready\n"
    )


def test_progress_lines() -> None:
    stream = io.StringIO()
    ProgressLines(stream)(BuildEvent("k", 1, 4, "venv", "creating"))
    assert stream.getvalue() == "[1/4 venv] creating\n"


def test_env_build_reports_a_bad_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["env", "build", str(tmp_path), "--env-root", str(tmp_path / "envs")]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"autoglm-runtime: error E0102: {tmp_path / 'model.toml'}: no such manifest; a model directory must hold "
        "model.toml\n"
    )


def test_env_build_needs_a_path(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["env", "build"])
    assert info.value.code == 2
    assert "the following arguments are required: PATH" in capsys.readouterr().err


def test_a_bare_interpreter_name_is_looked_up_on_path_as_check_deps_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: env build --python python3 (and ModelLoader(python="python3")) looked for ./python3 in the current
    # directory ("interpreter /cwd/python3 does not exist"), while check-deps --python python3 found it on PATH.
    directory, name = os.path.split(sys.executable)
    monkeypatch.setenv("PATH", directory)
    monkeypatch.chdir(tmp_path)
    assert EnvironmentBuilder(tmp_path / "envs", python=name).python == sys.executable
    assert EnvironmentBuilder(tmp_path / "envs", python=sys.executable).python == sys.executable
    with pytest.raises(UsageError) as info:
        EnvironmentBuilder(tmp_path / "envs", python="./" + name)  # a path is a path: not looked up
    assert info.value.message.startswith(f"interpreter {tmp_path / name} does not exist")
    # A name found nowhere is said to be missing from PATH, not a file of the working directory.
    with pytest.raises(UsageError) as missing:
        EnvironmentBuilder(tmp_path / "envs", python="python3.99")
    assert missing.value.message == (
        "interpreter python3.99 was not found on PATH; give the path of a Python executable, or a name on PATH"
    )


def test_supervision_options_no_worker_can_run_with_are_refused_all_at_once(tmp_path: Path) -> None:
    # Before: all accepted; start_timeout=-5 failed every load with "did not finish loading within -5 s" (E0103,
    # blaming the worker), max_restarts=-1 gave a model up at its first death ("gave up after -1 restarts"), and a
    # negative backoff or retry_after, or a nan, passed unnoticed.
    with pytest.raises(UsageError) as info:
        ModelLoader(tmp_path, start_timeout=-5, max_restarts=-1, backoff=-1.0, max_backoff=float("nan"), retry_after=-3)
    assert info.value.message == (
        "start_timeout must be a number of seconds above 0, got -5; max_restarts must be a whole number, 0 or more "
        "(0: never restart), got -1; backoff must be a number of seconds, 0 or more, got -1.0; max_backoff must be a "
        "number of seconds, 0 or more, got nan; retry_after must be a number of seconds, 0 or more (the Retry-After "
        "of E0106), got -3"
    )
    with pytest.raises(UsageError) as info:
        ModelLoader(tmp_path, start_timeout=0, max_restarts=True)  # type: ignore[arg-type]
    assert info.value.message == (
        "start_timeout must be a number of seconds above 0, got 0; max_restarts must be a whole number, 0 or more "
        "(0: never restart), got True"
    )
    with pytest.raises(UsageError) as info:
        ModelLoader(tmp_path, max_retry_after=float("inf"))
    assert info.value.message == (
        "max_retry_after must be a number of seconds, 0 or more (the longest Retry-After of E0106), got inf"
    )
    with pytest.raises(UsageError) as info:
        ModelLoader(tmp_path, unread_timeout=0)
    assert info.value.message == "unread_timeout must be a number of seconds above 0 or None, got 0"
    ModelLoader(tmp_path, max_restarts=0, backoff=0, max_backoff=0, retry_after=0).close()  # 0 means none: valid
    ModelLoader(tmp_path, unread_timeout=None).close()
