"""The framework-free core imports without Starlette, grpcio, tokenizers or tiktoken."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from types import ModuleType

import pytest

from autoglm_runtime.errors import UsageError

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


@pytest.mark.parametrize(
    ("module", "build", "message"),
    [
        (
            "jinja2",
            lambda v: v.ChatTemplate("{{ messages }}"),
            "chat templates need jinja2: pip install 'autoglm-runtime[chat]' (jinja2>=3.1)",
        ),
        (
            "tokenizers",
            lambda v: v.HFTokenizer.from_file("tokenizer.json"),
            "HFTokenizer needs tokenizers: pip install 'autoglm-runtime[tokenizers]' (tokenizers>=0.15)",
        ),
        (
            "tiktoken",
            lambda v: v.TiktokenTokenizer.from_file("ranks.tiktoken", pat_str=r"\S+"),
            "TiktokenTokenizer needs tiktoken: pip install 'autoglm-runtime[tiktoken]' (tiktoken>=0.5)",
        ),
    ],
)
def test_a_missing_optional_library_is_a_usage_error_naming_the_extra(
    module: str, build: Callable[[ModuleType], object], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: a bare ModuleNotFoundError, where typed views and check-deps --resolve already said what to install.
    import autoglm_runtime.validation as validation

    monkeypatch.setitem(sys.modules, module, None)  # an import of it now fails as if it were not installed
    with pytest.raises(UsageError) as info:
        build(validation)
    assert info.value.message == message
