"""check-deps on an environment installed by uv from the package index: real metadata, real markers and extras.

Model 'a' needs ``kubernetes==28.1.0`` (which requires ``urllib3<2.0,>=1.24.2``), model 'b' needs
``types-requests==2.32.0.20240914`` (which requires ``urllib3>=2``) and ``httpx[socks]==0.27.0`` (whose extra
'socks' requires ``socksio==1.*``). The environment is what installing 'a' and then forcing in 'b''s stubs
leaves: urllib3 1.26, so the models conflict only through what they pull in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from integration._helpers import UV, uv_pip_install
from tests.deps._check_data import model_dir

from autoglm_runtime.cli import main

pytestmark = pytest.mark.slow

STUBS = "types-requests==2.32.0.20240914"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("real-wheels")
    venv = root / "venv"
    subprocess.run([str(UV), "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    python = venv / "bin" / "python"
    uv_pip_install("--python", python, "kubernetes==28.1.0", "httpx[socks]==0.27.0")
    uv_pip_install("--python", python, "--no-deps", STUBS)
    return python, model_dir(root, "a", "kubernetes==28.1.0"), model_dir(root, "b", STUBS, "httpx[socks]==0.27.0")


def _run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, dict[str, object]]:
    code = main(["check-deps", *map(str, args), "--json", "--no-cache"])
    return code, json.loads(capsys.readouterr().out)


def test_models_conflicting_through_what_they_pull_in_are_named_with_both_chains(
    installed: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    python, a, b = installed
    code, out = _run(capsys, a, b, "--python", python)
    assert code == 1
    findings = out["findings"]
    assert isinstance(findings, list)
    urllib3 = next(f for f in findings if f["packages"] == ["types-requests", "urllib3"])
    version = urllib3["details"]["installed"]
    assert version.startswith("1.26.")
    assert urllib3["kind"] == "incompatible"
    assert urllib3["models"] == ["a", "b"]
    assert urllib3["message"] == (
        f"types-requests 2.32.0.20240914 requires urllib3>=2, but urllib3 {version} is installed; model b -> "
        "types-requests 2.32.0.20240914 -> urllib3>=2 conflicts with model a -> kubernetes 28.1.0 -> "
        "urllib3<2.0,>=1.24.2"
    )
    assert urllib3["details"]["needed_by"] == {"b": ["model b", "types-requests 2.32.0.20240914", "urllib3>=2"]}
    assert urllib3["details"]["chain"] == ["model a", "kubernetes 28.1.0", "urllib3<2.0,>=1.24.2"]
    assert [f["kind"] for f in findings] == ["incompatible"]  # everything else resolved and installed


def test_why_shows_a_requirement_reached_through_an_extra(
    installed: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    python, a, b = installed
    _, out = _run(capsys, a, b, "--python", python, "--why", "socksio")
    assert out["why"] == [
        {
            "package": "socksio",
            "installed": "1.0.0",
            "required_by": [],
            "models": [],
            "through_extras": [
                {
                    "requirer": "httpx 0.27.0",
                    "extra": "socks",
                    "requirement": "socksio==1.*",
                    "requested_by": ["model 'b' (httpx[socks]==0.27.0)"],
                }
            ],
            "unrequested_extras": [],
        }
    ]


def test_a_constraint_with_extras_is_refused_as_pip_refuses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "c.txt").write_text("httpx[socks]==0.27.0\n")
    (tmp_path / "r.txt").write_text("httpx\n")
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "-r", "r.txt", "-c", "c.txt"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert pip.returncode != 0
    assert "Constraints cannot have extras" in pip.stderr
    model = model_dir(tmp_path, "m", "httpx", "-c ../c.txt")
    assert main(["check-deps", str(model)]) == 2
    assert capsys.readouterr().err == (
        f"autoglm-runtime: error E0102: {model / 'model.toml'}: model.requirements[1]: constraint "
        "'httpx[socks]==0.27.0' in ../c.txt has extras [socks]: pip refuses extras in constraints ('Constraints "
        "cannot have extras') and uv ignores them; write 'httpx==0.27.0' (a requirement may ask for the extras)\n"
    )


def test_a_wheel_reinstalled_with_other_tags_is_seen_by_a_warm_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # WHEEL is not in the probe cache's stamp: a reinstall writes the metadata directory anew (new mtimes), so
    # a cached description is never reused for it. Here the directory is stamped old (trusted: checked by one
    # stat per stamped file, no listing) before uv puts a wheel of the same version for another Python there.
    subprocess.run([str(UV), "venv", "-q", "--python", sys.executable, str(tmp_path / "venv")], check=True)
    python = tmp_path / "venv" / "bin" / "python"
    site = subprocess.run(
        [str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    target = tmp_path / "target"
    (Path(site) / "target.pth").write_text(f"{target}\n")
    minor = f"{sys.version_info[0]}.{sys.version_info[1]}"
    other = "3.12" if minor != "3.12" else "3.11"

    def install(version: str, *more: str) -> None:
        uv_pip_install("--target", target, "--python-version", version, "--only-binary", ":all:", "--no-deps", *more,
                       "markupsafe==2.1.5")  # fmt: skip

    install(minor)
    old = 1_600_000_000
    for path in [target, *target.rglob("*")]:
        os.utime(path, (old, old))
    for _ in range(2):  # the second run reads every description from the cache
        assert main(["check-deps", "--python", str(python), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["findings"] == []
    install(other, "--upgrade")
    assert main(["check-deps", "--python", str(python), "--json"]) == 1
    (finding,) = json.loads(capsys.readouterr().out)["findings"]
    assert finding["kind"] == "unsupported-wheel"
    assert all(tag.startswith(f"cp{other.replace('.', '')}-") for tag in finding["details"]["wheel_tags"])
