"""check-deps on environments of other interpreters than the running one, old ones included (real venvs).

A cold run (``--no-cache``) reads the probe's marshal output, a cached run its JSON: both must give the
same findings, on the oldest interpreter the probe supports that this machine has as on newer ones.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from autoglm_runtime.cli import main
from autoglm_runtime.testing.wheels import build_wheel
from autoglm_runtime.testing.zookeeper import fail_in_ci_else_skip

pytestmark = pytest.mark.slow

UV = Path(sys.executable).with_name("uv")
PYTHONS = {
    "3.8": "/root/.pyenv/versions/3.8.18/bin/python3.8",
    "3.13": "/root/.pyenv/versions/3.13.0/bin/python3.13",
}


def _venv(root: Path, python: str) -> tuple[Path, Path]:
    found = shutil.which(python)
    if found is None:
        fail_in_ci_else_skip(f"{python} is not installed")
    venv = root / "venv"
    subprocess.run([str(UV), "venv", "-q", "--python", str(found), str(venv)], check=True, capture_output=True)
    env_python = venv / "bin" / "python"
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(subprocess.check_output([str(env_python), "-I", "-c", where], text=True).strip())
    return env_python, site


def _check(python: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> list[tuple[str, str]]:
    code = main(["check-deps", "--python", str(python), "--json", *flags])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    return [(f["kind"], f["message"]) for f in out["findings"]]


@pytest.mark.parametrize("version", sorted(PYTHONS))
def test_every_planted_kind_is_found_cold_and_cached_on_this_interpreter(
    version: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    python, site = _venv(tmp_path, PYTHONS[version])
    wheels = tmp_path / "w"
    built = [
        build_wheel(wheels, "lib", "1.0", extras={"fast": ["speedups>=1"]}),
        build_wheel(wheels, "app", "1.0", requires=["lib>=2", "absent>=1", "lib[fast]"], headers=["License: X", "  "]),
        build_wheel(wheels, "jwt", "1.0", modules={"jwt/__init__.py": "X = 1\n"}),
        build_wheel(wheels, "PyJWT", "2.8.0", modules={"jwt/__init__.py": "X = 2\n"}),
        build_wheel(wheels, "cyc-a", "1.0", requires=["cyc-b"]),
        build_wheel(wheels, "cyc-b", "1.0", requires=["cyc-a"]),
    ]
    for wheel in built:
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(site)  # PyJWT after jwt: its file is the one on disk
    extra = tmp_path / "extra-site"
    with zipfile.ZipFile(build_wheel(tmp_path / "old", "lib", "0.9")) as zf:
        zf.extractall(extra)
    (site / "zz_extra.pth").write_text(f"{extra}\n")
    cold = _check(python, capsys, "--no-cache")
    assert sorted({kind for kind, _ in cold}) == [
        "cycle",
        "duplicate",
        "incompatible",
        "missing",
        "missing-extra",
        "shadowed-module",
    ]
    assert ("incompatible", "app 1.0 requires lib>=2, but lib 1.0 is installed") in cold
    assert _check(python, capsys) == cold  # the probe's JSON, written with its cache
    assert _check(python, capsys) == cold  # and read from that cache


@pytest.mark.parametrize("written", ["bye", "\nbye\n", "b"])
def test_output_printed_at_exit_after_the_probe_is_ignored_cold_and_cached(
    written: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As output printed at start-up (before the probe's mark) is: a .pth file or sitecustomize may register
    # an exit handler that prints, after the probe has written its description.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    python, site = _venv(tmp_path, PYTHONS["3.8"])
    with zipfile.ZipFile(build_wheel(tmp_path / "w", "app", "1.0", requires=["absent>=1"])) as zf:
        zf.extractall(site)
    (site / "zz_bye.pth").write_text(f"import atexit, sys; atexit.register(sys.stdout.write, {written!r})\n")
    expected = [("missing", "app 1.0 requires absent>=1, but absent is not installed")]
    assert _check(python, capsys, "--no-cache") == expected  # the probe's marshal output
    assert _check(python, capsys) == expected  # its JSON, written with its cache
    assert _check(python, capsys) == expected
