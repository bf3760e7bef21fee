"""check-deps against real virtual environments built offline from wheels the tests make.

One environment (Python 3.12, checked from this 3.11 process so markers must be evaluated for the target)
holds a case of every kind; a second one holds broken metadata. ``pip check`` runs on the same environment
to show parity on ``missing`` and ``incompatible``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import InvalidRequirement, Requirement

from autoglm_runtime.cli import main
from autoglm_runtime.deps.check import check_environment
from autoglm_runtime.deps.manifest import load_manifest
from autoglm_runtime.deps.probe import canonical
from autoglm_runtime.testing.wheels import build_wheel
from autoglm_runtime.testing.zookeeper import fail_in_ci_else_skip

pytestmark = pytest.mark.slow

# The target must be another interpreter than the one running the checks (so markers are evaluated for the
# target) and Python >= 3.12 (markerlib's requirements depend on it).
TARGET_CANDIDATES = (
    "/root/.pyenv/versions/3.12.1/bin/python3.12",
    "/root/.pyenv/versions/3.13.0/bin/python3.13",
    "python3.13",
    "python3.12",
)
UV = Path(sys.executable).with_name("uv")


@dataclass
class Env:
    root: Path
    python: Path
    site: Path
    extra_dir: Path
    models: Path
    version: str

    def on_disk_jwt(self) -> str:
        return "pyjwt" if "X = 2" in (self.site / "jwt" / "__init__.py").read_text() else "jwt"


def _target_python() -> Path:  # noqa: RET503 (fail_in_ci_else_skip never returns)
    for candidate in TARGET_CANDIDATES:
        found = shutil.which(candidate)
        if found and Path(found).resolve() != Path(sys.executable).resolve():
            return Path(found)
    message = f"no Python >= 3.12 other than the running {sys.version.split()[0]} found among {TARGET_CANDIDATES}"
    fail_in_ci_else_skip(message)


def _run(*cmd: str | Path) -> None:
    subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True)


def _printed(python: Path, code: str) -> str:
    """What ``code`` prints, run by ``python`` in isolated mode, without surrounding whitespace."""
    return subprocess.run([str(python), "-I", "-c", code], check=True, capture_output=True, text=True).stdout.strip()


def _site(python: Path) -> Path:
    return Path(_printed(python, "import sysconfig; print(sysconfig.get_path('purelib'))"))


def _unpack(wheel: Path, target: Path) -> None:
    """Install a pure wheel by unpacking it (what installers do for purelib), bypassing their checks."""
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(target)


def _write_model(root: Path, name: str, requirements: list[str], python: str | None = None) -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    lines = ["[model]", f'name = "{name}"', f'entrypoint = "{name}_model:load"', f"requirements = {requirements!r}"]
    if python is not None:
        lines.append(f'python = "{python}"')
    (directory / "model.toml").write_text("\n".join(lines).replace("'", '"') + "\n")
    return directory


def _pip_wheel(python: Path) -> Path:
    bundled = _printed(python, "import ensurepip, pathlib; print(pathlib.Path(ensurepip.__file__).parent)")
    return sorted((Path(bundled) / "_bundled").glob("pip-*.whl"))[-1]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("check-deps")
    wheels = root / "wheels"
    w = {
        "numpy": build_wheel(wheels, "numpy", "1.26.4"),
        "pandas": build_wheel(wheels, "pandas", "2.1.4", requires=["numpy<2"]),
        "needsnew": build_wheel(wheels, "needsnew", "1.0", requires=["numpy>=2", "absent-lib>=1"]),
        "jwt": build_wheel(wheels, "jwt", "1.0", modules={"jwt/__init__.py": "X = 1\n"}),
        "pyjwt": build_wheel(wheels, "PyJWT", "2.8.0", modules={"jwt/__init__.py": "X = 2\n"}),
        "futurelib": build_wheel(wheels, "futurelib", "1.0", requires_python=">=4"),
        "dupe1": build_wheel(root / "dupe-old", "dupe", "1.0", requires=["never-installed"]),
        "dupe2": build_wheel(wheels, "dupe", "2.0"),
        "httpx": build_wheel(wheels, "httpx", "0.27.0", extras={"http2": ["h2>=4"], "cli": ["numpy>=1.20"]}),
        "client": build_wheel(wheels, "client", "1.0", requires=["httpx[http2]>=0.27", "httpx[socks]"]),
        "cyc_a": build_wheel(wheels, "cyc-a", "1.0", requires=["Cyc.B>=1"]),
        "cyc_b": build_wheel(wheels, "Cyc.B", "1.0", requires=["CYC_A"]),
        "markerlib": build_wheel(
            wheels,
            "markerlib",
            "1.0",
            requires=[
                "old-only>=1; python_version < '3.12'",
                "new-only>=1; python_version >= '3.12'",
                "win-only; sys_platform == 'win32'",
                "httpx[cli]",
            ],
            extras={"gpu": ["gpu-lib>=1"]},
        ),
        "betalib": build_wheel(wheels, "betalib", "1.1b1"),
        "gammalib": build_wheel(wheels, "gammalib", "2.0rc1"),
        "prelib": build_wheel(wheels, "prelib", "1.0", requires=["betalib>=1.0", "gammalib<2.0"]),
    }
    python = _target_python()
    venv = root / "venv"
    _run(UV, "venv", "-q", "--python", python, venv)
    env_python = venv / "bin" / "python"
    site = _site(env_python)
    names = ["numpy", "pandas", "needsnew", "jwt", "pyjwt", "dupe2", "httpx", "client", "cyc_a", "cyc_b"]
    names += ["markerlib", "betalib", "gammalib", "prelib"]
    _run(UV, "pip", "install", "-q", "--python", env_python, "--no-deps", *(w[n] for n in names), _pip_wheel(python))
    _unpack(w["futurelib"], site)
    extra_dir = root / "extra-site"
    _unpack(w["dupe1"], extra_dir)
    (site / "zz_extra.pth").write_text(f"{extra_dir}\n")
    models = root / "models"
    _write_model(models, "a", ["pandas==2.1.4"], python=">=3.10")
    _write_model(models, "b", ["numpy>=2"])
    _write_model(models, "c", ["pandas>=3", "absent-model-lib>=1", "httpx[http2]", "markerlib[gpu]"])
    _write_model(models, "d", ["dupe"], python=">=4")
    (models / "extra-reqs.txt").write_text("pandas<2\nwin-only; sys_platform == 'win32'\n")
    version = _printed(env_python, "import platform; print(platform.python_version())")
    yield Env(root, env_python, site, extra_dir, models, version)
    shutil.rmtree(root, ignore_errors=True)


def _env_only(findings: list[dict[str, object]]) -> list[tuple[object, ...]]:
    return [(f["kind"], tuple(f["packages"]), f["message"]) for f in findings]  # type: ignore[arg-type]


def test_environment_alone_reports_every_kind_exactly(env: Env) -> None:
    report = check_environment(env.python)
    winner = env.on_disk_jwt()
    jwt_outcome = "PyJWT 2.8.0, so jwt 1.0" if winner == "pyjwt" else "jwt 1.0, so PyJWT 2.8.0"
    assert _env_only([f.to_json() for f in report.findings]) == [
        ("missing", ("markerlib", "new-only"), "markerlib 1.0 requires new-only>=1, but new-only is not installed"),
        ("missing", ("needsnew", "absent-lib"), "needsnew 1.0 requires absent-lib>=1, but absent-lib is not installed"),
        ("incompatible", ("needsnew", "numpy"), "needsnew 1.0 requires numpy>=2, but numpy 1.26.4 is installed"),
        ("incompatible", ("prelib", "gammalib"), "prelib 1.0 requires gammalib<2.0, but gammalib 2.0rc1 is installed"),
        (
            "missing-extra",
            ("client", "httpx"),
            "client 1.0 requires httpx[socks], but httpx 0.27.0 has no extra 'socks'",
        ),
        (
            "missing-extra",
            ("client", "httpx", "h2"),
            "client 1.0 requires httpx[http2]>=0.27, whose extra 'http2' needs h2>=4, but h2 is not installed",
        ),
        (
            "requires-python",
            ("futurelib",),
            f"futurelib 1.0 requires Python >=4, but {env.python} is Python {env.version}",
        ),
        (
            "duplicate",
            ("dupe",),
            f"dupe is installed 2 times on the path: dupe 2.0 ({env.site / 'dupe-2.0.dist-info'}) is the one "
            f"imported, shadowing dupe 1.0 ({env.extra_dir / 'dupe-1.0.dist-info'})",
        ),
        (
            "shadowed-module",
            ("jwt", "pyjwt"),
            f"jwt 1.0 and PyJWT 2.8.0 both install the top-level module 'jwt'; 'import jwt' gets {jwt_outcome} is "
            "shadowed",
        ),
        ("cycle", ("cyc-a", "cyc-b"), "dependency cycle: cyc-a 1.0 -> Cyc.B 1.0 -> cyc-a 1.0"),
    ]
    assert report.exit_code == 1
    assert report.findings[-1].severity == "info"
    shadow = next(f for f in report.findings if f.kind == "shadowed-module")
    assert shadow.details["winner"] == winner


def _pip_check(python: Path) -> set[tuple[str, str, str]]:
    done = subprocess.run([str(python), "-m", "pip", "check"], capture_output=True, text=True, check=False)
    assert done.returncode == 1, done.stderr
    out: set[tuple[str, str, str]] = set()
    for line in done.stdout.splitlines():
        if m := re.match(r"^(\S+) \S+ requires (\S+), which is not installed\.$", line):
            out.add(("missing", canonical(m[1]), canonical(m[2])))
        elif m := re.match(r"^(\S+) \S+ has requirement ([A-Za-z0-9._-]+).*, but you have \S+ \S+\.$", line):
            out.add(("incompatible", canonical(m[1]), canonical(m[2])))
        else:
            raise AssertionError(f"unexpected pip check line: {line!r}")
    return out


def test_missing_and_incompatible_match_pip_check(env: Env) -> None:
    report = check_environment(env.python)
    ours = {(f.kind, f.packages[0], f.packages[1]) for f in report.findings if f.kind in {"missing", "incompatible"}}
    assert ours == _pip_check(env.python)
    assert len(ours) == 4
    # ...and check-deps reports what pip check cannot see.
    assert {f.kind for f in report.findings} - {"missing", "incompatible"} == {
        "missing-extra",
        "requires-python",
        "duplicate",
        "shadowed-module",
        "cycle",
    }


def test_models_against_the_environment(env: Env) -> None:
    models = [load_manifest(env.models / n) for n in ("a", "b", "c", "d")]
    report = check_environment(env.python, models=models)
    model_findings = [(f.kind, f.models, f.message) for f in report.findings if f.models]
    assert model_findings == [
        (
            "cross-model",
            ("a", "c"),
            "model 'c' needs pandas>=3 but model 'a' needs pandas==2.1.4: they cannot share one environment; "
            "load them isolated",
        ),
        (
            "model-vs-host",
            ("b",),
            "model 'b' needs numpy>=2 but the environment has numpy 1.26.4, pulled in by model a -> pandas 2.1.4 "
            "-> numpy<2",
        ),
        (
            "model-vs-host",
            ("c",),
            "model 'c' needs pandas>=3 but the environment has pandas 2.1.4, which no installed distribution "
            "requires; model 'a' needs pandas==2.1.4, so model 'c' cannot share an environment with it",
        ),
        ("missing", ("c",), "model 'c' requires absent-model-lib>=1, but absent-model-lib is not installed"),
        (
            "missing-extra",
            ("c",),
            "model 'c' requires httpx[http2], whose extra 'http2' needs h2>=4, but h2 is not installed",
        ),
        (
            "missing-extra",
            ("c",),
            "model 'c' requires markerlib[gpu], whose extra 'gpu' needs gpu-lib>=1, but gpu-lib is not installed",
        ),
        ("requires-python", ("d",), f"model 'd' requires Python >=4, but {env.python} is Python {env.version}"),
    ]
    cross = report.findings[0]
    assert cross.hint == "load 'a' and 'c' isolated (one environment each), or align their pandas requirements"
    assert report.findings[1].details["chain"] == ["model a", "pandas 2.1.4", "numpy<2"]


def test_cli_json_with_a_requirements_file(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["check-deps", str(env.models / "a"), str(env.models / "extra-reqs.txt"), "--python", str(env.python), "--json"]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert out["exit_code"] == 1
    assert out["ok"] is False
    assert out["models"] == ["a", "extra-reqs.txt"]
    assert out["environment"]["python_version"] == env.version
    assert [(f["kind"], f["models"]) for f in out["findings"] if f["models"]] == [
        ("cross-model", ["a", "extra-reqs.txt"]),
        ("model-vs-host", ["extra-reqs.txt"]),
    ]
    assert out["findings"][0]["message"] == (
        "model 'extra-reqs.txt' needs pandas<2 but model 'a' needs pandas==2.1.4: they cannot share one "
        "environment; load them isolated"
    )
    assert out["findings"][1] == (
        {
            "kind": "model-vs-host",
            "code": "E0101",
            "severity": "error",
            "packages": ["pandas"],
            "models": ["extra-reqs.txt"],
            "message": "model 'extra-reqs.txt' needs pandas<2 but the environment has pandas 2.1.4, which no "
            "installed distribution requires; model 'a' needs pandas==2.1.4, so model 'extra-reqs.txt' cannot share "
            "an environment with it",
            "hint": "load model 'extra-reqs.txt' isolated in its own environment, or change the environment so "
            "that pandas matches '<2'",
            "details": {
                "requirement": "pandas<2",
                "installed": "2.1.4",
                "chain": [],
                "excluded_by": [],
                "models_excluding": {"a": "pandas==2.1.4"},
            },
        }
    )
    assert out["summary"]["by_kind"]["model-vs-host"] == 1
    assert out["summary"]["errors"] == out["summary"]["findings"] - 1  # the cycle is informational


def test_cli_human_output_is_grouped_by_model(
    env: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    code = main(["check-deps", str(env.models / "b"), "--python", str(env.python)])
    out = capsys.readouterr().out
    assert code == 1
    assert out.startswith(
        "model 'b': 1 finding\n"
        "  [model-vs-host] model 'b' needs numpy>=2 but the environment has numpy 1.26.4, pulled in by pandas\n"
        "    2.1.4 -> numpy<2\n"
        "    hint: load model 'b' isolated in its own environment, or change the environment so that numpy\n"
        "      matches '>=2'\n"
        "\n"
        f"environment ({env.python}, Python {env.version}): 10 findings\n"
        "  [missing] markerlib 1.0 requires new-only>=1, but new-only is not installed\n"
        "    hint: install it: pip install 'new-only>=1'\n"
    )
    assert out.endswith(
        "  [cycle] dependency cycle: cyc-a 1.0 -> Cyc.B 1.0 -> cyc-a 1.0\n"
        "    hint: nothing to do unless the cycle is unintended; these distributions must be upgraded\n"
        "      together\n"
        "\n"
        "E0101 check-deps: 10 problems, 1 informational (17 distributions, 1 model); exit 1\n"
    )


def test_cli_usage_errors_exit_2(env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-deps", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == (
        f"autoglm-runtime: error E0001: {tmp_path / 'nope'}: no such file or directory; PATH must be a model "
        "directory, a model.toml or a requirements file\n"
    )
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.toml").write_text('[model]\nname = "bad"\nentrypoint = "x:y"\nrequirements = ["numpy>>2"]\n')
    assert main(["check-deps", str(bad), "--python", str(env.python)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"autoglm-runtime: error E0102: {bad / 'model.toml'}: model.requirements[0]: 'numpy>>2' is")
    assert main(["check-deps", "--python", str(tmp_path / "no-python")]) == 2
    assert capsys.readouterr().err == (
        f"autoglm-runtime: error E0001: interpreter {tmp_path / 'no-python'} does not exist; pass a Python "
        "executable to --python\n"
    )


def test_clean_environment_exits_0(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    clean = env.root / "clean"
    _run(UV, "venv", "-q", "--python", env.python.resolve(), clean)
    assert main(["check-deps", str(env.models / "a"), "--python", str(clean / "bin" / "python"), "--json"]) == 1
    assert [f["kind"] for f in json.loads(capsys.readouterr().out)["findings"]] == ["missing"]
    assert main(["check-deps", "--python", str(clean / "bin" / "python")]) == 0
    assert capsys.readouterr().out == (
        f"environment ({clean / 'bin' / 'python'}, Python {env.version}): ok\n\n"
        "check-deps: no problems (0 distributions, 0 models); exit 0\n"
    )


def _packaging_reason(text: str) -> str:
    with pytest.raises(InvalidRequirement) as caught:
        Requirement(text)
    return str(caught.value).splitlines()[0]


@pytest.fixture(scope="module")
def broken_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("check-deps-broken")
    venv = root / "venv"
    _run(UV, "venv", "-q", "--python", sys.executable, venv)
    site = _site(venv / "bin" / "python")
    bad_req = site / "badreq-1.0.dist-info"
    bad_req.mkdir()
    (bad_req / "METADATA").write_text("Metadata-Version: 2.1\nName: badreq\nVersion: 1.0\nRequires-Dist: foo >>> 1\n")
    unreadable = site / "unreadable-1.0.dist-info"
    unreadable.mkdir()
    (unreadable / "METADATA").write_bytes(b"Metadata-Version: 2.1\nName: unreadable\nVersion: \xff\xfe\n")
    nameless = site / "nameless-1.0.dist-info"
    nameless.mkdir()
    (nameless / "METADATA").write_text("Metadata-Version: 2.1\nVersion: 1.0\n")
    latin = site / "latin-1.0.dist-info"  # readable METADATA, but RECORD and top_level.txt in Latin-1
    latin.mkdir()
    (latin / "METADATA").write_text("Metadata-Version: 2.1\nName: latin\nVersion: 1.0\n")
    (latin / "RECORD").write_bytes(b"latin/caf\xe9.py,,\n")
    (latin / "top_level.txt").write_bytes(b"caf\xe9\n")
    return venv / "bin" / "python"


_LATIN = "'utf-8' codec can't decode byte 0xe9 in position {}: invalid continuation byte"


def test_broken_metadata_is_a_finding_not_a_crash(broken_env: Path) -> None:
    report = check_environment(broken_env)
    site = _site(broken_env)
    got = sorted((f.kind, f.packages, f.message) for f in report.findings)
    assert got == [
        (
            "invalid-metadata",
            (),
            f"invalid metadata in {site / 'nameless-1.0.dist-info'}: METADATA has no Name field",
        ),
        (
            "invalid-metadata",
            (),
            f"invalid metadata in {site / 'unreadable-1.0.dist-info'}: METADATA cannot be read: 'utf-8' codec can't "
            "decode byte 0xff in position 48: invalid start byte",
        ),
        (
            "invalid-metadata",
            ("badreq",),
            f"invalid metadata in {site / 'badreq-1.0.dist-info'}: badreq 1.0 has an invalid requirement "
            f"'foo >>> 1' ({_packaging_reason('foo >>> 1')})",
        ),
        (
            "invalid-metadata",
            ("latin",),
            f"invalid metadata in {site / 'latin-1.0.dist-info'}: RECORD cannot be read: {_LATIN.format(9)}",
        ),
        (
            "invalid-metadata",
            ("latin",),
            f"invalid metadata in {site / 'latin-1.0.dist-info'}: top_level.txt cannot be read: {_LATIN.format(3)}",
        ),
    ]
    assert report.exit_code == 1


def test_undecodable_metadata_through_the_cli_is_a_finding(
    broken_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-deps", "--python", str(broken_env), "--json"]) == 1
    findings = json.loads(capsys.readouterr().out)["findings"]
    latin = [f["details"]["error"] for f in findings if f["packages"] == ["latin"]]
    assert latin == [f"RECORD cannot be read: {_LATIN.format(9)}", f"top_level.txt cannot be read: {_LATIN.format(3)}"]
    # Without --python the running interpreter is probed in-process: the same files on its path.
    site = _site(broken_env)
    cli = Path(sys.executable).with_name("autoglm-runtime")
    done = subprocess.run(
        [str(cli), "check-deps", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(site)},
        check=False,
    )
    assert (done.returncode, done.stderr) == (1, "")
    findings = json.loads(done.stdout)["findings"]
    assert [f["details"]["error"] for f in findings if f["packages"] == ["latin"]] == latin


def test_the_user_site_is_not_checked_as_workers_do_not_import_from_it(tmp_path: Path) -> None:
    # The probe runs with -I, as model workers do (isolation/workers/spec.py): PYTHONUSERBASE and the user site
    # are ignored by both, so a distribution there is neither checked nor importable by a model.
    python = _target_python()
    user_env = {**os.environ, "PYTHONUSERBASE": str(tmp_path / "userbase")}
    user_site = subprocess.run(
        [str(python), "-c", "import site; print(site.getusersitepackages())"],
        env=user_env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    _unpack(build_wheel(tmp_path / "w", "usersitelib", "1.0", requires=["absent-lib"]), Path(user_site))
    plain = [str(python), "-c", "import usersitelib"]
    assert subprocess.run(plain, env=user_env, check=False).returncode == 0  # a plain run imports it
    isolated = [str(python), "-I", "-c", "import usersitelib"]
    assert subprocess.run(isolated, env=user_env, capture_output=True, check=False).returncode == 1  # a worker does not
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("autoglm-runtime")),
            "check-deps",
            "--python",
            str(python),
            "--json",
            "--no-cache",
        ],
        env=user_env,
        capture_output=True,
        text=True,
        check=False,
    )
    report = json.loads(done.stdout)
    assert not [f for f in report["findings"] if "usersitelib" in f["packages"]]


def test_a_wheel_built_for_another_python_is_reported_as_pip_check_reports_it(tmp_path: Path) -> None:
    # A site-packages copied from another Python: its cp3XX extension does not import here.
    python = _target_python()
    other = "cp36"  # never the target's (3.12 or newer)
    venv = tmp_path / "venv"
    subprocess.run([str(UV), "venv", "-q", "-p", str(python), str(venv)], check=True)
    target = venv / "bin" / "python"
    machine = _printed(target, "import platform; print(platform.machine())")
    modules = {"natlib/__init__.py": "from ._core import X\n", f"natlib/_core.{other}-x86_64-linux-gnu.so": b"\x7fELF"}
    wheel = build_wheel(
        tmp_path / "w", "natlib", "1.0", modules=modules, tag=f"{other}-{other}m-manylinux_2_17_{machine}"
    )
    _unpack(wheel, _site(target))
    pip_check = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(target), "check"], capture_output=True, text=True, check=False
    )
    assert pip_check.stdout.strip() == "natlib 1.0 is not supported on this platform"
    report = check_environment(target)
    assert [(f.kind, f.packages) for f in report.findings] == [("unsupported-wheel", ("natlib",))]
