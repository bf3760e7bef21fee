"""The error registry, the exception hierarchy and docs/error-codes.md agree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import autoglm_runtime.testing  # noqa: F401  (defines the harness's error classes)
from autoglm_runtime import _error_registry, errors
from autoglm_runtime.errors import (
    REGISTRY,
    AutoGLMRuntimeError,
    ConfigError,
    ContextWindowExceededError,
    HeaderTooLongError,
    IsolationError,
    ManifestError,
    ModelTimeoutError,
    UsageError,
    ValidationError,
    error_classes,
    lookup,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "error-codes.md"
_GRPC_NAMES = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
}  # fmt: skip


def _table(header: str) -> list[list[str]]:
    """The rows of the markdown table whose header row starts with ``header``."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows


def test_docs_list_exactly_the_registered_codes_with_their_text() -> None:
    documented = {row[0]: tuple(row[1:]) for row in _table("| code |")}
    registered = {e.code: (e.title, e.severity, e.meaning, e.action) for e in REGISTRY.values()}
    assert documented == registered


def test_docs_map_every_exception_class_as_the_code_does() -> None:
    documented = {row[0].strip("`"): tuple(row[1:]) for row in _table("| exception |")}
    actual = {
        cls.__name__: (cls.code, str(cls.http_status), cls.grpc_status, str(cls.exit_code)) for cls in error_classes()
    }
    assert documented == actual


def test_required_codes_are_registered() -> None:
    for code in ("E0101", "E0305", "E0409", "E0512", "E5009", "E0513", "E0514"):
        assert lookup(code).code == code
    assert lookup("E0514").severity == "warning"
    with pytest.raises(KeyError):
        lookup("E9999")


@pytest.mark.parametrize("cls", error_classes())
def test_every_class_carries_a_registered_code_and_valid_mappings(cls: type[AutoGLMRuntimeError]) -> None:
    assert re.fullmatch(r"E\d{4}", cls.code)
    assert cls.code in REGISTRY
    assert 400 <= cls.http_status <= 599
    assert cls.grpc_status in _GRPC_NAMES
    assert cls.exit_code in (errors.EXIT_FINDINGS, errors.EXIT_USAGE, errors.EXIT_OUTPUT)


def test_message_and_str_carry_the_code() -> None:
    exc = HeaderTooLongError("header 'authorization' is 600 characters long; the limit is 512", param="authorization")
    assert str(exc) == "E0512: header 'authorization' is 600 characters long; the limit is 512"
    assert exc.message == "header 'authorization' is 600 characters long; the limit is 512"
    assert exc.param == "authorization"
    assert (exc.http_status, exc.grpc_status, exc.exit_code) == (431, "INVALID_ARGUMENT", 1)
    assert exc.info.title == "Token or header too long"


def test_sub_bases_and_builtin_parents() -> None:
    assert issubclass(ConfigError, AutoGLMRuntimeError)
    assert issubclass(IsolationError, AutoGLMRuntimeError)
    assert issubclass(ValidationError, ValueError)
    assert issubclass(ManifestError, ValueError)
    assert issubclass(ModelTimeoutError, TimeoutError)
    assert issubclass(UsageError, ValueError)
    assert ContextWindowExceededError.http_status == 400
    assert ModelTimeoutError.code == "E0305"
    assert ModelTimeoutError.grpc_status == "DEADLINE_EXCEEDED"


def test_a_subclass_with_an_unregistered_code_is_refused() -> None:
    with pytest.raises(TypeError, match=r"Bogus\.code 'E9998' is not in the error registry"):

        class Bogus(AutoGLMRuntimeError):
            code = "E9998"


def test_registering_a_code_twice_is_refused() -> None:
    with pytest.raises(RuntimeError, match="error code E0409 is registered twice"):
        _error_registry._register("E0409", "x", "error", "x", "x")
