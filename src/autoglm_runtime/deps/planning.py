"""Which models can share one environment, judged by their direct requirements: contradictions, cross-model
conflicts, and a grouping plan.

Many models repeat the same requirement texts, so models are compared in *camps*: the models that need
one distribution with the same specifier set. A conflict between two camps is one finding naming every
model of both, instead of one finding per pair of models; each distinct combination of specifier sets is
judged once (:func:`~autoglm_runtime.deps.specifiers.disjoint`).

:func:`plan_groups` partitions models into groups whose direct requirements (and ``python`` ranges) can all hold in
one environment::

    from autoglm_runtime.deps.planning import plan_groups
    plan = plan_groups(models)            # ModelManifest objects
    plan.groups                           # (("a", "c"), ("b",))

Finding the fewest groups is graph colouring, which is NP-hard; the plan is *greedy* (most-constrained
model first, each into the first group it fits), so it may use more groups than the optimum, never fewer
than needed, and each group it gives is checked as a whole, not only pairwise. What the requirements pull in is
not judged (that takes a resolver): a group may still fail to install as one, and
:meth:`~autoglm_runtime.isolation.ModelLoader.share_environments` then gives its members environments of their own.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from autoglm_runtime.deps._graph import req_text
from autoglm_runtime.deps.findings import Finding
from autoglm_runtime.deps.specifiers import admitted, disjoint

__all__ = ["ModelRequirements", "Plan", "contradictions", "cross_model", "plan_groups"]

#: The key under which the plan compares models' Python ranges (no distribution's name starts with '@').
_PYTHON = "@python"


@dataclass(frozen=True)
class ModelRequirements:
    """A model as the planning sees it: its name, requirements, Python range and constraints (``-c`` files),
    which add no requirement but limit the versions of whatever is installed with the model, as pip applies
    them: to its own requirements, and to those of every model sharing its environment."""

    name: str
    requirements: tuple[Requirement, ...]
    python: SpecifierSet | None = None
    constraints: tuple[Requirement, ...] = ()

    def active(self, markers: Mapping[str, str]) -> Iterable[Requirement]:
        """The requirements whose markers hold in ``markers`` (with no extra)."""
        return _holding(self.requirements, markers)

    def active_constraints(self, markers: Mapping[str, str]) -> Iterable[Requirement]:
        """The constraints whose markers hold in ``markers``."""
        return _holding(self.constraints, markers)


def _holding(reqs: Iterable[Requirement], markers: Mapping[str, str]) -> Iterator[Requirement]:
    for req in reqs:
        if req.marker is None or req.marker.evaluate({**markers, "extra": ""}):
            yield req


def _canonical(name: str) -> str:
    from autoglm_runtime.deps.distributions import canonical

    return canonical(name)


#: A model's requirement on a distribution, or (``True``) one of its constraints.
_Term = tuple[Requirement, bool]


def _needs(models: Sequence[ModelRequirements], markers: Mapping[str, str]) -> dict[str, dict[str, list[_Term]]]:
    """distribution -> model -> that model's active requirements on it, then its constraints on it, for every
    distribution some model requires (a constraint alone installs nothing, so limits nothing)."""
    by_name: dict[str, dict[str, list[_Term]]] = {}
    for model in models:
        for req in model.active(markers):
            by_name.setdefault(_canonical(req.name), {}).setdefault(model.name, []).append((req, False))
    for model in models:
        for req in model.active_constraints(markers):
            per_model = by_name.get(_canonical(req.name))
            if per_model is not None:
                per_model.setdefault(model.name, []).append((req, True))
    return by_name


def _spec(terms: Sequence[_Term]) -> SpecifierSet:
    return SpecifierSet(",".join(text for text in (str(admitted(r)) for r, _ in terms) if text))


def _texts(terms: Sequence[_Term]) -> list[str]:
    return [req_text(r) + (" (constraint)" if constraint else "") for r, constraint in terms]


def _text(terms: Sequence[_Term]) -> str:
    return ", ".join(_texts(terms))


def contradictions(models: Sequence[ModelRequirements], markers: Mapping[str, str]) -> list[Finding]:
    """``model-contradiction``: one model's own requirements (and constraints) on a distribution it requires
    that no version satisfies."""
    findings = []
    for key, per_model in sorted(_needs(models, markers).items()):
        for name, terms in sorted(per_model.items()):
            if any(not c for _, c in terms) and len(terms) > 1 and disjoint(*(admitted(r) for r, _ in terms)):
                findings.append(
                    Finding(
                        kind="model-contradiction",
                        packages=(key,),
                        models=(name,),
                        message=f"model '{name}' needs {' and '.join(_texts(terms))}: no version of "
                        f"{key} satisfies all of them, so the model cannot be installed in any environment",
                        hint=f"fix the requirements of model '{name}' on {key} (they contradict each other)",
                        details={"requirements": _texts(terms)},
                    )
                )
    return findings


def _camps(specs: Mapping[str, SpecifierSet]) -> list[tuple[SpecifierSet, list[str]]]:
    """Models grouped by the specifier set they need (one camp per distinct set), in name order."""
    camps: dict[str, tuple[SpecifierSet, list[str]]] = {}
    for name in sorted(specs):
        spec = specs[name]
        camps.setdefault(str(spec), (spec, []))[1].append(name)
    return list(camps.values())


def _who(names: Sequence[str], texts: Mapping[str, str]) -> str:
    if len(names) == 1:
        return f"model '{names[0]}' needs {texts[names[0]]}"
    shown = ", ".join(f"'{n}'" for n in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"models {shown} need {texts[names[0]]}"


def cross_model(models: Sequence[ModelRequirements], markers: Mapping[str, str]) -> list[Finding]:
    """``cross-model``: requirements of different models on one distribution, or their Python ranges, that no
    version satisfies.

    One finding per pair of clashing camps (models needing the same set are one camp); when every pair
    overlaps but all together do not, one finding names all of them.
    """
    findings: list[Finding] = []
    for key, per_model in sorted(_needs(models, markers).items()):
        if len(per_model) > 1:
            specs = {m: _spec(terms) for m, terms in per_model.items()}
            findings += _clashes(key, key, specs, {m: _text(terms) for m, terms in per_model.items()})
    pythons = {m.name: m.python for m in models if m.python is not None}
    if len(pythons) > 1:
        findings += _clashes(None, "Python", pythons, {m: f"Python {spec}" for m, spec in pythons.items()})
    return findings


def _clashes(key: str | None, label: str, specs: Mapping[str, SpecifierSet], texts: Mapping[str, str]) -> list[Finding]:
    """The ``cross-model`` findings on one distribution ``key`` (``None`` for the Python range)."""
    findings: list[Finding] = []
    packages = (key,) if key else ()
    camps = _camps(specs)
    clashing = False
    for (spec_a, a), (spec_b, b) in itertools.combinations(camps, 2):
        if not disjoint(spec_a, spec_b):
            continue
        clashing = True
        names = tuple(sorted(a + b))
        if len(names) == 2:
            hint = f"load '{names[0]}' and '{names[1]}' isolated (one environment each), or align their {label} "
            hint += "requirements"
        else:
            hint = f"load these models in separate environments (see --plan), or align their {label} requirements"
        first, second = (a, b) if a[0] < b[0] else (b, a)
        findings.append(
            Finding(
                kind="cross-model",
                packages=packages,
                models=names,
                message=f"{_who(second, texts)} but {_who(first, texts)}: they cannot share one environment; "
                "load them isolated",
                hint=hint,
                details={"requirements": {m: texts[m] for m in names}},
            )
        )
    if not clashing and len(camps) > 2 and disjoint(*(spec for spec, _ in camps)):
        names = tuple(sorted(specs))
        listed = "; ".join(f"model '{m}' needs {texts[m]}" for m in names)
        findings.append(
            Finding(
                kind="cross-model",
                packages=packages,
                models=names,
                message=f"{listed}: no version of {label} satisfies all of them, so they cannot share one "
                "environment; load them isolated",
                hint=f"load these models isolated (one environment each), or align their {label} requirements",
                details={"requirements": {m: texts[m] for m in names}},
            )
        )
    return findings


@dataclass(frozen=True)
class Plan:
    """Models partitioned into groups whose direct requirements can share one environment (found greedily)."""

    groups: tuple[tuple[str, ...], ...]
    #: Models that fit no environment at all (their own requirements contradict each other).
    unplaceable: tuple[str, ...] = ()
    method: str = "greedy"

    def to_json(self) -> dict[str, Any]:
        """``{"method": "greedy", "groups": [[...], ...], "unplaceable": [...]}``."""
        return {"method": self.method, "groups": [list(g) for g in self.groups], "unplaceable": list(self.unplaceable)}

    def render(self) -> str:
        """Human lines: how many environments, and which models share each."""
        count = len(self.groups)
        lines = [
            f"plan: {count} environment{'' if count == 1 else 's'} for "
            f"{sum(len(g) for g in self.groups)} models, grouped by their direct requirements (greedy grouping: "
            "may not be the fewest possible)"
        ]
        lines += [f"  group {i}: {', '.join(group)}" for i, group in enumerate(self.groups, start=1)]
        if any(len(group) > 1 for group in self.groups):
            lines.append("  not judged: what the requirements pull in, which may still clash within a group")
        if self.unplaceable:
            lines.append(f"  no environment (contradictory requirements): {', '.join(self.unplaceable)}")
        return "\n".join(lines) + "\n"


def plan_groups(models: Sequence[ModelRequirements], markers: Mapping[str, str] | None = None) -> Plan:
    """Partition ``models`` into groups whose direct requirements can share one environment, greedily.

    A model joins the first group in which, for every distribution, the specifier sets of all members
    and its own still have a common version; the most-constrained models are placed first.
    """
    if markers is None:
        from autoglm_runtime.deps._scripts.probe import marker_environment

        markers = marker_environment()
    own: dict[str, dict[str, SpecifierSet]] = {}  # what it requires, narrowed by its own constraints
    limits: dict[str, dict[str, SpecifierSet]] = {}  # what it only constrains
    for model in models:
        merged: dict[str, list[_Term]] = {}
        for req in model.active(markers):
            merged.setdefault(_canonical(req.name), []).append((req, False))
        constrained: dict[str, list[_Term]] = {}
        for req in model.active_constraints(markers):
            key = _canonical(req.name)
            (merged[key] if key in merged else constrained.setdefault(key, [])).append((req, True))
        own[model.name] = {key: _spec(terms) for key, terms in merged.items()}
        limits[model.name] = {key: _spec(terms) for key, terms in constrained.items()}
        if model.python is not None:
            own[model.name][_PYTHON] = model.python
    bad = {f.models[0] for f in contradictions(models, markers)}
    clashes: dict[str, int] = {m.name: 0 for m in models}
    for finding in cross_model(models, markers):
        for name in finding.models:
            clashes[name] += 1
    order = sorted((m.name for m in models if m.name not in bad), key=lambda n: (-clashes[n], n))
    # A group: its members, what they require (narrowed by their constraints), what they only constrain.
    groups: list[tuple[list[str], dict[str, SpecifierSet], dict[str, SpecifierSet]]] = []
    for name in order:
        for members, specs, limited in groups:
            fits = all(_fit(specs, key, spec) and _fit(limited, key, spec) for key, spec in own[name].items())
            # a constraint limits the others' only where a member requires the distribution
            limits_fit = all(
                _fit(specs, key, spec) and (key not in specs or _fit(limited, key, spec))
                for key, spec in limits[name].items()
            )
            if fits and limits_fit:
                members.append(name)
                _narrow(specs, own[name])
                _narrow(limited, limits[name])
                break
        else:
            groups.append(([name], dict(own[name]), dict(limits[name])))
    ordered = tuple(tuple(sorted(members)) for members, _, _ in groups)
    return Plan(groups=tuple(sorted(ordered)), unplaceable=tuple(sorted(bad)))


def _fit(specs: Mapping[str, SpecifierSet], key: str, spec: SpecifierSet) -> bool:
    return key not in specs or not disjoint(specs[key], spec)


def _narrow(specs: dict[str, SpecifierSet], more: Mapping[str, SpecifierSet]) -> None:
    for key, spec in more.items():
        specs[key] = spec if key not in specs else SpecifierSet(f"{specs[key]},{spec}".strip(","))
