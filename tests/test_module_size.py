"""STYLE.md: a module is one concept and stays under about 400 lines; past it, it is split by concept.

Checked for the parts whose modules were split to keep it (isolation/, deps/): a module growing past it fails here
rather than in a review."""

from __future__ import annotations

from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "autoglm_runtime"
LIMIT = 400


@pytest.mark.parametrize("part", ["isolation", "deps"])
def test_every_module_stays_under_about_400_lines(part: str) -> None:
    modules = sorted((SRC / part).rglob("*.py"))
    assert modules
    sizes = {str(path.relative_to(SRC)): len(path.read_text(encoding="utf-8").splitlines()) for path in modules}
    assert {name: lines for name, lines in sizes.items() if lines > LIMIT} == {}
