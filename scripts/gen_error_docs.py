"""Rewrite the two tables of docs/error-codes.md from the registry, keeping the prose around them.

    .venv/bin/python scripts/gen_error_docs.py      # after adding a code or an exception class

tests/test_errors.py fails while the document and the registry disagree.
"""

from pathlib import Path

import autoglm_runtime.testing  # noqa: F401  (defines the harness's error classes)
from autoglm_runtime.errors import REGISTRY, error_classes

DOC = Path(__file__).resolve().parents[1] / "docs" / "error-codes.md"

CODES = ["| code | title | severity | meaning | action |", "| --- | --- | --- | --- | --- |"] + [
    f"| {e.code} | {e.title} | {e.severity} | {e.meaning} | {e.action} |" for e in REGISTRY.values()
]
CLASSES = ["| exception | code | HTTP | gRPC | exit |", "| --- | --- | --- | --- | --- |"] + [
    f"| `{c.__name__}` | {c.code} | {c.http_status} | {c.grpc_status} | {c.exit_code} |" for c in error_classes()
]

lines = DOC.read_text(encoding="utf-8").splitlines()
out: list[str] = []
i = 0
while i < len(lines):
    if lines[i].startswith(("| code |", "| exception |")):
        out.extend(CODES if lines[i].startswith("| code |") else CLASSES)
        while i < len(lines) and lines[i].startswith("|"):
            i += 1
        continue
    out.append(lines[i])
    i += 1
DOC.write_text("\n".join(out) + "\n", encoding="utf-8")
print(f"wrote {DOC}: {len(REGISTRY)} codes, {len(error_classes())} exception classes")
