"""autoglm-runtime: keep model servers' config in sync, load conflicting models isolated, guard inputs.

The three parts live in :mod:`autoglm_runtime.config`, :mod:`autoglm_runtime.isolation` and
:mod:`autoglm_runtime.validation`; error codes in :mod:`autoglm_runtime.errors`.
"""

from __future__ import annotations

import logging as _logging

from autoglm_runtime.errors import AutoGLMRuntimeError

__version__ = "0.1.0"

__all__ = ["AutoGLMRuntimeError", "__version__"]

# A library never configures logging; it only makes sure an unconfigured app sees no "no handler" noise.
_logging.getLogger("autoglm_runtime").addHandler(_logging.NullHandler())
