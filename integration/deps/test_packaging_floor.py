"""check-deps on the oldest ``packaging`` the project accepts (``packaging>=23.0`` in pyproject.toml).

``packaging`` 23 to 25 raise ``InvalidVersion`` where 26 quietly answers ``False`` (a ``SpecifierSet``
asked about a version that is not PEP 440). The check runs in a subprocess whose ``sys.path`` starts with
``packaging`` 23.2, against a real environment holding such a version, and must report exactly what it
reports with the ``packaging`` of this process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from integration._helpers import UV, uv_pip_install

import autoglm_runtime
from autoglm_runtime.cli import main

pytestmark = pytest.mark.slow

FLOOR = "23.2"
# The code under test is this process's autoglm_runtime (a worktree's src, say), not the one -I would import.
RUNNER = """
import sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import packaging
assert packaging.__version__ == sys.argv[3], packaging.__file__
from autoglm_runtime.cli import main
sys.exit(main(sys.argv[4:]))
"""
OURS = str(Path(autoglm_runtime.__file__).parent.parent)


@pytest.fixture(scope="module")
def old_packaging(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding only ``packaging`` at the floor version (from uv's cache, else the index)."""
    target = tmp_path_factory.mktemp("packaging-floor")
    uv_pip_install("--target", target, f"packaging=={FLOOR}")
    return target


def _dist(site: Path, name: str, metadata: str) -> None:
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\n{metadata}")


@pytest.fixture(scope="module")
def odd_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[Path]]:
    """A venv with ``bad 1.0-foo-bar`` (not PEP 440), ``user`` (requires ``bad>=0.5`` and ``nover``), ``nover``
    (no version), ``rc 1.0.0-RC1`` (not in normal form) with two distributions requiring it by ``===``, and two
    models: one pinning ``bad===1.0-foo-bar``, one needing ``bad>=2``."""
    root = tmp_path_factory.mktemp("odd-versions")
    subprocess.run([str(UV), "venv", "-q", "--python", sys.executable, str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    _dist(site, "bad", "Version: 1.0-foo-bar\n")
    _dist(site, "nover", "")
    _dist(site, "user", "Version: 1.0\nRequires-Dist: bad>=0.5\nRequires-Dist: nover\n")
    # ``===`` compares the version as written (23 to 25 compare its normal form, ``1.0.0rc1``)
    _dist(site, "rc", "Version: 1.0.0-RC1\n")
    _dist(site, "rc-user", "Version: 1.0\nRequires-Dist: rc===1.0.0-RC1\nRequires-Dist: rc>=1.0.0rc1\n")
    _dist(site, "rc-normal", "Version: 1.0\nRequires-Dist: rc===1.0.0rc1\n")
    models = []
    for name, requirement in (("pinned", "bad===1.0-foo-bar"), ("newer", "bad>=2")):
        model = root / name
        model.mkdir()
        (model / "model.toml").write_text(
            f'[model]\nname = "{name}"\nentrypoint = "m:load"\nrequirements = ["{requirement}"]\n'
        )
        models.append(model)
    return python, site, models


def test_check_deps_on_the_packaging_floor_equals_the_current_packaging(
    old_packaging: Path, odd_env: tuple[Path, Path, list[Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    python, site, models = odd_env
    argv = ["check-deps", *map(str, models), "--python", str(python), "--json"]
    done = subprocess.run(
        [sys.executable, "-I", "-c", RUNNER, str(old_packaging), OURS, FLOOR, *argv],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stderr) == (1, "")
    assert main(argv) == 1
    current = json.loads(capsys.readouterr().out)
    assert json.loads(done.stdout) == current
    assert [(f["kind"], f["models"], f["message"]) for f in current["findings"]] == [
        (
            "cross-model",
            ["newer", "pinned"],
            "model 'pinned' needs bad===1.0-foo-bar but model 'newer' needs bad>=2: they cannot share one "
            "environment; load them isolated",
        ),
        (
            "model-vs-host",
            ["newer"],
            "model 'newer' needs bad>=2 but the environment has bad 1.0-foo-bar; no installed distribution "
            "excludes bad>=2 (user 1.0 (bad>=0.5) accepts it), so bad can be changed to match; model 'pinned' needs "
            "bad===1.0-foo-bar, so model 'newer' cannot share an environment with it",
        ),
        ("incompatible", [], "rc-normal 1.0 requires rc===1.0.0rc1, but rc 1.0.0-RC1 is installed"),
        ("incompatible", [], "user 1.0 requires bad>=0.5, but bad 1.0-foo-bar is installed"),
        (
            "invalid-metadata",
            [],
            f"invalid metadata in {site / 'bad-1.0.dist-info'}: bad 1.0-foo-bar has an invalid version "
            "'1.0-foo-bar' (not PEP 440)",
        ),
        ("invalid-metadata", [], f"invalid metadata in {site / 'nover-1.0.dist-info'}: METADATA has no Version field"),
    ]
