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


def test_the_scripts_import_only_the_standard_library() -> None:
    """Code under ``_scripts/`` runs inside interpreters where the SDK and its dependencies are not installed."""
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
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top == "__future__", f"{path.name} imports {name}"
