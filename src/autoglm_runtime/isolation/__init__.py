"""Conflicting models side by side: one virtual environment and one worker per model.

:class:`ModelLoader` builds (or reuses) each model's environment (:mod:`~autoglm_runtime.isolation.envs`)
and runs the model in a worker process or subinterpreter (:mod:`~autoglm_runtime.isolation.workers`); the
dependency analysis it checks new environments with lives in :mod:`autoglm_runtime.deps`.
:func:`collect_garbage` removes environments no loader has used for a while.
"""

from __future__ import annotations

from autoglm_runtime._library_logging import install_null_handler as _install_null_handler
from autoglm_runtime.isolation._scripts.protocol import ArrayValue
from autoglm_runtime.isolation.envs.build import BuildEvent, BuiltEnvironment, EnvironmentBuilder
from autoglm_runtime.isolation.envs.gc import GarbageReport, collect_garbage
from autoglm_runtime.isolation.loader import LoadedModel, ModelHealth, ModelLoader
from autoglm_runtime.isolation.workers.streams import AsyncModelStream, ModelStream

ArrayValue.__module__ = __name__  # defined in the stdlib-only wire format, which the worker loads by path

_install_null_handler()  # a library never configures logging; see autoglm_runtime._library_logging

__all__ = [
    "ArrayValue",
    "AsyncModelStream",
    "BuildEvent",
    "BuiltEnvironment",
    "EnvironmentBuilder",
    "GarbageReport",
    "LoadedModel",
    "ModelHealth",
    "ModelLoader",
    "ModelStream",
    "collect_garbage",
]
