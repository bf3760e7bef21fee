"""Each package's ``__all__`` is sorted, importable, and names every public object it defines."""

from __future__ import annotations

import importlib
import types

import pytest

PACKAGES = [
    "autoglm_runtime",
    "autoglm_runtime.config",
    "autoglm_runtime.deps",
    "autoglm_runtime.isolation",
    "autoglm_runtime.observability",
    "autoglm_runtime.validation",
    "autoglm_runtime.testing",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_complete(name: str) -> None:
    package = importlib.import_module(name)
    exported = list(package.__all__)
    assert exported == sorted(exported)
    for member in exported:
        assert hasattr(package, member), f"{name}.__all__ names {member!r}, which it does not define"
    public = {
        attr
        for attr, value in vars(package).items()
        if not attr.startswith("_") and not isinstance(value, types.ModuleType) and attr != "annotations"
    }
    assert public <= set(exported), f"{name} defines public names missing from __all__: {public - set(exported)}"


@pytest.mark.parametrize("name", PACKAGES)
def test_no_exported_name_claims_a_private_module(name: str) -> None:
    package = importlib.import_module(name)
    private = {
        member: module
        for member in package.__all__
        if isinstance(module := getattr(getattr(package, member), "__module__", None), str)
        and any(part.startswith("_") for part in module.split("."))
    }
    assert private == {}, f"{name} exports names whose __module__ is private: {private}"
