"""Every ```python block of README.md and docs/*.md runs as written, against a real ZooKeeper.

The convention the docs follow (docs/testing.md, "Documentation snippets"):

* the ```python blocks of one page run in order, in one fresh interpreter of their own, so a later block may use
  names an earlier block of the same page defined; pages never share anything;
* the working directory is a new temporary folder holding what the snippets name by relative path:
  ``wheels/`` (conflictlib 1.0 and 2.0 wheels), ``models/a`` and ``models/b`` (two models that need
  conflictlib==1.0 and ==2.0, with a ``predict`` method), ``tokenizer.json`` and ``models/llm/tokenizer.json``
  (a byte-level BPE trained like ``examples/model_server/assets.py``), ``models/llm/ranks.tiktoken`` and
  ``envs/`` (an environment root shared by every page, so environments are built once per run);
* ``AUTOGLM_ZK_HOSTS`` names the harness's ZooKeeper (with a chroot of the page's own), so a snippet that reads
  its hosts from it talks to a real server; anything else it connects to, it starts itself;
* output, shell sessions and config files use other fences (```text, ```bash, ```toml, ```json).

A page fails when any of its blocks raises; the failure names the page and the block's first line, and the
traceback points at lines of the markdown file.
"""

from __future__ import annotations

import ast
import base64
import importlib
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^(?P<indent> *)```(?P<info>[^`\s]*)(?P<attrs>[^`]*?)\s*$")
#: ```python needs=DIST: a snippet for a third-party server (SGLang, Ray Serve, ...) that is not installed here.
_NEEDS = re.compile(r"^needs=(?P<dists>[\w.,\[\]-]+)$")

# Runs in the page's interpreter: each block compiled against its markdown file, padded so line numbers match.
_DRIVER = textwrap.dedent(
    """
    import json, sys, traceback
    page, blocks = json.load(sys.stdin)
    namespace = {"__name__": "__main__"}
    for line, code in blocks:
        try:
            exec(compile("\\n" * line + code, page, "exec"), namespace)
        except BaseException:
            traceback.print_exc()
            print(f"DOCS-SNIPPET-FAILED {page}:{line}", file=sys.stderr)
            sys.exit(1)
    """
)


def python_blocks(text: str, *, needing: bool = False) -> list[tuple[int, str]]:
    """The ```python blocks of a markdown text, in order: (1-based line of the opening fence, dedented code).

    Blocks marked ``needs=DIST`` are left out, or with ``needing=True`` they are the only ones returned.
    """
    blocks: list[tuple[int, str]] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and not re.match(rf"^{opening['indent']}```\s*$", lines[end]):
            end += 1
        if opening["info"] == "python" and bool(_NEEDS.match(opening["attrs"].strip())) == needing:
            blocks.append((index + 1, textwrap.dedent("\n".join(lines[index + 1 : end])) + "\n"))
        index = end + 1
    return blocks


def run_page(
    page: Path, blocks: list[tuple[int, str]], cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _DRIVER],
        input=json.dumps([str(page), blocks]),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


# --- the workspace the snippets expect ---------------------------------------------------------------------

_MODEL = '''\
"""A toy model for the docs: says which conflictlib it runs with."""

import conflictlib


class Model:
    def predict(self, inputs: dict) -> dict:
        return {{"text": inputs["text"], "conflictlib": conflictlib.__version__, "model": {name!r}}}


def load() -> Model:
    return Model()
'''


def _write_model(directory: Path, name: str, requirement: str) -> None:
    directory.mkdir(parents=True)
    (directory / "model.toml").write_text(
        f'[model]\nname = "{name}"\nentrypoint = "{name}_model:load"\nrequirements = ["{requirement}"]\n'
    )
    (directory / f"{name}_model.py").write_text(_MODEL.format(name=name))


def _write_tiktoken_ranks(path: Path) -> None:
    """Every single byte as a token (rank = byte value), then a few merges: a valid tiktoken ranks file."""
    tokens = [bytes([i]) for i in range(256)] + [b"th", b"he", b"the", b" the", b"in", b"er"]
    path.write_text("".join(f"{base64.b64encode(t).decode()} {rank}\n" for rank, t in enumerate(tokens)))


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from autoglm_runtime.testing import build_wheel
    from examples.model_server.assets import build_tokenizer

    base = tmp_path_factory.mktemp("docs-assets")
    for version in ("1.0", "2.0"):
        build_wheel(base / "wheels", "conflictlib", version)
    _write_model(base / "models" / "a", "a", "conflictlib==1.0")
    _write_model(base / "models" / "b", "b", "conflictlib==2.0")
    build_tokenizer(base / "models" / "llm" / "tokenizer.json")
    _write_tiktoken_ranks(base / "models" / "llm" / "ranks.tiktoken")
    (base / "envs").mkdir()
    return base


@pytest.fixture
def workspace(assets: Path, tmp_path: Path) -> Path:
    """A fresh working directory with the assets linked in (read-only by convention; envs/ is a shared cache)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for name in ("wheels", "models", "envs"):
        (cwd / name).symlink_to(assets / name, target_is_directory=True)
    (cwd / "tokenizer.json").symlink_to(assets / "models" / "llm" / "tokenizer.json")
    return cwd


@pytest.fixture
def page_env(zk_hosts: str, zk_root: str) -> dict[str, str]:
    """The environment of a page's interpreter: the harness's ZooKeeper, chrooted at the test's own root."""
    env = dict(os.environ)
    env["AUTOGLM_ZK_HOSTS"] = f"{zk_hosts}{zk_root}"
    return env


# --- the tests ---------------------------------------------------------------------------------------------


def _pages_with_snippets() -> list[Path]:
    return [page for page in PAGES if python_blocks(page.read_text(encoding="utf-8"))]


@pytest.mark.parametrize("page", _pages_with_snippets(), ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_python_snippet_of_the_page_runs(page: Path, workspace: Path, page_env: dict[str, str]) -> None:
    blocks = python_blocks(page.read_text(encoding="utf-8"))
    result = run_page(page, blocks, workspace, page_env)
    assert result.returncode == 0, (
        f"a ```python block of {page.relative_to(ROOT)} failed as written "
        f"(blocks at lines {[line for line, _ in blocks]}):\n{result.stderr[-6000:]}"
    )


def test_the_runner_covers_the_readme_and_every_guide_with_snippets() -> None:
    covered = {page.relative_to(ROOT).as_posix() for page in _pages_with_snippets()}
    assert {"README.md", "docs/config-sync.md", "docs/isolation.md", "docs/testing.md"} <= covered
    # Python under another fence name would never run: the docs spell it ```python.
    other_spellings = [
        f"{page.relative_to(ROOT)}:{number}"
        for page in PAGES
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
        if (fence := _FENCE.match(line)) and fence["info"] in {"py", "py3", "python3", "pycon", "Python"}
    ]
    assert other_spellings == []


def _pages_with_framework_snippets() -> list[Path]:
    return [page for page in PAGES if python_blocks(page.read_text(encoding="utf-8"), needing=True)]


def our_imports(code: str) -> list[tuple[str, str]]:
    """``(module, name)`` for every ``from autoglm_runtime... import name`` of ``code``."""
    return [
        (node.module, alias.name)
        for node in ast.walk(ast.parse(code))
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "autoglm_runtime"
        for alias in node.names
    ]


@pytest.mark.parametrize("page", _pages_with_framework_snippets(), ids=lambda page: page.relative_to(ROOT).as_posix())
def test_framework_snippets_compile_and_name_what_the_sdk_exports(page: Path) -> None:
    """A ``needs=`` block cannot run here (its server is not installed), so what it says of the SDK is checked."""
    for line, code in python_blocks(page.read_text(encoding="utf-8"), needing=True):
        compile("\n" * line + code, str(page), "exec")
        imports = our_imports(code)
        assert imports, f"{page.relative_to(ROOT)}:{line}: a needs= block shows no autoglm_runtime import"
        for module, name in imports:
            assert hasattr(importlib.import_module(module), name), f"{page.relative_to(ROOT)}:{line}: {module}.{name}"


def test_our_imports_of_a_snippet() -> None:
    code = "import ray\nfrom autoglm_runtime.validation import ValidationMiddleware, HFTokenizer\nfrom x import y\n"
    assert our_imports(code) == [
        ("autoglm_runtime.validation", "ValidationMiddleware"),
        ("autoglm_runtime.validation", "HFTokenizer"),
    ]
    assert python_blocks("```python needs=ray[serve]\nimport ray\n```\n", needing=True) == [(1, "import ray\n")]
    assert python_blocks("```python needs=ray[serve]\nimport ray\n```\n") == []


def test_a_broken_snippet_fails_naming_its_page_and_line(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# A page\n\n```python\nx = 1\n```\n\nText.\n\n```text\nnot python: never run\n```\n\n"
        "```python\nassert x == 1\nundefined_name\n```\n"
    )
    blocks = python_blocks(page.read_text())
    assert blocks == [(3, "x = 1\n"), (13, "assert x == 1\nundefined_name\n")]
    result = run_page(page, blocks, tmp_path, dict(os.environ))
    assert result.returncode == 1
    assert f'File "{page}", line 15' in result.stderr  # the markdown line of `undefined_name`
    assert "NameError: name 'undefined_name' is not defined" in result.stderr
    assert result.stderr.rstrip().endswith(f"DOCS-SNIPPET-FAILED {page}:13")
