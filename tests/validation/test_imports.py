"""The framework-free core imports without Starlette, grpcio, tokenizers or tiktoken."""

from __future__ import annotations

import subprocess
import sys

BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"starlette", "grpc", "tokenizers", "tiktoken", "anyio", "httpx"}:
            raise ImportError(f"blocked {name}")
        return None
sys.meta_path.insert(0, Block())
import autoglm_runtime.validation as v
guard = v.ContextWindowGuard(v.CallableTokenizer(str.split), 8)
print(guard.check("a b c").input_tokens)
try:
    import autoglm_runtime.validation.grpc
except ImportError as exc:
    print(exc)
"""


def test_core_imports_without_optional_libraries() -> None:
    done = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True, timeout=60, check=False)
    assert done.stderr == ""
    assert done.stdout.splitlines() == ["3", "blocked grpc"]
