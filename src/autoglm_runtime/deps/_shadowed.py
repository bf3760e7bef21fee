"""``shadowed-module`` findings: distinct distributions that install one top-level import name.

``import m`` gets one file, so every other distribution installing ``m`` is broken where it is imported. One
case is by design: a virtual environment made with ``--system-site-packages`` puts its own site-packages before
the base interpreter's site directories (:attr:`~autoglm_runtime.deps.probe.ProbedEnvironment.base_site`), so
a distribution it installs shadows the base's distributions of that name, as its own copy of a base
distribution does (``overrides-base``). Such a finding is informational while nothing in the environment, and
no model checked, requires a shadowed base distribution; a requirer would import the environment's module
instead (``jwt`` from ``jwt`` 1.4 has no ``jwt.encode`` of PyJWT's), so then it is an error.
"""

from __future__ import annotations

from collections.abc import Sequence

from autoglm_runtime.deps._graph import Edges, req_text
from autoglm_runtime.deps.distributions import InstalledDist, ProbedEnvironment
from autoglm_runtime.deps.findings import Finding

__all__ = ["shadowed_modules"]


def shadowed_modules(env: ProbedEnvironment, edges: Edges) -> list[Finding]:
    """A ``shadowed-module`` finding for each import name installed by several distributions on the path;
    ``edges`` are the active requirements of the installed distributions (and of the models checked, as
    ``"model NAME"``), which decide whether a base distribution shadowed by design is needed."""
    providers: dict[str, list[InstalledDist]] = {}
    for dist in env.winners.values():
        if dist.editable:
            continue  # its RECORD lists only the import hook; the project's files are not its own
        for module in dist.modules:
            providers.setdefault(module, []).append(dist)
    rank: dict[str, int] = {}
    for dist in env.dists:
        rank.setdefault(dist.location, len(rank))
    findings = []
    for module, found in sorted(providers.items()):
        if len(found) < 2:
            continue
        dists = sorted(found, key=lambda d: (rank[d.location], d.key))
        if module in dists[0].namespaces:  # its __init__.py extends the package over the later path entries
            dists = [d for d in dists if d.location == dists[0].location or module not in d.namespaces]
            if len(dists) < 2:
                continue
        first = [d for d in dists if d.location == dists[0].location]
        winner: InstalledDist | None = first[0]
        if len(first) > 1:
            clashing = [d for d in first if module in d.clashes]
            if not clashing and len(first) == len(dists):
                continue  # every file they both install is identical (a shared namespace __init__.py)
            on_disk = [d for d in clashing if d.clashes[module]]
            if clashing:
                winner = on_disk[0] if len(on_disk) == 1 else None
        findings.append(_finding(module, dists, winner, env, edges))
    return findings


def _requirers(shadowed: Sequence[InstalledDist], env: ProbedEnvironment, edges: Edges) -> list[str]:
    """``"needs-pyjwt 1.0 (PyJWT>=2)"`` or ``"model 'a' (pyjwt)"`` for each requirement on a ``shadowed``
    distribution."""
    keys = {d.key for d in shadowed}
    out = []
    for node, deps in sorted(edges.items()):
        who = f"model '{node[6:]}'" if node.startswith("model ") else env.winners[node].label
        out += [f"{who} ({req_text(req)})" for dep, req in deps if dep in keys and node not in keys]
    return out


def _finding(
    module: str, dists: list[InstalledDist], winner: InstalledDist | None, env: ProbedEnvironment, edges: Edges
) -> Finding:
    names = ", ".join(d.label for d in dists[:-1]) + f" and {dists[-1].label}"
    verb = "both install" if len(dists) == 2 else "all install"
    losers = [d for d in dists if d is not winner]
    by_design = (
        winner is not None and winner.location not in env.base_site and all(d.location in env.base_site for d in losers)
    )
    required_by = _requirers(losers, env, edges) if by_design else []
    shadowed = " and ".join(d.label for d in losers)
    informational = False
    if winner is None:
        outcome = "the files on disk cannot be attributed to either, so the import is a mix or a guess"
        hint = "uninstall one of them; they cannot be used in one environment"
    elif not by_design:
        outcome = f"'import {module}' gets {winner.label}, so {shadowed} is shadowed"
        hint = "uninstall one of them; they cannot be used in one environment"
    elif not required_by:
        informational = True
        outcome = (
            f"'import {module}' gets {winner.label}, the environment's own, shadowing the base interpreter's "
            f"{shadowed} by design (the environment includes the system site-packages); nothing requires "
            f"{' or '.join(d.name for d in losers)}"
        )
        hint = (
            f"nothing to do while nothing here needs {' or '.join(d.name for d in losers)}: what requires it would "
            f"import {winner.label}'s '{module}'"
        )
    else:
        outcome = (
            f"'import {module}' gets {winner.label}, the environment's own, so the base interpreter's {shadowed} "
            f"is shadowed, yet {', '.join(required_by)} {'requires' if len(required_by) == 1 else 'require'} it"
        )
        hint = (
            f"uninstall {winner.name} from the environment so that the base interpreter's {shadowed} is imported, "
            f"or install what requires it in an environment without the system site-packages"
        )
    return Finding(
        kind="shadowed-module",
        packages=tuple(sorted(d.key for d in dists)),
        message=f"{names} {verb} the top-level module '{module}'; {outcome}",
        hint=hint,
        details={
            "module": module,
            "winner": winner.key if winner else None,
            "distributions": [{"name": d.key, "version": d.version, "location": d.location} for d in dists],
            "required_by": required_by,
        },
        informational=informational,
    )
