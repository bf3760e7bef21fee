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

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from packaging.requirements import Requirement

from autoglm_runtime.deps._scripts.probe import marker_environment
from autoglm_runtime.deps.distributions import ProbedEnvironment, canonical
from autoglm_runtime.deps.findings import Finding, Report
from autoglm_runtime.deps.installed import RequirementGraph, check_graph
from autoglm_runtime.deps.probe import probe_environment

if TYPE_CHECKING:
    from pathlib import Path

    from autoglm_runtime.deps.manifest import ModelManifest
    from autoglm_runtime.deps.planning import ModelRequirements

__all__ = ["EXTRA_REQUIREMENTS_MODEL", "check_environment", "check_models", "check_probed"]

#: The pseudo-model name under which ``extra_requirements`` are checked and reported.
EXTRA_REQUIREMENTS_MODEL = "extra-requirements"


def _as_models(models: Sequence[ModelManifest], extra: Sequence[Requirement]) -> list[ModelRequirements]:
    from autoglm_runtime.deps.planning import ModelRequirements  # here: an environment alone never needs it

    out = [ModelRequirements(m.name, m.requirements, m.python, m.constraints) for m in models]
    if extra:
        out.append(ModelRequirements(EXTRA_REQUIREMENTS_MODEL, tuple(extra), None))
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
    all_models = _as_models(models, extra_requirements) if models or extra_requirements else []
    # One graph for the environment's checks and the models': its edges are the costly part to build.
    graph = RequirementGraph(env, {m.name: list(m.active(env.markers)) for m in all_models})
    findings = check_graph(graph)
    if all_models:  # an environment alone: the model checks (and the planning module) have nothing to do
        from autoglm_runtime.deps.planning import contradictions, cross_model

        findings += _check_against_env(graph, all_models)
        findings += contradictions(all_models, env.markers) + cross_model(all_models, env.markers)
    return Report(
        findings=sorted(findings, key=Finding.sort_key),
        python=env.python,
        python_version=env.python_version,
        distributions=len(env.dists),
        models=tuple(m.name for m in all_models),
    )


def check_models(models: Sequence[ModelManifest], markers: Mapping[str, str] | None = None) -> Report:
    """Only the checks between models (``model-contradiction``, ``cross-model``): can they share one environment?

    ``markers`` is the PEP 508 environment their requirements' markers are evaluated in (the running
    interpreter's when ``None``). No environment is probed, so the report has no ``python``.
    """
    if markers is None:
        markers = marker_environment()
    from autoglm_runtime.deps.planning import contradictions, cross_model

    all_models = _as_models(models, ())
    findings = contradictions(all_models, markers) + cross_model(all_models, markers)
    return Report(findings=sorted(findings, key=Finding.sort_key), models=tuple(m.name for m in all_models))


def _check_against_env(graph: RequirementGraph, models: Sequence[ModelRequirements]) -> list[Finding]:
    """``requires-python``, ``missing``, ``model-vs-host`` and ``missing-extra`` for each model (``graph``: the
    environment's, with these models)."""
    findings: list[Finding] = []
    env = graph.env
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
        required = set()
        for req in model.active(env.markers):
            findings += graph.check_requirement(where, req, model=model.name)
            required.add(canonical(req.name))
        for req in model.active_constraints(env.markers):  # pip limits what the model requires by them
            if canonical(req.name) in required and canonical(req.name) in env.winners:
                findings += graph.check_requirement(f"{where} (by a constraint)", req, model=model.name)
    findings += graph.check_extras()
    return findings
