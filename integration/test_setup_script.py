"""scripts/_setup.sh's setup_venv with real virtual environments and pip: a project with a server and a dev extra,
set up as scripts/serve (server) and scripts/test (dev,server) do, switched in both orders.

Before, every run installed both extras (the test tools made a newcomer's first ``bash scripts/serve`` wait a
minute or two without a word); now each installs what it needs, once, and says what it installs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from autoglm_runtime.testing import build_wheel

SETUP = Path(__file__).resolve().parents[1] / "scripts" / "_setup.sh"

pytestmark = pytest.mark.slow

PYPROJECT = """\
[build-system]
requires = ["hatchling>=1.18"]
build-backend = "hatchling.build"

[project]
name = "tinyapp"
version = "1.0"

[project.optional-dependencies]
server = ["tinyserve"]
dev = ["tinydev"]

[tool.hatch.build.targets.wheel]
packages = ["tinyapp"]
"""

SERVER_LINES = [
    "== installing autoglm-runtime and what the example server needs ([server] in pyproject.toml) into .venv: a "
    "one-time step, repeated only when pyproject.toml changes",
]
TEST_LINES = [
    "== installing autoglm-runtime and the test tools (pytest, ruff, mypy and what the tests import) and what the "
    "example server needs ([dev,server] in pyproject.toml) into .venv: a one-time step, repeated only when "
    "pyproject.toml changes",
]


def _project(root: Path) -> Path:
    project = root / "project"
    (project / "tinyapp").mkdir(parents=True)
    (project / "tinyapp" / "__init__.py").write_text("")
    (project / "pyproject.toml").write_text(PYPROJECT)
    wheels = root / "wheels"
    build_wheel(wheels, "tinyserve", "1.0")
    build_wheel(wheels, "tinydev", "1.0")
    return project


def setup_venv(project: Path, extras: str, wheels: Path) -> list[str]:
    """The lines ``setup_venv EXTRAS`` printed, run as the scripts run it (``set -euo pipefail``)."""
    env = {**os.environ, "PYTHON": sys.executable, "PIP_FIND_LINKS": str(wheels)}
    done = subprocess.run(
        ["bash", "-c", 'set -euo pipefail; source "$0"; setup_venv "$1"', SETUP, extras],
        cwd=project, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # The last line says how long it took: its number varies.
    return [line.split(" (")[0] if line.startswith("== .venv is ready") else line for line in done.stdout.splitlines()]


def installed(project: Path) -> set[str]:
    done = subprocess.run(
        [str(project / ".venv" / "bin" / "python"), "-c", "import importlib.util as u; "
         "print(*[m for m in ('tinyserve', 'tinydev') if u.find_spec(m)])"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return set(done.stdout.split())


def _created(project: Path) -> str:
    version = subprocess.run([sys.executable, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    return f"== creating .venv with {version}: once, later runs reuse it"


def test_serve_then_test_then_serve_installs_each_extra_once(tmp_path: Path) -> None:
    project, wheels = _project(tmp_path), tmp_path / "wheels"
    assert setup_venv(project, "server", wheels) == [_created(project), *SERVER_LINES, "== .venv is ready"]
    assert installed(project) == {"tinyserve"}  # the test tools wait for scripts/test
    assert setup_venv(project, "server", wheels) == []
    assert setup_venv(project, "dev,server", wheels) == [*TEST_LINES, "== .venv is ready"]
    assert installed(project) == {"tinyserve", "tinydev"}
    assert setup_venv(project, "server", wheels) == []
    assert setup_venv(project, "dev,server", wheels) == []
    # A changed pyproject.toml: each installs its own again, serve without the test tools.
    (project / "pyproject.toml").write_text(PYPROJECT + "# changed\n")
    assert setup_venv(project, "server", wheels) == [*SERVER_LINES, "== .venv is ready"]
    assert setup_venv(project, "dev,server", wheels) == [*TEST_LINES, "== .venv is ready"]
    assert setup_venv(project, "server", wheels) == []


def test_test_then_serve_installs_once_and_a_new_interpreter_installs_again(tmp_path: Path) -> None:
    project, wheels = _project(tmp_path), tmp_path / "wheels"
    assert setup_venv(project, "dev,server", wheels) == [_created(project), *TEST_LINES, "== .venv is ready"]
    assert setup_venv(project, "server", wheels) == []
    assert installed(project) == {"tinyserve", "tinydev"}
    # .venv's interpreter gone (a Python upgrade removed it): its stamp no longer counts.
    for python in (project / ".venv" / "bin").glob("python*"):
        python.unlink()
    assert setup_venv(project, "server", wheels) == [_created(project), *SERVER_LINES, "== .venv is ready"]
