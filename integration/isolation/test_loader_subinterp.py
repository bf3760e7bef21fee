"""The subinterpreter backend on the pyenv 3.13 (and 3.12) interpreters, and auto's fallback to processes.

The refusal case uses a real single-phase-init extension of CPython's standard library, ``_curses``:
importing it in an isolated subinterpreter raises "module _curses does not support loading in
subinterpreters", exactly as numpy or pydantic-core do. Each interpreter's tests are skipped, with the
reason, on machines without that pyenv interpreter (also under CI: these interpreters are pyenv-only).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from autoglm_runtime.errors import BackendUnsupportedError, ModelLoadError, ModelTimeoutError
from autoglm_runtime.isolation import ModelLoader
from autoglm_runtime.isolation.envs.key import interpreter_info
from autoglm_runtime.isolation.workers.subinterp import resolve_backend
from autoglm_runtime.testing.zookeeper import fail_in_ci_else_skip

PY313 = Path("/root/.pyenv/versions/3.13.0/bin/python3.13")
PY312 = Path("/root/.pyenv/versions/3.12.1/bin/python3.12")
pytestmark = pytest.mark.slow
Fallbacks = Callable[[], list[tuple[str, str]]]

WHERE_MODEL = """
import conflictlib
try:
    import _interpreters
    def _ids():
        return _interpreters.get_current()[0], _interpreters.get_main()[0]
except ImportError:  # 3.12
    import _xxsubinterpreters as _interpreters
    def _ids():
        return int(_interpreters.get_current()), int(_interpreters.get_main())

class Model:
    def where(self):
        current, main = _ids()
        return {"current": current, "main": main, "version": conflictlib.VERSION}

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

LAZY_CURSES_MODEL = """
class Model:
    def curses(self):
        import _curses
        return True

def load():
    return Model()
"""

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


DAEMON_MODEL = """
import threading

class Model:
    def ping(self):
        return "pong"

def load():
    threading.Thread(target=threading.Event().wait, daemon=True).start()
    return Model()
"""

# Fails in a subinterpreter with a message nobody listed as a refusal: auto must still retry with processes.
MAIN_ONLY_MODEL = WHERE_MODEL.replace(
    "def load():\n    return Model()",
    "def load():\n"
    "    current, main = _ids()\n"
    "    if current != main:\n"
    "        raise RuntimeError('this model only runs in the main interpreter')\n"
    "    return Model()",
)

BROKEN_MODEL = """
def load():
    raise RuntimeError("no weights at /models/x")
"""

# What CPython says when a subinterpreter refuses something.
CURSES_REFUSAL = "ImportError: module _curses does not support loading in subinterpreters"
DAEMON_REFUSAL = "RuntimeError: daemon threads are disabled in this (sub)interpreter"


