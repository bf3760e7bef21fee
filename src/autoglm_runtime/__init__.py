"""autoglm-runtime: keep model servers' config in sync, load conflicting models isolated, guard inputs.

The three parts live in :mod:`autoglm_runtime.config`, :mod:`autoglm_runtime.isolation` and
:mod:`autoglm_runtime.validation`; error codes in :mod:`autoglm_runtime.errors`::

    from autoglm_runtime import ConfigClient, ConfigChange
"""

from __future__ import annotations

import logging as _logging
import typing as _typing

from autoglm_runtime.errors import AutoGLMRuntimeError

if _typing.TYPE_CHECKING:
    from autoglm_runtime.config import ConfigChange, ConfigClient

__version__ = "0.1.0"

__all__ = ["AutoGLMRuntimeError", "ConfigChange", "ConfigClient", "__version__"]

# A library never configures logging; it only makes sure an unconfigured app sees no "no handler" noise.
_logging.getLogger("autoglm_runtime").addHandler(_logging.NullHandler())


def __getattr__(name: str) -> _typing.Any:
    # The config part pulls in kazoo; importing it lazily keeps `autoglm-runtime check-deps` and the
    # validation guards from paying for ZooKeeper support they do not use.
    if name in ("ConfigChange", "ConfigClient"):
        from autoglm_runtime import config

        return getattr(config, name)
    raise AttributeError(f"module 'autoglm_runtime' has no attribute {name!r}")
