"""The checks of one environment: metadata, duplicates, shadowed modules, requirements, extras, cycles."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from autoglm_runtime.deps._copies import duplicates
from autoglm_runtime.deps._graph import Edges, cycles, req_text, shortest_chain
from autoglm_runtime.deps._platform import unsupported_wheels
from autoglm_runtime.deps._shadowed import shadowed_modules
from autoglm_runtime.deps.distributions import InstalledDist, ProbedEnvironment, canonical
from autoglm_runtime.deps.findings import Finding
from autoglm_runtime.deps.specifiers import admitted, disjoint, satisfies

__all__ = ["RequirementGraph", "check_graph", "check_installed"]


class RequirementGraph:
    """Checks requirements against the installed winners and explains how a version got installed.

    ``model_requirements`` maps model names to their active requirements; they are the first roots tried
    when a ``model-vs-host`` chain is explained. Requested extras are collected by
    :meth:`check_requirement` and checked by :meth:`check_extras`.
    """

    def __init__(self, env: ProbedEnvironment, model_requirements: Mapping[str, Sequence[Requirement]]) -> None:
        self.env = env
        self.edges: dict[str, list[tuple[str, Requirement]]] = {}
        for key, dist in env.winners.items():
            self.edges[key] = [(canonical(r.name), r) for r in dist.requires if env.evaluate(r.marker)]
        required = {dep for deps in self.edges.values() for dep, _ in deps}
        self.models = dict(model_requirements)
        for name, reqs in self.models.items():
            self.edges[f"model {name}"] = [(canonical(r.name), r) for r in reqs]
        self.root_dists = sorted(k for k in env.winners if k not in required)
        self.labels = {key: dist.label for key, dist in env.winners.items()}
        #: (where, models, requiring distribution or None for a model, provider, extra, requirement)
        self._extras: list[tuple[str, tuple[str, ...], str | None, str, str, Requirement]] = []

    def check_requirement(
        self, where: str, req: Requirement, *, requirer: str | None = None, model: str | None = None
    ) -> list[Finding]:
        """``missing`` / ``incompatible`` (a distribution's) or ``model-vs-host`` (a model's) for ``req``.

        ``where`` names the requirer in messages ("pandas 2.1.4" or "model 'a'"); ``requirer`` is the
        requiring distribution's key, ``model`` the requiring model's name.
        """
        models = (model,) if model else ()
        key = canonical(req.name)
        dist = self.env.winners.get(key)
        if dist is None:
            return [
                Finding(
                    kind="missing",
                    packages=tuple(p for p in (requirer, key) if p),
                    models=models,
                    message=f"{where} requires {req_text(req)}, but {req.name} is not installed",
                    hint=f"install it: pip install '{req_text(req)}'",
                    details={"requirement": req_text(req)},
                )
            ]
        for wanted in sorted(req.extras):
            self._extras.append((where, models, requirer, key, canonical(wanted), req))
        # A model's direct reference to a wheel admits that wheel's version; a distribution's is judged as pip
        # check judges it (by its specifier alone).
        if satisfies(admitted(req) if model is not None else req.specifier, dist.parsed_version):
            return []
        if model is not None:
            return [self._model_vs_host(where, model, req, dist)]
        name = self.env.winners[requirer].name if requirer else where
        why, involved, details = self._between_models(requirer, req, dist) if requirer else ("", (), {})
        hint = f"install a version of {req.name} matching '{req.specifier}', or a version of {name} that accepts "
        hint += dist.label
        if len(involved) > 1:
            hint += f", or load models {', '.join(repr(m) for m in involved[:-1])} and {involved[-1]!r} in separate "
            hint += "environments (see --plan)"
        return [
            Finding(
                kind="incompatible",
                packages=(requirer or key, key),
                models=involved,
                message=f"{where} requires {req_text(req)}, but {dist.label} is installed{why}",
                hint=hint,
                details={"requirement": req_text(req), "installed": dist.version, **details},
            )
        ]

    def _between_models(
        self, requirer: str, req: Requirement, dist: InstalledDist, via: str | None = None
    ) -> tuple[str, tuple[str, ...], dict[str, object]]:
        """For an installed distribution's requirement the installed ``dist`` fails, when models are checked:
        which models need the requirer (each one's chain to it, then ``via``, the extra it requests, when the
        requirement is that extra's) and what holds ``dist`` there, as the end of the message, the models
        involved and details (nothing when no model needs the requirer)."""
        needed_by: dict[str, list[str]] = {}
        for name in sorted(self.models):
            to_requirer = shortest_chain(self.edges, [f"model {name}"], requirer, self.labels)
            if to_requirer is not None:
                needed_by[name] = [*to_requirer[:-1], self.labels[requirer], *([via] if via else []), req_text(req)]
        if not needed_by:
            return "", (), {}
        # Here a model's own requirement may end the chain: it conflicts with what the others need.
        holder = self._chain(None, dist.key, req.specifier, last=tuple(needed_by), held=False)
        needs = " and ".join(" -> ".join(chain) for chain in needed_by.values())
        models = set(needed_by)
        if holder is None:
            why = f"; needed by {needs}"
        else:
            why = f"; {needs} conflict{'s' if len(needed_by) == 1 else ''} with {' -> '.join(holder)}"
            models.update(m for m in self.models if holder[0] == f"model {m}")
        return why, tuple(sorted(models)), {"needed_by": needed_by, "chain": holder or []}

    def _chain(
        self, model: str | None, key: str, wanted: SpecifierSet, last: tuple[str, ...] = (), *, held: bool = True
    ) -> list[str] | None:
        """Why ``key``'s installed version is there and not one in ``wanted``: the shortest chain, from
        another model than ``model`` if one leads to it (of equal chains, one from a model not in ``last``), else
        from a root, whose last requirement the installed version satisfies and which excludes every version in
        ``wanted``.

        ``held``: the last requirement must be an installed distribution's, so that the chain says what holds
        the version in the environment. A model's own requirement holds nothing there (the models checked
        are not installed, only compared): it is a clash between models, which ``cross-model`` reports.
        """
        version = self.env.winners[key].parsed_version

        def accept(node: str, req: Requirement) -> bool:
            if held and node not in self.env.winners:
                return False
            return satisfies(req.specifier, version) and disjoint(req.specifier, wanted)

        models = [f"model {m}" for m in sorted(self.models, key=lambda m: (m in last, m)) if m != model]
        return shortest_chain(self.edges, models, key, self.labels, accept) or shortest_chain(
            self.edges, self.root_dists, key, self.labels, accept
        )

    def _holders(self, key: str, wanted: SpecifierSet) -> tuple[list[str], list[str]]:
        """Installed distributions requiring ``key``: those whose ranges exclude ``wanted``, and the others."""
        excluding: list[str] = []
        accepting: list[str] = []
        for requirer, deps in sorted(self.edges.items()):
            if requirer.startswith("model "):
                continue
            for dep, req in deps:
                if dep == key:
                    label = f"{self.labels[requirer]} ({req_text(req)})"
                    (excluding if disjoint(req.specifier, wanted) else accepting).append(label)
        return excluding, accepting

    def _why(self, model: str, req: Requirement, key: str, wanted: SpecifierSet) -> tuple[str, dict[str, object]]:
        """The end of a ``model-vs-host`` message (``wanted``: the versions ``req`` admits): what holds the
        installed version, and its details."""
        chain = self._chain(model, key, wanted)
        excluding, accepting = self._holders(key, wanted)
        rivals = self._rivals(model, key, wanted)
        details: dict[str, object] = {"chain": chain or [], "excluded_by": excluding, "models_excluding": rivals}
        if chain is not None:
            why = f", pulled in by {' -> '.join(chain)}"
            others = [h for h in excluding if not h.startswith(chain[-2] + " (")] if len(chain) > 1 else excluding
            if others:
                why += f"; also excluded by {', '.join(others)}"
        elif excluding:
            why = f", which {', '.join(excluding)} {'requires' if len(excluding) == 1 else 'require'}"
        elif accepting:
            why = (
                f"; no installed distribution excludes {req_text(req)} ({', '.join(accepting)} "
                f"{'accepts' if len(accepting) == 1 else 'accept'} it), so {req.name} can be changed to match"
            )
        else:
            why = ", which no installed distribution requires" if rivals else ", which nothing else requires"
        return why + self._rivals_text(model, rivals), details

    @staticmethod
    def _rivals_text(model: str, rivals: Mapping[str, str]) -> str:
        """The end of a message naming the other models whose own requirements exclude ``model``'s range."""
        if not rivals:
            return ""
        needs = " and ".join(f"model '{m}' needs {r}" for m, r in rivals.items())
        return f"; {needs}, so model '{model}' cannot share an environment with {'it' if len(rivals) == 1 else 'them'}"

    def _rivals(self, model: str, key: str, wanted: SpecifierSet) -> dict[str, str]:
        """The other models whose own requirements on ``key`` exclude ``wanted``: model -> requirement text."""
        rivals: dict[str, str] = {}
        for name, reqs in sorted(self.models.items()):
            clashing = [r for r in reqs if canonical(r.name) == key and disjoint(admitted(r), wanted)]
            if name != model and clashing:
                rivals[name] = req_text(clashing[0])
        return rivals

    def _model_vs_host(self, where: str, model: str, req: Requirement, dist: InstalledDist) -> Finding:
        wanted = admitted(req)
        why, details = self._why(model, req, dist.key, wanted)
        return Finding(
            kind="model-vs-host",
            packages=(dist.key,),
            models=(model,),
            message=f"{where} needs {req_text(req)} but the environment has {dist.label}{why}",
            hint=f"load model '{model}' isolated in its own environment, or change the environment so that "
            f"{req.name} matches '{wanted}'",
            details={"requirement": req_text(req), "installed": dist.version, **details},
        )

    def check_extras(self) -> list[Finding]:
        """``missing-extra`` (and mismatched versions) for every extra requested so far, transitively."""
        findings: list[Finding] = []
        done: set[tuple[str, str, str]] = set()
        while self._extras:
            where, models, requirer, key, extra, req = self._extras.pop(0)
            if (where, key, extra) in done:
                continue
            done.add((where, key, extra))
            dist = self.env.winners[key]
            if extra not in dist.provides_extra:
                findings.append(
                    Finding(
                        kind="missing-extra",
                        packages=tuple(p for p in (requirer, key) if p),
                        models=models,
                        message=f"{where} requires {req_text(req)}, but {dist.label} has no extra '{extra}'",
                        hint=f"drop the extra '{extra}' or install a version of {req.name} that provides it",
                        details={"requirement": req_text(req), "extra": extra, "needs": None},
                    )
                )
                continue
            for dep in dist.requires:
                if dep.marker is None or not self.env.evaluate(dep.marker, extra):
                    continue
                if self.env.evaluate(dep.marker, ""):
                    continue  # a base requirement, checked with the distribution itself
                finding = self._check_extra_dep(where, models, req, requirer, dist=dist, extra=extra, dep=dep)
                if finding is not None:
                    findings.append(finding)
        return findings

    def _check_extra_dep(
        self,
        where: str,
        models: tuple[str, ...],
        req: Requirement,
        requirer: str | None,
        *,
        dist: InstalledDist,
        extra: str,
        dep: Requirement,
    ) -> Finding | None:
        dep_key = canonical(dep.name)
        installed = self.env.winners.get(dep_key)
        through = f"{where} requires {req_text(req)}, whose extra '{extra}' needs {req_text(dep)}"
        if installed is None:
            return Finding(
                kind="missing-extra",
                packages=tuple(p for p in (requirer, dist.key, dep_key) if p),
                models=models,
                message=f"{through}, but {dep.name} is not installed",
                hint=f"install the extra's requirements: pip install '{dist.name}[{extra}]=={dist.version}'",
                details={"requirement": req_text(req), "extra": extra, "needs": req_text(dep)},
            )
        for wanted in sorted(dep.extras):  # the extra's own extras: requested by this distribution
            self._extras.append((dist.label, models, dist.key, dep_key, canonical(wanted), dep))
        if satisfies(dep.specifier, installed.parsed_version):
            return None
        kind: Literal["model-vs-host", "incompatible"] = "model-vs-host" if models else "incompatible"
        chain = self._chain(models[0], dep_key, dep.specifier) if models else None
        why = f", pulled in by {' -> '.join(chain)}" if chain else ""
        more: dict[str, object] = {}
        if models:
            more["models_excluding"] = rivals = self._rivals(models[0], dep_key, dep.specifier)
            why += self._rivals_text(models[0], rivals)
        if not models and requirer is not None:  # a distribution's extra: the models that need that distribution
            via = f"{dist.name}[{extra}] {dist.version}"
            why, models, more = self._between_models(requirer, dep, installed, via=via)
            chain = more.pop("chain", None)  # type: ignore[assignment]
        return Finding(
            kind=kind,
            packages=tuple(p for p in (requirer, dist.key, dep_key) if p),
            models=models,
            message=f"{through}, but {installed.label} is installed{why}",
            hint=f"install a version of {dep.name} matching '{dep.specifier}', or drop the extra '{extra}'",
            details={
                "requirement": req_text(req),
                "extra": extra,
                "needs": req_text(dep),
                "installed": installed.version,
                "chain": chain or [],
                **more,
            },
        )