@pytest.fixture(scope="module", params=[PY313, PY312], ids=["py313", "py312"])
def python(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    if not path.exists():
        fail_in_ci_else_skip(
            f"needs the pyenv interpreter {path}: install it with 'pyenv install {path.parent.parent.name}'"
        )
    return path


@pytest.fixture(scope="module")
def curses_available(python: Path) -> None:
    done = subprocess.run([str(python), "-I", "-c", "import _curses"], capture_output=True, check=False)
    if done.returncode != 0:
        fail_in_ci_else_skip(f"{python} has no _curses extension to refuse subinterpreters with")


@pytest.fixture(scope="module")
def loader(wheelhouse: Path, env_root: Path, python: Path) -> Iterator[ModelLoader]:
    with ModelLoader(env_root, wheelhouse=wheelhouse, offline=True, backend="auto", python=python) as loader:
        yield loader


@pytest.fixture
def subinterp_loader(wheelhouse: Path, env_root: Path, python: Path) -> Iterator[ModelLoader]:
    """A loader of the test's own that insists on the subinterpreter backend (no fallback)."""
    with ModelLoader(env_root, wheelhouse=wheelhouse, offline=True, backend="subinterp", python=python) as loader:
        yield loader


@pytest.fixture
def fallbacks(caplog: pytest.LogCaptureFixture) -> Fallbacks:
    """``fallbacks()``: the (level, message) of every E0104 record the loader has logged so far."""
    caplog.set_level("INFO", logger="autoglm_runtime.isolation.loader")
    return lambda: [(r.levelname, r.getMessage()) for r in caplog.records if getattr(r, "error_code", None) == "E0104"]


def _name(base: str, python: Path) -> str:
    return f"{base}-{python.name.replace('.', '')}"


def _refused(name: str, reason: str) -> str:
    """The message of a load the subinterpreter backend refuses for ``reason``."""
    return (
        f"model '{name}' cannot run in a subinterpreter: {reason}; use backend='process' (or 'auto', which falls "
        "back to it)"
    )


def _fallback(name: str, error: str) -> str:
    """The warning auto logs when it retries a model with processes after a subinterpreter failed with ``error``."""
    return f"model {name} failed to load in a subinterpreter ({error}); retrying with the process backend"


def test_auto_prefers_subinterpreters(python: Path) -> None:
    assert resolve_backend("auto", interpreter_info(python)) == "subinterp"


def test_pure_python_model_runs_in_a_subinterpreter(loader: ModelLoader, make_model: Any, python: Path) -> None:
    model = loader.load(make_model(_name("sub-pure", python), WHERE_MODEL, ["conflictlib==2.0"]))
    assert model.backend == "subinterp"
    where = model.call("where", timeout=30)
    assert where["current"] != where["main"]
    assert where["version"] == "2.0"
    location = model.versions["conflictlib"]["location"]
    assert location.startswith(str(model.environment.path))
    assert f"/lib/{python.name}/site-packages/" in location
    assert model.health()["backend"] == "subinterp"


def test_explicit_subinterp_refused_by_an_extension(
    subinterp_loader: ModelLoader, make_model: Any, python: Path, curses_available: None
) -> None:
    name = _name("sub-curses", python)
    with pytest.raises(BackendUnsupportedError) as info:
        subinterp_loader.load(make_model(name, CURSES_MODEL))
    assert info.value.code == "E0104"
    assert info.value.message == _refused(name, CURSES_REFUSAL)
    assert subinterp_loader.models == {}


def test_auto_falls_back_to_processes_when_refused(
    loader: ModelLoader, make_model: Any, python: Path, curses_available: None, fallbacks: Fallbacks
) -> None:
    name = _name("auto-curses", python)
    model = loader.load(make_model(name, CURSES_MODEL))
    assert model.backend == "process"
    assert model.call("curses_loaded", timeout=30) == "_curses"
    assert fallbacks() == [("WARNING", _fallback(name, _refused(name, CURSES_REFUSAL)))]


def test_extension_imported_during_a_call_is_refused(
    loader: ModelLoader, make_model: Any, python: Path, curses_available: None
) -> None:
    name = _name("lazy-curses", python)
    model = loader.load(make_model(name, LAZY_CURSES_MODEL, []))
    assert model.backend == "subinterp"
    with pytest.raises(BackendUnsupportedError) as info:
        model.call("curses", timeout=30)
    assert info.value.message == (
        f"model '{name}' cannot run in a subinterpreter: {CURSES_REFUSAL}; use backend='process'"
    )
    assert model.health()["state"] == "ready"


def test_subinterp_timeout_restarts_and_close_leaves_nothing(
    subinterp_loader: ModelLoader, make_model: Any, python: Path, wait_gone: Any
) -> None:
    model = subinterp_loader.load(make_model(_name("sub-hang", python), HANG_MODEL))
    first_pid = model.health()["pid"]
    with pytest.raises(ModelTimeoutError):
        model.call("hang", timeout=0.5)
    assert model.call("ping", timeout=30) == "pong"
    second_pid = model.health()["pid"]
    assert second_pid != first_pid
    assert model.backend == "subinterp"
    subinterp_loader.close()
    assert wait_gone(first_pid, 10.0)
    assert wait_gone(second_pid, 10.0)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="the host interpreter itself supports subinterpreters")
