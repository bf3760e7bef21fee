"""The stdlib-only probe: metadata headers, egg-info requirements, top-level modules, path scanning."""

from __future__ import annotations

import ast
import json
import platform
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from autoglm_runtime.deps._scripts import markers as _markers
from autoglm_runtime.deps._scripts import metadata as _metadata
from autoglm_runtime.deps._scripts import probe as _probe
from autoglm_runtime.deps.probe import canonical, probe_environment, probe_payload
from autoglm_runtime.testing.wheels import build_wheel


@pytest.mark.parametrize("script", sorted(p.name for p in Path(_probe.__file__).parent.glob("*.py")))
def test_probe_scripts_import_only_the_standard_library(script: str) -> None:
    tree = ast.parse((Path(_probe.__file__).parent / script).read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0  # relative: a sibling, checked too
    }
    # _sha2 is the standard library's SHA-2 module from Python 3.12 on (_sha256 before, tried next): each is
    # missing from the other versions' stdlib_module_names.
    assert imported <= set(sys.stdlib_module_names) | {"__future__", "_sha2", "_sha256"}


def test_headers_stop_at_the_body_and_keep_folded_continuations_as_email_does() -> None:
    text = "Name: a\nVersion: 1\nRequires-Dist: b\nRequires-Dist: c;\n  python_version < '3'\n\nRequires-Dist: body\n"
    assert _metadata._headers(text) == {
        "name": ["a"],
        "version": ["1"],
        "requires-dist": ["b", "c;\n  python_version < '3'"],
    }
    assert _metadata._unfold("c;\n  python_version < '3'") == "c;  python_version < '3'"


def test_egg_info_requires_become_requires_dist() -> None:
    text = "base>=1\n\n[fast]\nspeedup\n\n[:sys_platform == 'win32']\nwinlib\n\n[gpu:python_version < '3.12']\ncuda\n"
    assert _metadata._egg_requires(text) == [
        "base>=1",
        'speedup; extra == "fast"',
        "winlib; (sys_platform == 'win32')",
        "cuda; (python_version < '3.12') and extra == \"gpu\"",
    ]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("pkg/__init__.py", ("pkg", True)),
        ("mod.py", ("mod", True)),
        ("ext.cpython-311-x86_64-linux-gnu.so", ("ext", True)),
        ("pkg/sub.py", None),
        ("pkg-1.0.dist-info/RECORD", None),
        ("site.pth", None),
        ("../../bin/tool", None),
    ],
)
def test_top_name(path: str, expected: tuple[str, bool] | None) -> None:
    assert _metadata._top_name(path) == expected


def _install(wheel: Path, site: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)


def test_collect_describes_distributions_and_contested_files(tmp_path: Path) -> None:
    site = tmp_path / "site"
    wheels = tmp_path / "w"
    _install(build_wheel(wheels, "Foo.Bar", "1.0", requires=["b>=1"], extras={"x": ["c"]}, requires_python=">=3"), site)
    _install(build_wheel(wheels, "one", "1.0", modules={"same/__init__.py": "A = 1\n"}), site)
    _install(build_wheel(wheels, "two", "1.0", modules={"same/__init__.py": "A = 2\n"}), site)
    egg = site / "legacy-2.0.egg-info"
    egg.mkdir()
    (egg / "PKG-INFO").write_text("Metadata-Version: 1.0\nName: legacy\nVersion: 2.0\n")
    (egg / "requires.txt").write_text("six\n")
    (egg / "top_level.txt").write_text("legacy\nnot_here\n")
    (site / "legacy.py").write_text("")
    (site / "empty-1.0.dist-info").mkdir()
    dists = {str(d["name"]): d for d in _probe.collect([str(site), str(tmp_path / "missing")])}
    foo = dists["Foo.Bar"]
    assert (foo["version"], foo["requires"], foo["requires_python"], foo["provides_extra"]) == (
        "1.0",
        ["b>=1", 'c; extra == "x"'],
        ">=3",
        ["x"],
    )
    assert list(foo["modules"]) == ["foo_bar"]  # type: ignore[call-overload]
    assert dists["legacy"]["requires"] == ["six"]
    assert dists["legacy"]["modules"] == {"legacy": ["legacy.py", None]}
    assert dists["None"]["errors"] == ["METADATA is missing"]
    on_disk = (site / "same" / "__init__.py").read_bytes()
    one, two = dists["one"]["clashes"], dists["two"]["clashes"]
    assert one == {"same": on_disk == b"A = 1\n"}  # exactly one of them wrote the file that is there
    assert two == {"same": on_disk == b"A = 2\n"}


def test_probe_runs_isolated_in_another_interpreter() -> None:
    done = subprocess.run([sys.executable, "-I", _probe.__file__], capture_output=True, text=True, check=True)
    assert _probe.MARSHAL_MARK in done.stdout  # CPython without a cache: marshal, no json (nor re) imported
    data = probe_payload(done.stdout)
    assert data["probe"] == _probe.PROBE_FORMAT
    assert data["markers"] == _probe.marker_environment()
    names = {canonical(str(d["name"])) for d in data["distributions"] if d["name"]}
    assert {"packaging", "autoglm-runtime"} <= names


