"""--resolve: uv's resolver finds transitive conflicts, offline against a wheelhouse built here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.deps._check_data import model_dir

from autoglm_runtime.cli import main
from autoglm_runtime.deps.resolve import trim
from autoglm_runtime.testing.wheels import build_wheel


@pytest.fixture
def wheelhouse(tmp_path: Path) -> Path:
    wheels = tmp_path / "wheels"
    build_wheel(wheels, "transformers", "4.30.2", requires=["tokenizers<0.14,>=0.11.1"])
    build_wheel(wheels, "tokenizers", "0.13.3")
    build_wheel(wheels, "tokenizers", "0.15.0")
    return wheels


def test_a_transitive_conflict_is_found_only_by_resolving(
    tmp_path: Path, wheelhouse: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = model_dir(tmp_path, "a", "transformers==4.30.2")
    b = model_dir(tmp_path, "b", "tokenizers>=0.15")
    c = model_dir(tmp_path, "c", "absent-lib>=1")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    args = ["--python", python, "--json", "--find-links", str(wheelhouse), "--offline"]
    main(["check-deps", str(a), str(b), *args])
    plain = {f["kind"] for f in json.loads(capsys.readouterr().out)["findings"]}
    assert plain == {"missing"}  # nothing installed yet, and no direct requirement overlaps
    assert main(["check-deps", str(a), str(b), str(c), *args, "--resolve"]) == 1
    found = [f for f in json.loads(capsys.readouterr().out)["findings"] if f["kind"] != "missing"]
    assert [(f["kind"], f["models"]) for f in found] == [
        ("unresolvable", ["c"]),
        ("resolve-conflict", ["a", "b"]),
    ]
    conflict = found[1]["message"]
    assert conflict.startswith("models 'a', 'b' each resolve alone but not together: ")
    assert "tokenizers>=0.11.1,<0.14" in conflict
    assert "tokenizers>=0.15" in conflict
    assert "\n" not in conflict
    assert len(found[1]["details"]["explanation"]) <= 600
    assert found[0]["message"].startswith("model 'c' cannot be installed from the given sources: ")
    assert found[0]["hint"] == "change the requirements of model 'c', or add the distributions it needs to the sources"


def test_trim_keeps_one_line_without_labels() -> None:
    text = "error: No solution found\n  cause: Because a\n         and b.\n"
    assert trim(text) == "No solution found Because a and b."
    assert trim("x " * 400, limit=20) == "x x x x x x x x x..."


def test_without_uv_resolve_is_a_usage_error_saying_how_to_get_it(tmp_path: Path) -> None:
    a = model_dir(tmp_path, "a", "transformers==4.30.2")
    code = (
        "import sys; sys.modules['uv'] = None\n"
        "from autoglm_runtime.cli import main\n"
        f"sys.exit(main(['check-deps', {str(a)!r}, '--resolve']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "autoglm-runtime: error E0001: --resolve needs uv's resolver, which is not installed: "
        "pip install 'autoglm-runtime[uv]'\n"
    )


def test_constraints_files_take_part_in_the_resolution(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a's constraint limits what b pulls in once they share an environment: only the resolver sees it.
    wheels = tmp_path / "wheels"
    build_wheel(wheels, "top", "1.0", requires=["lib"])
    build_wheel(wheels, "newtop", "1.0", requires=["lib>=2"])
    for version in ("1.0", "2.0"):
        build_wheel(wheels, "lib", version)
    a = model_dir(tmp_path, "a", "top", "-c constraints.txt")
    (a / "constraints.txt").write_text("lib<2\n")
    b = model_dir(tmp_path, "b", "newtop")
    args = ["--python", sys.executable, "--json", "--find-links", str(wheels), "--offline", "--resolve"]
    main(["check-deps", str(a), str(b), *args])
    found = [f for f in json.loads(capsys.readouterr().out)["findings"] if f["kind"] != "missing"]
    assert [(f["kind"], f["models"]) for f in found] == [("resolve-conflict", ["a", "b"])]
    assert "lib<2" in found[0]["message"]