def check_installed(
    env: ProbedEnvironment, model_requirements: Mapping[str, Sequence[Requirement]] | None = None
) -> list[Finding]:
    """Every finding about the environment itself; ``model_requirements`` (model name -> its active
    requirements) decide whether a base interpreter's distribution the environment shadows is needed, and
    which models an ``incompatible`` finding names (those that need its requiring distribution)."""
    return check_graph(RequirementGraph(env, model_requirements or {}))


def check_graph(graph: RequirementGraph) -> list[Finding]:
    """:func:`check_installed` on a graph already built, which the model checks can then use too (its
    requested extras are checked and consumed here)."""
    env = graph.env
    findings = _invalid_metadata(env) + duplicates(env) + shadowed_modules(env, graph.edges) + unsupported_wheels(env)
    version = env.python_version
    for key, dist in sorted(env.winners.items()):
        if dist.requires_python is not None and not env.supports(dist.requires_python):
            findings.append(
                Finding(
                    kind="requires-python",
                    packages=(key,),
                    message=f"{dist.label} requires Python {dist.requires_python}, but {env.python} is "
                    f"Python {version}",
                    hint=f"install a version of {dist.name} that supports Python {version}",
                    details={"requires_python": str(dist.requires_python), "python_version": version},
                )
            )
        for _, req in graph.edges[key]:
            findings += graph.check_requirement(dist.label, req, requirer=key)
    findings += graph.check_extras()
    dist_edges: Edges = {k: v for k, v in graph.edges.items() if k in env.winners}
    for cycle in cycles(dist_edges):
        walk = " -> ".join(env.winners[k].label for k in cycle)
        findings.append(
            Finding(
                kind="cycle",
                packages=tuple(sorted(set(cycle))),
                message=f"dependency cycle: {walk}",
                hint="nothing to do unless the cycle is unintended; these distributions must be upgraded together",
                details={"cycle": cycle},
            )
        )
    return findings


def _invalid_metadata(env: ProbedEnvironment) -> list[Finding]:
    findings = []
    for dist in env.dists:
        for error in dist.errors:
            findings.append(
                Finding(
                    kind="invalid-metadata",
                    packages=(dist.key,) if dist.name else (),
                    message=f"invalid metadata in {dist.metadata_dir}: {error}",
                    hint=f"reinstall {dist.name or 'the distribution'} or delete {dist.metadata_dir}",
                    details={"metadata_dir": dist.metadata_dir, "error": error},
                )
            )
        for error in dist.ignored:
            findings.append(
                Finding(
                    kind="invalid-metadata",
                    packages=(dist.key,),
                    message=f"invalid metadata in {dist.metadata_dir}: {error}; it is ignored, as pip ignores it: "
                    "any Python is taken to be supported",
                    hint=f"nothing to do here: pip installs and imports {dist.name} all the same; a release of "
                    f"{dist.name} with valid metadata ends this",
                    details={"metadata_dir": dist.metadata_dir, "error": error},
                    informational=True,
                )
            )
    return findings
