"""``check-deps --why PKG``: which installed distributions and which models require a distribution.

from autoglm_runtime.deps.why import explain
answer = explain("numpy", env, models)       # env from probe_environment(), models: ModelRequirements
print(answer.render())
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from autoglm_runtime.deps._graph import req_text
from autoglm_runtime.deps.planning import ModelRequirements
from autoglm_runtime.deps.probe import ProbedEnvironment, canonical

__all__ = ["Why", "explain"]


@dataclass(frozen=True)
class Why:
    """Who requires ``package``: ``(requirer, requirement)`` pairs, installed distributions and models apart."""

    package: str
    installed: str | None
    required_by: tuple[tuple[str, str], ...]
    models: tuple[tuple[str, str], ...]

    def to_json(self) -> dict[str, Any]:
        """``{"package", "installed", "required_by": [{"requirer", "requirement"}], "models": [...]}``."""
        return {
            "package": self.package,
            "installed": self.installed,
            "required_by": [{"requirer": r, "requirement": q} for r, q in self.required_by],
            "models": [{"model": m, "requirement": q} for m, q in self.models],
        }

    def render(self) -> str:
        """Human lines, one requirer a line."""
        state = f"{self.installed} installed" if self.installed else "not installed"
        lines = [f"why {self.package} ({state}):"]
        lines += [f"  {requirer} requires {req}" for requirer, req in self.required_by]
        lines += [f"  model '{model}' requires {req}" for model, req in self.models]
        if len(lines) == 1:
            lines.append("  nothing installed and no model requires it")
        return "\n".join(lines) + "\n"


def explain(package: str, env: ProbedEnvironment, models: Sequence[ModelRequirements] = ()) -> Why:
    """Who requires ``package`` in ``env`` (active requirements of the importable copies) and in ``models``."""
    key = canonical(package)
    installed = env.winners.get(key)
    required_by = sorted(
        (dist.label, req_text(req))
        for dist in env.winners.values()
        for req in dist.requires
        if canonical(req.name) == key and env.evaluate(req.marker)
    )
    wanted = sorted((m.name, req_text(r)) for m in models for r in m.active(env.markers) if canonical(r.name) == key)
    return Why(
        package=installed.name if installed else package,
        installed=installed.version if installed else None,
        required_by=tuple(required_by),
        models=tuple(wanted),
    )
