"""The probe's per-distribution cache: reused while a metadata directory is unchanged, never after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from autoglm_runtime.cli import main
from autoglm_runtime.cli.check_deps import cache_file
from autoglm_runtime.testing.wheels import build_wheel


@pytest.fixture
def venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    site = next((env / "lib").glob("python3*/site-packages"))
    for wheel in (
        build_wheel(tmp_path / "w", "app", "1.0", requires=["lib>=2"]),
        build_wheel(tmp_path / "w", "lib", "2.0"),
    ):
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(site)
    return env / "bin" / "python", site


def _run(python: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> list[str]:
    main(["check-deps", "--python", str(python), "--json", *extra])
    return [f["message"] for f in json.loads(capsys.readouterr().out)["findings"]]


def test_the_cache_is_used_while_unchanged_and_invalidated_by_any_change(
    venv: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    python, site = venv
    assert _run(python, capsys) == []
    cached = json.loads(cache_file(str(python)).read_text())
    assert f"{site}/app-1.0.dist-info" in cached["dists"]
    assert _run(python, capsys) == []  # warm
    # METADATA rewritten in place (same directory, same size): its own mtime changes.
    meta = site / "app-1.0.dist-info" / "METADATA"
    meta.write_text(meta.read_text().replace("lib>=2", "lib>=3"))
    os.utime(meta, ns=(meta.stat().st_atime_ns, meta.stat().st_mtime_ns + 1_000_000))
    assert _run(python, capsys) == ["app 1.0 requires lib>=3, but lib 2.0 is installed"]
    # A copy of lib left behind in the same directory: new metadata directory, new answer.
    build = build_wheel(site.parent / "w2", "lib", "1.0")
    with zipfile.ZipFile(build) as zf:
        for name in zf.namelist():
            if ".dist-info/" in name:
                zf.extract(name, site)
    found = _run(python, capsys)
    assert any(m.startswith("lib is installed 2 times on the path") for m in found)
    assert _run(python, capsys, "--no-cache") == found
