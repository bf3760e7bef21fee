"""The subinterpreter backend: a model runs in an isolated subinterpreter inside its worker process.

Design (see docs/isolation.md): the host server usually runs Python 3.11, which has no subinterpreter
API, and a model's environment is tied to its own interpreter anyway. So the subinterpreter lives in the
worker process started with the environment's interpreter (3.12+): the worker's main
interpreter creates one *isolated* subinterpreter (own GIL, own ``sys.modules``, single-phase-init
extensions refused) and runs the whole worker loop inside it, on the same socket protocol as the
process backend. Supervision -- timeouts, restarts, crash loops, health -- is the process backend's.

A model that refuses subinterpreters (an extension "does not support loading in subinterpreters", a
daemon thread, PyO3's or numpy's guards) fails the load with :class:`BackendUnsupportedError` (E0104).
``backend="auto"`` retries *any* failed subinterpreter load with the process backend (see
``ModelLoader``), since refusals come in more shapes than anyone can list.
"""

from __future__ import annotations

import os
import subprocess
from typing import Literal

from autoglm_runtime.errors import BackendUnsupportedError, UsageError
from autoglm_runtime.isolation.envs.key import InterpreterInfo

__all__ = ["MIN_VERSION", "Backend", "resolve_backend", "subinterpreters_supported"]

Backend = Literal["auto", "process", "subinterp"]
#: The first Python that creates isolated subinterpreters (PEP 684): ``_xxsubinterpreters`` on 3.12,
#: ``_interpreters`` (PEP 734's low-level module) from 3.13.
MIN_VERSION = (3, 12)
_PROBE = (
    "try:\n import _interpreters as m; m.destroy(m.create('isolated'))\n"
    "except ImportError:\n import _xxsubinterpreters as m; m.destroy(m.create(isolated=True))\n"
)
_SUPPORT: dict[str, bool] = {}


def subinterpreters_supported(info: InterpreterInfo) -> bool:
    """True when ``info``'s interpreter is CPython 3.12+ and can create an isolated subinterpreter."""
    if info.implementation != "cpython" or info.version_tuple[:2] < MIN_VERSION:
        return False
    path = os.path.realpath(info.executable)
    if path not in _SUPPORT:
        try:
            done = subprocess.run([path, "-I", "-S", "-c", _PROBE], capture_output=True, timeout=60, check=False)
            _SUPPORT[path] = done.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            _SUPPORT[path] = False
    return _SUPPORT[path]


def resolve_backend(requested: str, info: InterpreterInfo) -> Literal["process", "subinterp"]:
    """The backend to try first: ``auto`` picks ``subinterp`` where supported, else ``process``.

    Raises :class:`BackendUnsupportedError` when ``subinterp`` is asked for explicitly on an interpreter
    without support, and :class:`UsageError` for an unknown name.
    """
    if requested not in ("auto", "process", "subinterp"):
        raise UsageError(f"backend must be 'auto', 'process' or 'subinterp', got {requested!r}")
    if requested == "process":
        return "process"
    supported = subinterpreters_supported(info)
    if requested == "subinterp" and not supported:
        raise BackendUnsupportedError(
            f"the subinterpreter backend needs CPython {MIN_VERSION[0]}.{MIN_VERSION[1]}+ (isolated "
            f"subinterpreters), but the environment interpreter {info.executable} is {info.implementation} "
            f"{info.version}; use backend='process', or pass python= a 3.12+ interpreter"
        )
    return "subinterp" if supported else "process"
