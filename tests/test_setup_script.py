"""scripts/_setup.sh's choice of what to install into .venv: scripts/serve needs the server extra, scripts/test
the test tools too, and switching between them in either order installs once, not at every run."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[1] / "scripts" / "_setup.sh"


def plan(stamp: str, hash_: str, wanted: str) -> str:
    done = subprocess.run(
        ["bash", "-c", 'set -euo pipefail; source "$0"; venv_install_plan "$1" "$2" "$3"', SETUP, stamp, hash_, wanted],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert done.stderr == ""
    return done.stdout.strip()


@pytest.mark.parametrize(
    ("stamp", "wanted", "install"),
    [
        pytest.param("", "server", "server", id="fresh .venv, serve: the server extra alone"),
        pytest.param("", "dev,server", "dev,server", id="fresh .venv, test: the test tools too"),
        pytest.param("h server", "server", "", id="serve again: nothing"),
        pytest.param("h server", "dev,server", "dev,server", id="test after serve: the test tools added"),
        pytest.param("h dev,server", "server", "", id="serve after test: its extra is there"),
        pytest.param("h dev,server", "dev,server", "", id="test again: nothing"),
        pytest.param("h dev", "server", "dev,server", id="what was installed is kept"),
        pytest.param("h", "server", "", id="a stamp from before the extras were recorded: dev,server"),
        pytest.param("h", "dev,server", "", id="the same for test"),
        pytest.param("old dev,server", "server", "server", id="pyproject.toml changed: serve installs its own"),
        pytest.param("old server", "dev,server", "dev,server", id="pyproject.toml changed: test installs its own"),
        pytest.param("old", "server", "server", id="an old bare stamp of another pyproject.toml"),
    ],
)
def test_the_install_plan_follows_the_stamp(stamp: str, wanted: str, install: str) -> None:
    assert plan(stamp, "h", wanted) == install
