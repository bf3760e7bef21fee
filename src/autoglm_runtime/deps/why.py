"""``check-deps --why PKG``: which installed distributions and which models require a distribution.

from autoglm_runtime.deps.why import explain
answer = explain("numpy", env, models)       # env from probe_environment(), models: ModelRequirements
print(answer.render())

A requirement that holds only through an extra (``socksio; extra == "socks"`` in httpx) is listed with the extra
and with who requests that extra (``client 1.0 (httpx[socks]>=0.27)``, a model, or another extra), as pip
installs it only then. One for an extra nothing requests requires nothing: it is listed apart, as not requested
(whoever installed the distribution may have asked for the extra by hand: ``pip install 'httpx[socks]'``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from packaging.requirements import Requirement

from autoglm_runtime.deps._graph import req_text
from autoglm_runtime.deps.distributions import ProbedEnvironment, canonical
from autoglm_runtime.deps.planning import ModelRequirements

__all__ = ["ThroughExtra", "Why", "explain"]


@dataclass(frozen=True)
class ThroughExtra:
    """``requirer`` (an installed distribution) requires ``requirement`` for its ``extra``, which each of
    ``requested_by`` (``client 1.0 (httpx[socks]>=0.27)``, ``model 'm' (httpx[socks])``) requests."""

    requirer: str
    extra: str
    requirement: str
    requested_by: tuple[str, ...]

    def render(self) -> str:
        """``httpx 0.27.0 requires socksio>=1 for its extra 'socks', which client 1.0 (httpx[socks]) requests``."""
        who = " and ".join(self.requested_by)
        verb = "requests" if len(self.requested_by) == 1 else "request"
        return f"{self.requirer} requires {self.requirement} for its extra '{self.extra}', which {who} {verb}"


@dataclass(frozen=True)
class Why:
    """Who requires ``package``: ``(requirer, requirement)`` pairs, installed distributions and models apart,
    and the installed distributions that require it only for an extra someone requests."""

    package: str
    installed: str | None
    required_by: tuple[tuple[str, str], ...]
    models: tuple[tuple[str, str], ...]
    through_extras: tuple[ThroughExtra, ...] = ()
    #: (requirer, extras, requirement): when nothing requires it, the installed distributions that would for
    #: extras nothing requests
    unrequested_extras: tuple[tuple[str, tuple[str, ...], str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """``{"package", "installed", "required_by": [{"requirer", "requirement"}], "models": [{"model",
        "requirement"}], "through_extras": [{"requirer", "extra", "requirement", "requested_by": [...]}],
        "unrequested_extras": [{"requirer", "extras", "requirement"}]}`` (``unrequested_extras`` only when nothing
        requires the package, else empty)."""
        return {
            "package": self.package,
            "installed": self.installed,
            "required_by": [{"requirer": r, "requirement": q} for r, q in self.required_by],
            "models": [{"model": m, "requirement": q} for m, q in self.models],
            "through_extras": [
                {
                    "requirer": t.requirer,
                    "extra": t.extra,
                    "requirement": t.requirement,
                    "requested_by": list(t.requested_by),
                }
                for t in self.through_extras
            ],
            "unrequested_extras": [
                {"requirer": r, "extras": list(extras), "requirement": q} for r, extras, q in self.unrequested_extras
            ],
        }

    def render(self) -> str:
        """Human lines, one requirer a line."""
        state = f"{self.installed} installed" if self.installed else "not installed"
        lines = [f"why {self.package} ({state}):"]
        lines += [f"  {requirer} requires {req}" for requirer, req in self.required_by]
        lines += [f"  {through.render()}" for through in self.through_extras]
        lines += [f"  model '{model}' requires {req}" for model, req in self.models]
        if len(lines) == 1:
            lines.append("  nothing installed and no model requires it")
        for requirer, extras, req in self.unrequested_extras:
            named = ", ".join(f"'{e}'" for e in extras)
            lines.append(
                f"  not required: {requirer} requires {req} only for its extra{'s' if len(extras) > 1 else ''} "
                f"{named}, which nothing installed and no model requests"
            )
        return "\n".join(lines) + "\n"


def explain(package: str, env: ProbedEnvironment, models: Sequence[ModelRequirements] = ()) -> Why:
    """Who requires ``package`` in ``env`` (active requirements of the importable copies, and those of the
    extras requested of them) and in ``models``."""
    key = canonical(package)
    installed = env.winners.get(key)
    required_by = sorted(
        (dist.label, req_text(req))
        for dist in env.winners.values()
        for req in dist.requires
        if canonical(req.name) == key and env.evaluate(req.marker)
    )
    wanted = sorted((m.name, req_text(r)) for m in models for r in m.active(env.markers) if canonical(r.name) == key)
    through = []
    requested = _requested_extras(env, models)
    for (provider, extra), requesters in sorted(requested.items()):
        dist = env.winners[provider]
        for req in _extra_only(env, dist.requires, extra):
            if canonical(req.name) == key:
                through.append(ThroughExtra(dist.label, extra, req_text(req), tuple(sorted(requesters))))
    # Asked about a distribution nothing requires, say which extras would (nobody asks for them): the answer to
    # "why is it installed?" is then "by hand, or for one of these extras", never a chain through them.
    unrequested: dict[tuple[str, str], list[str]] = {}
    for dist in sorted(env.winners.values(), key=lambda d: d.key) if not (required_by or wanted or through) else ():
        for extra in sorted({canonical(e) for e in dist.provides_extra}):
            if (dist.key, extra) in requested:
                continue
            for req in _extra_only(env, dist.requires, extra):
                if canonical(req.name) != key:
                    continue
                extras = unrequested.setdefault((dist.label, req_text(req)), [])
                if extra not in extras:  # huggingface_hub 2.4 lists "fastapi; extra == 'all'" twice
                    extras.append(extra)
    return Why(
        package=installed.name if installed else package,
        installed=installed.version if installed else None,
        required_by=tuple(required_by),
        models=tuple(wanted),
        through_extras=tuple(through),
        unrequested_extras=tuple((who, tuple(extras), req) for (who, req), extras in unrequested.items()),
    )


def _extra_only(env: ProbedEnvironment, requires: Sequence[Requirement], extra: str) -> list[Requirement]:
    """The requirements of ``requires`` that hold for ``extra`` and not without it."""
    return [
        r for r in requires if r.marker is not None and env.evaluate(r.marker, extra) and not env.evaluate(r.marker)
    ]


def _requested_extras(env: ProbedEnvironment, models: Sequence[ModelRequirements]) -> dict[tuple[str, str], set[str]]:
    """(installed distribution, extra) -> who requests that extra of it: installed distributions' active
    requirements, models', and (transitively) the extras' own requirements."""
    queue: list[tuple[str, Requirement]] = [
        (dist.label, req)
        for dist in env.winners.values()
        for req in dist.requires
        if req.extras and env.evaluate(req.marker)
    ]
    queue += [(f"model '{m.name}'", req) for m in models for req in m.active(env.markers) if req.extras]
    requested: dict[tuple[str, str], set[str]] = {}
    while queue:
        who, req = queue.pop()
        provider = env.winners.get(canonical(req.name))
        if provider is None:
            continue
        for extra in sorted(canonical(e) for e in req.extras):
            seen = (provider.key, extra) in requested
            requested.setdefault((provider.key, extra), set()).add(f"{who} ({req_text(req)})")
            if not seen:
                label = f"{provider.label}'s extra '{extra}'"
                queue += [(label, dep) for dep in _extra_only(env, provider.requires, extra) if dep.extras]
    return requested
