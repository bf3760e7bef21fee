"""check-deps on real virtual environments that include the system site-packages, and on Debian's own Python.

The base is an interpreter of this machine with pip in its site-packages; the environments are made offline
(``python -m venv`` installs pip from ensurepip, uv installs the same bundled wheel and wheels the tests
build). ``pip check`` runs on each for comparison: it says nothing of copies shadowing the base's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from integration.deps.test_check_deps_env import UV, _pip_wheel, _printed, _site, _target_python

from autoglm_runtime.cli import main
from autoglm_runtime.deps.probe import probe_environment
from autoglm_runtime.testing.wheels import build_wheel
from autoglm_runtime.testing.zookeeper import fail_in_ci_else_skip

pytestmark = pytest.mark.slow
DEBIAN_SITE = Path("/usr/lib/python3/dist-packages")
DEBIAN_PAIR = (DEBIAN_SITE / "cryptography.egg-info", DEBIAN_SITE / "cryptography-38.0.4.dist-info")
DEBIAN_PYTHON = Path("/usr/bin/python3")


def _report(python: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    code = main(["check-deps", "--python", str(python), "--json", "--no-cache"])
    report = json.loads(capsys.readouterr().out)
    assert report["exit_code"] == code
    return report  # type: ignore[no-any-return]


def _kinds(report: dict[str, object]) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(f["kind"], f["severity"], tuple(f["packages"])) for f in report["findings"]]  # type: ignore[attr-defined,index]


def _base_site_packages(python: Path) -> list[str]:
    return json.loads(_printed(python, "import json, site; print(json.dumps(site.getsitepackages()))"))  # type: ignore[no-any-return]


def test_pip_in_a_venv_with_system_site_packages_overrides_the_bases(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = _target_python()
    base_site = [p for p in _base_site_packages(base) if (Path(p) / "pip").is_dir()]
    if not base_site:
        fail_in_ci_else_skip(f"{base} has no pip in its site-packages")
    venv = tmp_path / "venv"
    subprocess.run([str(base), "-m", "venv", "--system-site-packages", str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    env = probe_environment(python)
    assert env.base_site == frozenset(base_site)
    report = _report(python, capsys)
    assert _kinds(report) == [("overrides-base", "info", ("pip",))]
    assert report["exit_code"] == 0
    finding = report["findings"][0]  # type: ignore[index]
    assert finding["details"]["used"]["location"] == str(_site(python))
    assert [d["location"] for d in finding["details"]["shadowed"]] == base_site
    pip_check = subprocess.run([str(python), "-m", "pip", "check"], capture_output=True, text=True, check=False)
    assert pip_check.returncode == 0, pip_check.stdout


def test_copies_inside_a_uv_venv_with_system_site_packages_stay_a_duplicate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = _target_python()
    venv = tmp_path / "venv"
    subprocess.run([str(UV), "venv", "-q", "--system-site-packages", "-p", str(base), str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(UV), "pip", "install", "-q", "--python", str(python), _pip_wheel(base)], check=True)
    if not any((Path(p) / "pip").is_dir() for p in _base_site_packages(base)):
        fail_in_ci_else_skip(f"{base} has no pip in its site-packages")
    extra = tmp_path / "extra"
    with zipfile.ZipFile(build_wheel(tmp_path / "w", "pip", "1.0")) as zf:
        zf.extractall(extra)
    (_site(python) / "zz_extra.pth").write_text(f"{extra}\n")
    report = _report(python, capsys)
    assert _kinds(report) == [("duplicate", "error", ("pip",)), ("overrides-base", "info", ("pip",))]
    message = report["findings"][0]["message"]  # type: ignore[index]
    assert message.startswith("pip is installed 2 times in the environment: pip ")
    assert message.endswith(f"shadowing pip 1.0 ({extra}/pip-1.0.dist-info)")


def test_a_venv_without_system_site_packages_has_no_base_site(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([str(UV), "venv", "-q", "-p", sys.executable, str(venv)], check=True)
    assert probe_environment(venv / "bin" / "python").base_site == frozenset()
    assert probe_environment(sys.executable).base_site == frozenset()


def test_debians_own_python_and_a_venv_over_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not all(p.is_dir() for p in DEBIAN_PAIR):  # (part of these machines' image: python3-jwt and others need it)
        fail_in_ci_else_skip("needs Debian's python3-cryptography (apt-get install python3-cryptography)")
    debian = Path("/usr/bin/python3")
    kinds = _kinds(_report(debian, capsys))
    assert ("duplicate", "error", ("cryptography",)) not in kinds  # its .dist-info and .egg-info: one distribution
    venv = tmp_path / "venv"
    subprocess.run([str(debian), "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    wheel = build_wheel(tmp_path / "w", "cryptography", "99.0")
    subprocess.run([str(UV), "pip", "install", "-q", "--no-deps", "--python", str(python), wheel], check=True)
    assert str(DEBIAN_SITE) in probe_environment(python).base_site
    report = _report(python, capsys)
    found = [f for f in report["findings"] if f["packages"] == ["cryptography"]]  # type: ignore[attr-defined]
    assert [f["kind"] for f in found] == ["overrides-base"]
    assert [d["location"] for d in found[0]["details"]["shadowed"]] == [str(DEBIAN_SITE)]
    assert not [f for f in report["findings"] if f["kind"] == "duplicate"]  # type: ignore[attr-defined]


def test_a_venv_module_over_debians_pyjwt_is_informational_until_something_requires_pyjwt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not (DEBIAN_SITE / "jwt" / "__init__.py").is_file():  # Debian's python3-jwt: PyJWT-2.6.0.egg-info, jwt/
        fail_in_ci_else_skip("needs Debian's python3-jwt (apt-get install python3-jwt)")
    venv = tmp_path / "venv"
    subprocess.run([str(DEBIAN_PYTHON), "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    other_jwt = build_wheel(tmp_path / "w", "jwt", "1.4.0", modules={"jwt/__init__.py": "class JWT: pass\n"})
    subprocess.run([str(UV), "pip", "install", "-q", "--no-deps", "--python", str(python), other_jwt], check=True)
    report = _report(python, capsys)
    found = [f for f in report["findings"] if f["kind"] == "shadowed-module"]  # type: ignore[attr-defined]
    assert [(f["packages"], f["severity"], f["details"]["required_by"]) for f in found] == [
        (["jwt", "pyjwt"], "info", [])
    ]
    # What requires PyJWT now gets the other jwt: PyJWT's API is not there.
    needs = build_wheel(tmp_path / "w", "needs-pyjwt", "1.0", requires=["PyJWT>=2"])
    subprocess.run([str(UV), "pip", "install", "-q", "--no-deps", "--python", str(python), needs], check=True)
    report = _report(python, capsys)
    found = [f for f in report["findings"] if f["kind"] == "shadowed-module"]  # type: ignore[attr-defined]
    assert [(f["severity"], f["details"]["required_by"]) for f in found] == [("error", ["needs-pyjwt 1.0 (PyJWT>=2)"])]
    assert report["exit_code"] == 1
    imported = subprocess.run(
        [str(python), "-c", "import jwt; jwt.encode"], capture_output=True, text=True, check=False
    )
    assert imported.returncode == 1
    assert imported.stderr.splitlines()[-1] == "AttributeError: module 'jwt' has no attribute 'encode'"
    pip_check = subprocess.run([str(python), "-m", "pip", "check"], capture_output=True, text=True, check=False)
    assert "jwt" not in pip_check.stdout.lower()  # PyJWT 2.6.0 is installed, as far as pip check sees
