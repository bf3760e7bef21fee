"""Find and explain every dependency conflict before a model fails to load (E0101).

:func:`check_environment` probes an interpreter's environment and checks it alone and against models'
requirements; :func:`check_models` compares models with each other without any environment::

    from autoglm_runtime.deps.check import check_environment
    from autoglm_runtime.deps.manifest import load_manifest

    report = check_environment("/envs/a/bin/python", models=[load_manifest("models/a")])
    if not report.ok:
        print(report.render())

The finding kinds, their messages and the JSON form are described in ``docs/check-deps.md``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from autoglm_runtime.deps._graph import req_text
from autoglm_runtime.deps._scripts.probe import marker_environment
from autoglm_runtime.deps.findings import Finding, Report
from autoglm_runtime.deps.installed import RequirementGraph, check_installed
from autoglm_runtime.deps.manifest import ModelManifest
from autoglm_runtime.deps.probe import ProbedEnvironment, canonical, probe_environment
from autoglm_runtime.deps.specifiers import overlap

__all__ = ["EXTRA_REQUIREMENTS_MODEL", "check_environment", "check_models", "check_probed"]

#: The pseudo-model name under which ``extra_requirements`` are checked and reported.
EXTRA_REQUIREMENTS_MODEL = "extra-requirements"


@dataclass(frozen=True)
class _Model:
    name: str
    requirements: tuple[Requirement, ...]
    python: SpecifierSet | None


def _as_models(models: Sequence[ModelManifest], extra: Sequence[Requirement]) -> list[_Model]:
    out = [_Model(m.name, m.requirements, m.python) for m in models]
    if extra:
        out.append(_Model(EXTRA_REQUIREMENTS_MODEL, tuple(extra), None))
    return out


def check_environment(
    python: str | Path | None = None,
    models: Sequence[ModelManifest] = (),
    extra_requirements: Sequence[Requirement] = (),
) -> Report:
    """Check ``python``'s environment (the running interpreter's when ``None``), alone and for ``models``.

    Markers are evaluated for the target interpreter. ``extra_requirements`` are checked as one more model
    named ``extra-requirements``. Raises :class:`~autoglm_runtime.errors.UsageError` only when the
    interpreter cannot be probed; broken metadata becomes an ``invalid-metadata`` finding.
    """
    return check_probed(probe_environment(python), models, extra_requirements)


def check_probed(
    env: ProbedEnvironment, models: Sequence[ModelManifest] = (), extra_requirements: Sequence[Requirement] = ()
) -> Report:
    """:func:`check_environment` on an environment already described (by :func:`probe_environment`)."""
    all_models = _as_models(models, extra_requirements)
    findings = check_installed(env)
    findings += _check_against_env(env, all_models)
    findings += _cross_model(all_models, env.markers)
    return Report(
        findings=sorted(findings, key=Finding.sort_key),
        python=env.python,
        python_version=env.python_version,
        distributions=len(env.dists),
        models=tuple(m.name for m in all_models),
    )


def check_models(models: Sequence[ModelManifest], markers: Mapping[str, str] | None = None) -> Report:
    """Only the ``cross-model`` check: can these models share one environment at all?

    ``markers`` is the PEP 508 environment their requirements' markers are evaluated in (the running
    interpreter's when ``None``). No environment is probed, so the report has no ``python``.
    """
    if markers is None:
        markers = marker_environment()
    all_models = _as_models(models, ())
    findings = _cross_model(all_models, markers)
    return Report(findings=sorted(findings, key=Finding.sort_key), models=tuple(m.name for m in all_models))


def _active(model: _Model, markers: Mapping[str, str]) -> Iterable[Requirement]:
    for req in model.requirements:
        if req.marker is None or req.marker.evaluate({**markers, "extra": ""}):
            yield req


def _cross_model(models: Sequence[_Model], markers: Mapping[str, str]) -> list[Finding]:
    """``cross-model``: requirements of different models on one distribution that no version satisfies."""
    by_name: dict[str, dict[str, list[Requirement]]] = {}
    for model in models:
        for req in _active(model, markers):
            by_name.setdefault(canonical(req.name), {}).setdefault(model.name, []).append(req)
    findings: list[Finding] = []
    for key, per_model in sorted(by_name.items()):
        if len(per_model) < 2:
            continue
        specs = {
            m: SpecifierSet(",".join(str(r.specifier) for r in reqs if str(r.specifier)))
            for m, reqs in per_model.items()
        }
        texts = {m: ", ".join(req_text(r) for r in reqs) for m, reqs in per_model.items()}
        clashing = False
        for a, b in itertools.combinations(sorted(per_model), 2):
            if overlap(specs[a], specs[b]).empty:
                clashing = True
                findings.append(
                    Finding(
                        kind="cross-model",
                        packages=(key,),
                        models=(a, b),
                        message=(
                            f"model '{b}' needs {texts[b]} but model '{a}' needs {texts[a]}: "
                            "they cannot share one environment; load them isolated"
                        ),
                        hint=f"load '{a}' and '{b}' isolated (one environment each), or align their {key} requirements",
                        details={"requirements": {a: texts[a], b: texts[b]}},
                    )
                )
        if not clashing and len(per_model) > 2 and overlap(*specs.values()).empty:
            names = sorted(per_model)
            listed = "; ".join(f"model '{m}' needs {texts[m]}" for m in names)
            findings.append(
                Finding(
                    kind="cross-model",
                    packages=(key,),
                    models=tuple(names),
                    message=f"{listed}: no version of {key} satisfies all of them, so they cannot share one "
                    "environment; load them isolated",
                    hint=f"load these models isolated (one environment each), or align their {key} requirements",
                    details={"requirements": {m: texts[m] for m in names}},
                )
            )
    return findings


def _check_against_env(env: ProbedEnvironment, models: Sequence[_Model]) -> list[Finding]:
    """``requires-python``, ``missing``, ``model-vs-host`` and ``missing-extra`` for each model."""
    findings: list[Finding] = []
    graph = RequirementGraph(env, {m.name: list(_active(m, env.markers)) for m in models})
    version = env.python_version
    for model in models:
        where = f"model '{model.name}'"
        if model.python is not None and not env.supports(model.python):
            findings.append(
                Finding(
                    kind="requires-python",
                    packages=(),
                    models=(model.name,),
                    message=f"{where} requires Python {model.python}, but {env.python} is Python {version}",
                    hint=f"run model '{model.name}' with an interpreter matching {model.python}",
                    details={"requires_python": str(model.python), "python_version": version},
                )
            )
        for req in _active(model, env.markers):
            findings += graph.check_requirement(where, req, model=model.name)
    findings += graph.check_extras()
    return findings
