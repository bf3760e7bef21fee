"""Packaging stays honest: one version everywhere, and the declared dependencies are what the code imports."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

import autoglm_runtime

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "autoglm_runtime"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: Import names of optional extras and of test-only helpers: imported lazily, where they are used.
OPTIONAL = {
    "grpc": "grpc",
    "tokenizers": "tokenizers",
    "tiktoken": "tiktoken",
    "uv": "uv",
    "chat": "jinja2",
    "metrics": "prometheus_client",
    "tracing": "opentelemetry",
    "numpy": "numpy",
    "typed": "pydantic",
}
TEST_ONLY = {"pytest", "testcontainers", "docker"}  # the harness's container backend (docker comes with testcontainers)
#: Stdlib modules of other Python versions than this one (subinterpreters: 3.12 and 3.13+; SHA-2: _sha2 on 3.12+,
#: _sha256 before).
OTHER_STDLIB = {"_interpreters", "_xxsubinterpreters", "_sha2", "_sha256"}


def imported_top_level_names() -> set[str]:
    names: set[str] = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "import_module"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                names.add(node.args[0].value.split(".")[0])
    stdlib = sys.stdlib_module_names | OTHER_STDLIB
    return {name for name in names if name not in stdlib and name != "autoglm_runtime"}


def test_the_version_is_written_once_and_everything_agrees() -> None:
    assert "version" not in PYPROJECT["project"]
    assert "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["hatch"]["version"]["path"] == "src/autoglm_runtime/__init__.py"
    init = (SRC / "__init__.py").read_text()
    assert re.findall(r'^__version__ = "([^"]+)"$', init, re.MULTILINE) == [autoglm_runtime.__version__]
    assert importlib.metadata.version("autoglm-runtime") == autoglm_runtime.__version__
    script = Path(sys.executable).with_name("autoglm-runtime")
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out == f"autoglm-runtime {autoglm_runtime.__version__}\n"
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{autoglm_runtime.__version__}]" in changelog


def test_runtime_dependencies_are_exactly_what_the_code_imports() -> None:
    declared = {Requirement(spec).name for spec in PYPROJECT["project"]["dependencies"]}
    imported = imported_top_level_names() - set(OPTIONAL.values()) - TEST_ONLY
    # Import names from the installed metadata; a distribution not installed here (tomli on 3.11+) by its name.
    modules = {name: _modules_of(name) or {name.replace("-", "_")} for name in declared}
    provided = set().union(*modules.values())
    assert imported <= provided, f"imported but not declared: {sorted(imported - provided)}"
    unused = sorted(name for name, names in modules.items() if not names & imported)
    assert unused == [], f"declared but never imported: {unused}"


def test_every_extra_is_imported_by_the_code_it_serves() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    imported = imported_top_level_names()
    for extra, import_name in OPTIONAL.items():
        assert import_name in imported, f"extra {extra!r} installs {import_name}, which nothing imports"
        assert extra in extras
    assert set(extras) == {*OPTIONAL, "server", "test", "dev"}


def _modules_of(distribution: str) -> set[str]:
    return {
        module
        for module, distributions in importlib.metadata.packages_distributions().items()
        if distribution in distributions
    }


def test_gitignore_ignores_a_venv_symlink_as_well_as_a_venv_directory() -> None:
    # ``.venv/`` matches directories only: a ``.venv`` symlink to an environment elsewhere would be added by
    # ``git add -A``. git matches the patterns itself here (``--no-index``: whether the path is tracked aside).
    patterns = (ROOT / ".gitignore").read_text().splitlines()
    assert ".venv" in patterns
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", "-q", ".venv"], cwd=ROOT, capture_output=True, check=False
    )
    assert done.returncode in (0, 128), done.stderr  # 128: not a git checkout (an sdist), the patterns above hold
    assert done.returncode != 1  # 1: git does not ignore it


def test_the_example_servers_uvicorn_hands_the_signals_back() -> None:
    # examples/model_server/__main__.py relies on uvicorn restoring the SIGINT/SIGTERM handlers it found and raising
    # the signals again once it has shut down: uvicorn 0.29's "cooperative signal handling". Before, the extras
    # allowed 0.27, whose event-loop handlers reset SIGTERM to its default action as the loop closed: a SIGTERM
    # during the clean-up killed the server with its workers still running, a Ctrl-C cut the clean-up short.
    extras = PYPROJECT["project"]["optional-dependencies"]
    for extra in ("server", "test"):
        (uvicorn,) = [Requirement(spec) for spec in extras[extra] if Requirement(spec).name == "uvicorn"]
        assert not uvicorn.specifier.contains("0.28.1"), f"the {extra} extra allows {uvicorn}"
        assert uvicorn.specifier.contains("0.29.0")
