"""The subinterpreter backend on the pyenv 3.13 interpreter, and auto's fallback to processes.

The refusal case uses a real single-phase-init extension of CPython 3.13's standard library, ``_curses``:
importing it in an isolated subinterpreter raises "module _curses does not support loading in
subinterpreters", exactly as numpy or pydantic-core do. These tests need /root/.pyenv/versions/3.13.0 and
are skipped, with that reason, on machines without it (also under CI: the interpreter is pyenv-only).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autoglm_runtime.errors import BackendUnsupportedError, ModelTimeoutError
from autoglm_runtime.isolation import ModelLoader
from autoglm_runtime.isolation.envkey import interpreter_info
from autoglm_runtime.isolation.subinterp import resolve_backend

PY313 = Path("/root/.pyenv/versions/3.13.0/bin/python3.13")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PY313.exists(), reason=f"needs the pyenv interpreter {PY313} (absent on this machine)"),
]

WHERE_MODEL = """
import _interpreters
import conflictlib

class Model:
    def where(self):
        return {"current": _interpreters.get_current()[0], "main": _interpreters.get_main()[0],
                "version": conflictlib.VERSION}

def load():
    return Model()
"""

CURSES_MODEL = """
import conflictlib

class Model:
    def curses_loaded(self):
        import _curses
        return _curses.__name__

def load():
    import _curses
    return Model()
"""


@pytest.fixture(scope="module")
def curses_available() -> None:
    done = subprocess.run([str(PY313), "-I", "-c", "import _curses"], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"{PY313} has no _curses extension to refuse subinterpreters with")


@pytest.fixture(scope="module")
def loader(wheelhouse: Path, env_root: Path) -> Iterator[ModelLoader]:
    with ModelLoader(env_root, wheelhouse=wheelhouse, offline=True, backend="auto", python=PY313) as loader:
        yield loader


def test_auto_prefers_subinterpreters_on_313() -> None:
    assert resolve_backend("auto", interpreter_info(PY313)) == "subinterp"


def test_pure_python_model_runs_in_a_subinterpreter(loader: ModelLoader, make_model: Any) -> None:
    model = loader.load(make_model("sub-pure", WHERE_MODEL, ["conflictlib==2.0"]))
    assert model.backend == "subinterp"
    where = model.call("where", timeout=30)
    assert where["current"] != where["main"]
    assert where["version"] == "2.0"
    assert model.versions["conflictlib"]["location"].startswith(str(model.environment.path))
    assert "/lib/python3.13/site-packages/" in model.versions["conflictlib"]["location"]
    assert model.health()["backend"] == "subinterp"


def test_explicit_subinterp_refused_by_an_extension(
    wheelhouse: Path, env_root: Path, make_model: Any, curses_available: None
) -> None:
    directory = make_model("sub-curses", CURSES_MODEL)
    with ModelLoader(env_root, wheelhouse=wheelhouse, offline=True, backend="subinterp", python=PY313) as loader:
        with pytest.raises(BackendUnsupportedError) as info:
            loader.load(directory)
        assert info.value.code == "E0104"
        assert info.value.message == (
            "model 'sub-curses' cannot run in a subinterpreter: ImportError: module _curses does not support "
            "loading in subinterpreters; use backend='process' (or 'auto', which falls back to it)"
        )
        assert loader.models == {}


def test_auto_falls_back_to_processes_when_refused(
    loader: ModelLoader, make_model: Any, curses_available: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="autoglm_runtime.isolation.loader")
    model = loader.load(make_model("auto-curses", CURSES_MODEL))
    assert model.backend == "process"
    assert model.call("curses_loaded", timeout=30) == "_curses"
    fallbacks = [r for r in caplog.records if getattr(r, "error_code", None) == "E0104"]
    assert [r.getMessage().split(" (")[0] for r in fallbacks] == ["model auto-curses refuses subinterpreters"]


def test_subinterp_needs_313(wheelhouse: Path, env_root: Path, make_model: Any) -> None:
    loader = ModelLoader(env_root, wheelhouse=wheelhouse, offline=True, backend="subinterp")
    with loader, pytest.raises(BackendUnsupportedError) as info:
        loader.load(make_model("sub-on-host", WHERE_MODEL))
    assert info.value.message.startswith("the subinterpreter backend needs CPython 3.13+ with the _interpreters module")


HANG_MODEL = """
import threading

class Model:
    def hang(self):
        threading.Event().wait()

    def ping(self):
        return "pong"

def load():
    return Model()
"""


def test_subinterp_timeout_restarts_and_close_leaves_nothing(
    wheelhouse: Path, env_root: Path, make_model: Any, wait_gone: Any
) -> None:
    loader = ModelLoader(env_root, wheelhouse=wheelhouse, offline=True, backend="subinterp", python=PY313)
    model = loader.load(make_model("sub-hang", HANG_MODEL))
    first_pid = model.health()["pid"]
    with pytest.raises(ModelTimeoutError):
        model.call("hang", timeout=0.5)
    assert model.call("ping", timeout=30) == "pong"
    second_pid = model.health()["pid"]
    assert second_pid != first_pid
    assert model.backend == "subinterp"
    loader.close()
    assert wait_gone(first_pid, 10.0)
    assert wait_gone(second_pid, 10.0)
