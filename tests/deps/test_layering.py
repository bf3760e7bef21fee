"""The dependency analysis stands alone: importing it loads nothing of environments or workers."""

from __future__ import annotations

import subprocess
import sys


def test_importing_deps_loads_nothing_of_isolation() -> None:
    code = (
        "import sys\n"
        "import autoglm_runtime.deps\n"
        "higher = ('autoglm_runtime.isolation', 'autoglm_runtime.config')\n"
        "print(sorted(m for m in sys.modules if m.startswith(higher)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout == "[]\n"


def _guarded(node: object, parents: dict[object, object]) -> bool:
    """True when ``node`` sits in a ``try`` that catches ImportError (or Exception): an optional import."""
    import ast

    while node in parents:
        node = parents[node]
        if isinstance(node, ast.Try):
            for handler in node.handlers:
                caught = handler.type
                names = [caught] if not isinstance(caught, ast.Tuple) else list(caught.elts)
                if any(isinstance(n, ast.Name) and n.id in ("ImportError", "Exception") for n in names):
                    return True
    return False


def test_the_scripts_import_only_the_standard_library() -> None:
    """Code under ``_scripts/`` runs inside interpreters where the SDK and its dependencies are not installed:
    anything else it imports must be optional (inside a ``try`` that catches the ImportError)."""
    import ast
    from pathlib import Path

    import autoglm_runtime

    root = Path(autoglm_runtime.__file__).parent
    scripts = sorted(p for p in root.rglob("_scripts/*.py") if p.name != "__init__.py")
    assert {p.relative_to(root).as_posix() for p in scripts} >= {
        "deps/_scripts/probe.py",
        "isolation/_scripts/worker_main.py",
        "isolation/_scripts/protocol.py",
    }
    for path in scripts:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            for name in names:
                top = name.split(".")[0]
                allowed = top in sys.stdlib_module_names or top == "__future__" or _guarded(node, parents)
                assert allowed, f"{path.name} imports {name} outside a try that catches its ImportError"
