"""Fixtures for the isolated loader's integration tests: a real offline wheelhouse and model directories.

Every distribution comes from ``build_wheel`` into a temporary wheelhouse; environments are built with uv
offline (``--no-index --find-links``). Environments are shared per test module (one env root per module),
which keeps the suite within its time budget.
"""

from __future__ import annotations

import io
import logging
import os
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from autoglm_runtime.isolation import ModelLoader
from autoglm_runtime.logging import configure_json_logging
from autoglm_runtime.testing.wheels import build_wheel

PY313 = Path("/root/.pyenv/versions/3.13.0/bin/python3.13")
MakeModel = Callable[..., Path]


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """conflictlib 1.0 and 2.0 (each reports its version as ``conflictlib.VERSION``), and shadowlib 1.0,
    which (wrongly) ships a top-level ``conflictlib`` package too."""
    path = tmp_path_factory.mktemp("wheels")
    for version in ("1.0", "2.0"):
        build_wheel(path, "conflictlib", version, modules={"conflictlib/__init__.py": f"VERSION = {version!r}\n"})
    build_wheel(path, "shadowlib", "1.0", modules={"conflictlib/__init__.py": "VERSION = 'shadow'\n"})
    return path


@pytest.fixture(scope="module")
def numpy_wheelhouse(wheelhouse: Path) -> Path:
    """``wheelhouse`` plus a wheel of the numpy installed on the host, repacked from its installed files (no
    download: a model environment gets the very numpy the host runs)."""
    from importlib import metadata

    dist = metadata.distribution("numpy")
    modules: dict[str, str | bytes] = {}
    for file in dist.files or ():
        top = str(file).split("/", 1)[0]
        if top in ("numpy", "numpy.libs") and not str(file).endswith(".pyc"):
            modules[str(file)] = Path(str(file.locate())).read_bytes()
    build_wheel(wheelhouse, "numpy", dist.version, modules=modules, top_level=["numpy"])
    return wheelhouse


@pytest.fixture(scope="module")
def loader(wheelhouse: Path, env_root: Path) -> Iterator[ModelLoader]:
    """A process-backend loader without heartbeats, for the module (a module needing other options defines its own
    ``loader``)."""
    with ModelLoader(env_root, wheelhouse=wheelhouse, offline=True, backend="process", heartbeat_interval=None) as one:
        yield one


@pytest.fixture(scope="module")
def env_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("envs")


@pytest.fixture(scope="module")
def make_model(tmp_path_factory: pytest.TempPathFactory) -> MakeModel:
    """``make_model(name, code, requirements=("conflictlib==1.0",))`` writes a model directory.

    ``code`` is the body of module ``<name>_model`` and must define ``load()``; the manifest's
    entrypoint is ``<name>_model:load``.
    """
    base = tmp_path_factory.mktemp("models")

    def make(name: str, code: str, requirements: Sequence[str] = ("conflictlib==1.0",)) -> Path:
        directory = base / name
        directory.mkdir()
        module = f"{name.replace('-', '_')}_model"
        reqs = ", ".join(f'"{r}"' for r in requirements)
        (directory / "model.toml").write_text(
            f'[model]\nname = "{name}"\nentrypoint = "{module}:load"\nrequirements = [{reqs}]\n', encoding="utf-8"
        )
        (directory / f"{module}.py").write_text(textwrap.dedent(code), encoding="utf-8")
        return directory

    return make


def _gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie waiting for init to reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@pytest.fixture
def wait_gone() -> Callable[[int, float], bool]:
    """``wait_gone(pid, timeout)``: polls until ``pid`` no longer runs; False if it still runs at the deadline."""

    def wait(pid: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while not _gone(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    return wait


@pytest.fixture
def no_leaked_children() -> Iterator[None]:
    """Fails the test if a direct child process of the test process outlives it."""
    before = set(_children())
    yield
    leaked = [pid for pid in set(_children()) - before if not _gone(pid)]
    assert leaked == [], f"child processes left running: {leaked}"


def _children() -> list[int]:
    me = os.getpid()
    tasks = Path(f"/proc/{me}/task")
    pids: list[int] = []
    for task in tasks.iterdir():
        children = task / "children"
        if children.exists():
            pids += [int(p) for p in children.read_text().split()]
    return pids


def repack_installed(wheelhouse: Path, name: str) -> Path:
    """A wheel of the distribution ``name`` as installed on the host, repacked from its installed files and entry
    points (no download: a model environment gets the very code the host runs)."""
    from importlib import metadata

    dist = metadata.distribution(name)
    dist_info = f"{name.replace('-', '_')}-{dist.version}.dist-info"
    modules: dict[str, str | bytes] = {}
    for file in dist.files or ():
        path = str(file)
        if path.startswith("..") or "__pycache__" in path or path.endswith(".pyc"):
            continue
        if ".dist-info/" in path:
            if path.endswith("/entry_points.txt"):
                modules[f"{dist_info}/entry_points.txt"] = Path(str(file.locate())).read_bytes()
            continue
        modules[path] = Path(str(file.locate())).read_bytes()
    requires = [r for r in dist.requires or () if "extra ==" not in r]
    tops = {p.split("/", 1)[0].removesuffix(".py") for p in modules if ".dist-info/" not in p}
    return build_wheel(wheelhouse, name, dist.version, modules=modules, requires=requires, top_level=sorted(tops))


@pytest.fixture(scope="module")
def otel_wheelhouse(wheelhouse: Path) -> Path:
    """``wheelhouse`` plus the host's opentelemetry-api and -sdk (and what they need), repacked: for models that
    make spans of their own."""
    for name in ("typing-extensions", "opentelemetry-api", "opentelemetry-semantic-conventions", "opentelemetry-sdk"):
        repack_installed(wheelhouse, name)
    return wheelhouse


@pytest.fixture
def worker_log() -> Iterator[io.StringIO]:
    """The host's JSON log of what workers write (the output pump's logger)."""
    stream = io.StringIO()
    handler = configure_json_logging(logging.INFO, stream=stream, logger="autoglm_runtime.isolation.workers.process")
    try:
        yield stream
    finally:
        logging.getLogger("autoglm_runtime.isolation.workers.process").removeHandler(handler)