def test_subinterp_needs_312(wheelhouse: Path, env_root: Path, make_model: Any) -> None:
    loader = ModelLoader(env_root, wheelhouse=wheelhouse, offline=True, backend="subinterp")
    with loader, pytest.raises(BackendUnsupportedError) as info:
        loader.load(make_model("sub-on-host", WHERE_MODEL))
    assert info.value.message.startswith("the subinterpreter backend needs CPython 3.12+ (isolated subinterpreters)")


def test_auto_falls_back_when_a_model_starts_a_daemon_thread(
    loader: ModelLoader, make_model: Any, python: Path, fallbacks: Fallbacks
) -> None:
    name = _name("auto-daemon", python)
    model = loader.load(make_model(name, DAEMON_MODEL))
    assert model.backend == "process"
    assert model.call("ping", timeout=30) == "pong"
    assert fallbacks() == [("WARNING", _fallback(name, _refused(name, DAEMON_REFUSAL)))]


def test_explicit_subinterp_refuses_a_daemon_thread(
    subinterp_loader: ModelLoader, make_model: Any, python: Path
) -> None:
    name = _name("sub-daemon", python)
    with pytest.raises(BackendUnsupportedError) as info:
        subinterp_loader.load(make_model(name, DAEMON_MODEL))
    assert info.value.message == _refused(name, DAEMON_REFUSAL)


def test_auto_retries_any_subinterpreter_failure_with_processes(
    loader: ModelLoader, make_model: Any, python: Path, fallbacks: Fallbacks
) -> None:
    name = _name("auto-main-only", python)
    model = loader.load(make_model(name, MAIN_ONLY_MODEL))
    assert model.backend == "process"
    assert model.call("where", timeout=30)["version"] == "1.0"
    module = name.replace("-", "_") + "_model"
    error = (
        f"model '{name}' failed to load its entrypoint {module}:load: RuntimeError: this model only runs in the main "
        "interpreter"
    )
    assert fallbacks() == [("WARNING", _fallback(name, error))]


def test_auto_reports_the_process_error_and_the_subinterpreter_error(
    loader: ModelLoader, make_model: Any, python: Path
) -> None:
    name = _name("auto-broken", python)
    module = name.replace("-", "_") + "_model"
    with pytest.raises(ModelLoadError) as info:
        loader.load(make_model(name, BROKEN_MODEL))
    lines = info.value.message.splitlines()
    assert lines[0] == (
        f"model '{name}' failed to load its entrypoint {module}:load: RuntimeError: no weights at /models/x"
    )
    assert lines[-1] == (
        f"(before that, loading it in a subinterpreter failed too: E0101: model '{name}' failed to load its "
        f"entrypoint {module}:load: RuntimeError: no weights at /models/x)"
    )
    assert name not in loader.models


SERVING_MODEL = """
import threading

class Model:
    def __init__(self):
        self.barrier = threading.Barrier(2, timeout=60)

    def meet(self, key):
        self.barrier.wait()  # returns only when two calls run at once
        return key

    def words(self, text):
        for word in text.split():
            yield word

    async def shout(self, text):
        return text.upper()

    def kind(self, value):
        return type(value).__name__

    def echo(self, value):
        return value

def load():
    return Model()
"""


def test_a_subinterpreter_serves_streams_binary_payloads_and_concurrent_calls(
    loader: ModelLoader, make_model: Any, python: Path
) -> None:
    model = loader.load(make_model(_name("si-serving", python), SERVING_MODEL), concurrency="threads", max_inflight=2)
    try:
        assert model.backend == "subinterp"
        assert list(model.stream("words", "one two three", timeout=60)) == ["one", "two", "three"]
        assert model.call("shout", "hi", timeout=60) == "HI"  # an async method of a model served on threads
        assert model.call("echo", [b"\x00", bytearray(b"\x01")], timeout=60) == [b"\x00", bytearray(b"\x01")]
        import numpy as np

        assert model.call("kind", np.zeros(2), timeout=60) == "ArrayValue"  # no numpy in the model's environment
        assert model.call("echo", np.arange(3, dtype="<i4"), timeout=60).tolist() == [0, 1, 2]
        with ThreadPoolExecutor(2, thread_name_prefix="test-caller") as pool:
            assert list(pool.map(lambda key: model.call("meet", key, timeout=60), ["a", "b"])) == ["a", "b"]
    finally:
        model.close()
