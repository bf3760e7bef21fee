"""The build's check-deps on real uv environments: its in-process description equals a real probe's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from autoglm_runtime.deps import load_manifest
from autoglm_runtime.deps.check import check_environment, check_probed
from autoglm_runtime.deps.probe import probe_environment
from autoglm_runtime.errors import DependencyConflictError
from autoglm_runtime.isolation import EnvironmentBuilder
from autoglm_runtime.isolation.envs import _fastprobe as _venvprobe
from autoglm_runtime.isolation.envs._fastprobe import describe_venv, facts_key, probe_venv
from autoglm_runtime.testing.wheels import build_wheel
from autoglm_runtime.testing.zookeeper import fail_in_ci_else_skip

pytestmark = pytest.mark.slow

PYTHONS = {
    "host": Path(sys.executable),
    "py312": Path("/root/.pyenv/versions/3.12.1/bin/python3.12"),
    "py313": Path("/root/.pyenv/versions/3.13.0/bin/python3.13"),
}
MODEL = "def load():\n    return object()\n"


@pytest.fixture(scope="module")
def rich_wheelhouse(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared wheelhouse plus distributions with requirements, extras, markers and Requires-Python."""
    path = tmp_path_factory.mktemp("rich")
    for wheel in wheelhouse.iterdir():
        (path / wheel.name).write_bytes(wheel.read_bytes())
    build_wheel(path, "App.Core", "1.0", requires=["dep>=1", "conflictlib<3"], extras={"fast": ["speedup>=2"]})
    build_wheel(path, "dep", "1.5", requires=["win-only; sys_platform == 'win32'"], requires_python=">=3.8")
    build_wheel(path, "speedup", "2.1")
    build_wheel(
        path,
        "pthlib",
        "1.0",
        modules={
            "pthlib.pth": "pthlib_extra\n",
            "pthlib_extra/conflictlib/__init__.py": "VERSION = 'hidden'\n",
            "pthlib_extra/conflictlib-2.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: conflictlib\n"
            "Version: 2.0\n",
        },
    )
    return path


@pytest.fixture(params=list(PYTHONS), ids=list(PYTHONS))
def python(request: pytest.FixtureRequest) -> Path:
    path = PYTHONS[request.param]
    if not path.exists():
        fail_in_ci_else_skip(
            f"needs the pyenv interpreter {path}: install it with 'pyenv install {path.parent.parent.name}'"
        )
    return path


def test_built_environment_is_described_as_a_real_probe_does(
    python: Path, rich_wheelhouse: Path, tmp_path: Path, make_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_venvprobe, "_CACHE", {})
    model = load_manifest(
        make_model(
            f"rich-{python.name.replace('.', '')}", MODEL, ["app-core[fast]==1.0", "conflictlib==1.0", "dep>=1.2"]
        )
    )
    builder = EnvironmentBuilder(tmp_path / "envs", python=python, wheelhouse=rich_wheelhouse, offline=True)
    env = builder.ensure(model)
    key = facts_key(env.python)
    assert key is not None
    assert list(_venvprobe._CACHE) == [key]  # the build's check learnt the facts
    described = describe_venv(env.python, _venvprobe._CACHE[key])
    real = probe_environment(env.python)
    assert described == real
    assert sorted(d.key for d in real.dists if d.location == real.path[-1]) == [
        "app-core",
        "conflictlib",
        "dep",
        "speedup",
    ]
    assert probe_venv(env.python) == real
    fast_report = check_probed(probe_venv(env.python), [model]).to_json()
    assert fast_report == check_environment(env.python, models=[model]).to_json()
    assert fast_report["ok"] is True


def test_a_pth_file_adding_a_second_copy_fails_the_build(
    rich_wheelhouse: Path, tmp_path: Path, make_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_venvprobe, "_CACHE", {})
    model = load_manifest(make_model("pth-hidden", MODEL, ["conflictlib==1.0", "pthlib==1.0"]))
    root = tmp_path / "envs"
    builder = EnvironmentBuilder(root, wheelhouse=rich_wheelhouse, offline=True)
    with pytest.raises(DependencyConflictError) as info:
        builder.ensure(model)
    message = info.value.message
    assert message.startswith("the environment built for model 'pth-hidden' fails check-deps; it was not kept:\n")
    assert "\n  [duplicate] conflictlib is installed 2 times on the path:" in message
    assert message.endswith("\nE0101 check-deps: 1 problem (3 distributions, 1 model); exit 1\n")
    assert list(root.iterdir()) == []