def test_probe_environment_in_process_matches_a_subprocess() -> None:
    here = probe_environment()
    there = probe_environment(sys.executable)
    assert here.python == there.python == sys.executable
    assert here.markers == there.markers
    assert sorted(d.key for d in here.dists) == sorted(d.key for d in there.dists)


def _undecodable(path: Path, head: bytes = b"") -> None:
    path.write_bytes(head + b"caf\xe9\n")


def test_undecodable_metadata_files_are_errors_not_crashes(tmp_path: Path) -> None:
    site = tmp_path / "site"
    info = site / "latin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: latin\nVersion: 1.0\n")
    _undecodable(info / "RECORD", b"latin/__init__.py,sha256=x,1\n")
    _undecodable(info / "top_level.txt")
    egg = site / "oldlatin-1.0.egg-info"
    egg.mkdir()
    (egg / "PKG-INFO").write_text("Metadata-Version: 1.0\nName: oldlatin\nVersion: 1.0\n")
    _undecodable(egg / "requires.txt")
    _undecodable(egg / "top_level.txt")
    dists = {str(d["name"]): d for d in _probe.collect([str(site)])}
    reason = "'utf-8' codec can't decode byte 0xe9 in position {}: invalid continuation byte"
    assert dists["latin"]["errors"] == [
        f"RECORD cannot be read: {reason.format(32)}",
        f"top_level.txt cannot be read: {reason.format(3)}",
    ]
    assert dists["oldlatin"]["errors"] == [
        f"requires.txt cannot be read: {reason.format(3)}",
        f"top_level.txt cannot be read: {reason.format(3)}",
    ]
    assert (dists["latin"]["modules"], dists["oldlatin"]["requires"]) == ({}, [])
    runner = "; ".join(
        [
            "import runpy, sys",
            f"sys.path.insert(0, {str(site)!r})",
            f"runpy.run_path({_probe.__file__!r}, run_name='__main__')",
        ]
    )
    done = subprocess.run([sys.executable, "-I", "-c", runner], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stderr) == (0, "")  # the probe script answers, as check-deps --python needs
    latin = next(d for d in probe_payload(done.stdout)["distributions"] if d["name"] == "latin")
    assert latin["errors"] == dists["latin"]["errors"]


#: Interpreters the probe must run on, where this machine has them (the oldest supported among them).
OTHER_PYTHONS = [f"/root/.pyenv/versions/{v}/bin/python{v.rsplit('.', 1)[0]}" for v in ("3.8.18", "3.12.1", "3.13.0")]


@pytest.mark.parametrize("python", [sys.executable, *OTHER_PYTHONS])
def test_marshal_output_equals_the_json_description_on_every_interpreter(python: str) -> None:
    if not Path(python).exists():
        pytest.skip(f"{python} is not installed here")
    script = _probe.__file__
    compare = (
        "import json, runpy, sys; sys.argv = [sys.argv[0]]; "
        f"probe = runpy.run_path({script!r}); sys.stdout.write(json.dumps(probe['probe']()))"
    )
    as_json = subprocess.run([python, "-I", "-c", compare], capture_output=True, text=True, check=True).stdout
    done = subprocess.run([python, "-I", script], capture_output=True, text=True, check=True)
    assert _probe.MARSHAL_MARK in done.stdout
    assert probe_payload(done.stdout) == json.loads(as_json)
    if python != sys.executable:  # this one's environment has an editable install: json reads its direct_url.json
        imported = subprocess.run(
            [python, "-X", "importtime", "-I", script], capture_output=True, text=True, check=True
        ).stderr
        modules = {line.rpartition("|")[2].strip() for line in imported.splitlines() if line.startswith("import time")}
        assert {"re", "json", "platform", "hashlib"} & modules == set()  # the imports the probe no longer pays for


@pytest.mark.parametrize("python", [sys.executable, *OTHER_PYTHONS])
def test_markers_from_uname_equal_platforms_on_every_interpreter(python: str) -> None:
    if not Path(python).exists():
        pytest.skip(f"{python} is not installed here")
    code = (
        f"import runpy, platform; p = runpy.run_path({_markers.__file__!r}, run_name='markers'); "
        "fast = p['_uname_markers'](); "
        "print(fast is not None and fast == p['_platform_markers']() and p['python_version']() == "
        "platform.python_version())"
    )
    done = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"


def test_markers_equal_packagings_default_environment() -> None:
    from packaging.markers import default_environment

    assert _probe.marker_environment() == default_environment()
    assert _probe.python_version() == platform.python_version()


def test_probe_payload_reads_json_and_marshal_between_output_from_pth_files_and_exit_handlers() -> None:
    description = {"probe": 2, "path": ["/x"], "distributions": [{"name": "a", "editable": None, "ok": True}]}
    junk = "printed by a .pth file\n"
    import base64
    import marshal

    packed = base64.b64encode(marshal.dumps(description, 4)).decode("ascii")
    assert probe_payload(junk + _probe.MARSHAL_MARK + packed) == description
    assert probe_payload(junk + _probe.OUTPUT_MARK + json.dumps(description)) == description
    after = "\nprinted at exit, by a handler a .pth file registered\n"  # the probe ends its line: see _print
    assert probe_payload(junk + _probe.MARSHAL_MARK + packed + after) == description
    assert probe_payload(junk + _probe.OUTPUT_MARK + json.dumps(description) + after) == description
    with pytest.raises(ValueError, match="mark is missing"):
        probe_payload(junk)
