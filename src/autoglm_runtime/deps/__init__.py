"""Dependency analysis behind ``autoglm-runtime check-deps``: manifests, specifiers, probes and findings.

It imports nothing from :mod:`autoglm_runtime.isolation` (environments and workers), so the command starts
light. Check an interpreter's environment alone or against models, or models against each other::

    from autoglm_runtime.deps import check_environment, check_models, load_manifest

    report = check_environment()          # the running interpreter's environment
    print(report.render() if not report.ok else "no problems")

- :mod:`~autoglm_runtime.deps.manifest`: ``model.toml`` and requirements files;
- :mod:`~autoglm_runtime.deps.probe`: what an interpreter has installed, read by the stdlib-only script in
  ``_scripts/probe.py`` run inside that interpreter, and :mod:`~autoglm_runtime.deps.distributions`, that
  description as the checks use it (:class:`ProbedEnvironment`);
- :mod:`~autoglm_runtime.deps.installed`: checks over installed distributions (missing, incompatible,
  duplicate, shadowed-module, ...);
- :mod:`~autoglm_runtime.deps.check`: the entry points, and the checks between models and against a host;
- :mod:`~autoglm_runtime.deps.findings`: :class:`Finding` and :class:`Report` (human and JSON output);
- :mod:`~autoglm_runtime.deps.planning`: between models: contradictions, cross-model conflicts and
  :func:`plan_groups`; :mod:`~autoglm_runtime.deps.resolve` (``--resolve``, uv) and
  :mod:`~autoglm_runtime.deps.why` (``--why``).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from autoglm_runtime.deps.check import check_environment, check_models, check_probed
    from autoglm_runtime.deps.distributions import InstalledDist, ProbedEnvironment
    from autoglm_runtime.deps.findings import Finding, Report
    from autoglm_runtime.deps.manifest import ModelManifest, load_manifest, parse_requirements_file
    from autoglm_runtime.deps.planning import ModelRequirements, Plan, plan_groups
    from autoglm_runtime.deps.probe import probe_environment
del TYPE_CHECKING

__all__ = [
    "Finding",
    "InstalledDist",
    "ModelManifest",
    "ModelRequirements",
    "Plan",
    "ProbedEnvironment",
    "Report",
    "check_environment",
    "check_models",
    "check_probed",
    "load_manifest",
    "parse_requirements_file",
    "plan_groups",
    "probe_environment",
]

#: Public name -> the module defining it, imported on first access: ``check-deps`` imports only the modules
#: it uses (no TOML parser without a model.toml), and a stored report none at all.
_LAZY = {
    "Finding": "findings",
    "InstalledDist": "distributions",
    "ModelManifest": "manifest",
    "ModelRequirements": "planning",
    "Plan": "planning",
    "ProbedEnvironment": "distributions",
    "Report": "findings",
    "check_environment": "check",
    "check_models": "check",
    "check_probed": "check",
    "load_manifest": "manifest",
    "parse_requirements_file": "manifest",
    "plan_groups": "planning",
    "probe_environment": "probe",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'autoglm_runtime.deps' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"autoglm_runtime.deps.{module}"), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
