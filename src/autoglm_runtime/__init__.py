"""autoglm-runtime: keep model servers' config in sync, load conflicting models isolated, guard inputs.

The three parts live in :mod:`autoglm_runtime.config`, :mod:`autoglm_runtime.isolation` and
:mod:`autoglm_runtime.validation`; error codes in :mod:`autoglm_runtime.errors`::

    from autoglm_runtime import ConfigClient, ConfigChange
"""

from __future__ import annotations

# typing.TYPE_CHECKING without importing typing: this module runs first in every `autoglm-runtime` command.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from autoglm_runtime.config import ConfigChange, ConfigClient
    from autoglm_runtime.errors import AutoGLMRuntimeError
del TYPE_CHECKING

__version__ = "0.1.0"

__all__ = ["AutoGLMRuntimeError", "ConfigChange", "ConfigClient", "__version__"]

#: Public name -> the module that defines it, imported on first access: the config part pulls in kazoo and
#: the error registry dataclasses, which `autoglm-runtime check-deps` and the validation guards need not pay for.
_LAZY = {
    "AutoGLMRuntimeError": "autoglm_runtime.errors",
    "ConfigChange": "autoglm_runtime.config",
    "ConfigClient": "autoglm_runtime.config",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'autoglm_runtime' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
