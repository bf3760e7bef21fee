"""How a model is served: the ``[serving]`` table of its ``model.toml``, overridable per ``load()``.

::

    [serving]
    replicas = 2              # worker processes for this model (default 1)
    concurrency = "threads"   # "serial" (default), "threads" (the model is thread-safe) or "async"
    max_inflight = 4          # calls at once per replica (default 1; above 1 needs threads or async)
    max_queue = 64            # calls waiting for a free replica before E0106 refuses more (default 64)

Every problem in the table is reported at once, as :class:`ManifestError` (E0102) naming the field.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from autoglm_runtime.deps.manifest import SERVING_DEFAULTS, serving_problems
from autoglm_runtime.errors import ManifestError
from autoglm_runtime.isolation.workers.process import Concurrency

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["ServingOptions", "read_serving"]


@dataclass(frozen=True)
class ServingOptions:
    """Replicas, concurrency, in-flight limit and queue bound of one model (see the module docstring)."""

    replicas: int = 1
    concurrency: Concurrency = "serial"
    max_inflight: int = 1
    max_queue: int = 64

    def with_overrides(self, source: str, **overrides: Any) -> ServingOptions:
        """These options with the non-``None`` ``overrides`` applied, checked again (``source`` names them)."""
        given = {key: value for key, value in overrides.items() if value is not None}
        return _checked(source, {**self.__dict__, **given})


def _checked(source: str, table: dict[str, Any]) -> ServingOptions:
    problems = serving_problems(table)
    if problems:
        raise ManifestError(f"{source}: " + "; ".join(f"serving.{key}: {what}" for key, what in problems))
    return replace(ServingOptions(), **{key: table[key] for key in SERVING_DEFAULTS if key in table})


def read_serving(source: Path) -> ServingOptions:
    """The ``[serving]`` table of the manifest at ``source`` (defaults where it has none)."""
    try:
        with source.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ManifestError(f"{source}: cannot read the [serving] table: {exc}") from exc
    table = data.get("serving", {})
    if not isinstance(table, dict):
        raise ManifestError(f"{source}: serving must be a table ([serving]), got {table!r}")
    return _checked(str(source), table)
