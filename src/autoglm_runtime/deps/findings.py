"""Findings of ``check-deps`` and the report that carries them (JSON form and terminal rendering).

Every finding has the code E0101, a ``kind`` (the stable JSON value below), the distributions and models it
involves, a one-sentence message with versions and specifiers, and a hint saying what to do. A finding whose
:attr:`Finding.informational` is true (always for the :data:`INFORMATIONAL_KINDS`, ``cycle`` and ``overrides-base``)
is reported but does not make the check fail. The JSON form is documented in ``docs/check-deps.md``; its field
names are stable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from autoglm_runtime._exit_codes import EXIT_FINDINGS, EXIT_OK

__all__ = ["INFORMATIONAL_KINDS", "KINDS", "Finding", "Kind", "Report"]

Kind = Literal[
    "model-contradiction",
    "unresolvable",
    "resolve-conflict",
    "incompatible",
    "missing",
    "requires-python",
    "unsupported-wheel",
    "duplicate",
    "shadowed-module",
    "cross-model",
    "model-vs-host",
    "missing-extra",
    "invalid-metadata",
    "overrides-base",
    "cycle",
]
#: Every kind, in the order reports list them.
KINDS: tuple[Kind, ...] = (
    "model-contradiction",
    "unresolvable",
    "resolve-conflict",
    "cross-model",
    "model-vs-host",
    "missing",
    "incompatible",
    "missing-extra",
    "requires-python",
    "unsupported-wheel",
    "duplicate",
    "shadowed-module",
    "invalid-metadata",
    "overrides-base",
    "cycle",
)
#: Kinds that are reported but never change the exit code: their findings are always :attr:`Finding.informational`.
INFORMATIONAL_KINDS: frozenset[str] = frozenset({"cycle", "overrides-base"})
REPORT_FORMAT = 1


@dataclass(frozen=True)
class Finding:
    """One dependency problem. ``packages`` are PEP 503 normalised names; ``details`` is kind-specific data."""

    kind: Kind
    packages: tuple[str, ...]
    message: str
    hint: str
    models: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)
    code: str = "E0101"
    #: Reported without failing the check: always for the :data:`INFORMATIONAL_KINDS` (set so whatever is
    #: passed), and for what pip accepts and ignores (an invalid ``Requires-Python``) or shadows by design (a
    #: base interpreter's module nothing requires).
    informational: bool = False

    def __post_init__(self) -> None:
        if self.kind in INFORMATIONAL_KINDS and not self.informational:
            object.__setattr__(self, "informational", True)  # one answer: severity reads this field alone

    @property
    def severity(self) -> Literal["error", "info"]:
        """``info`` for an :attr:`informational` finding, else ``error``."""
        return "info" if self.informational else "error"

    def sort_key(self) -> tuple[int, tuple[str, ...], tuple[str, ...], str]:
        return (KINDS.index(self.kind), self.models, self.packages, self.message)

    def to_json(self) -> dict[str, Any]:
        """The stable JSON object of this finding."""
        return {
            "kind": self.kind,
            "code": self.code,
            "severity": self.severity,
            "packages": list(self.packages),
            "models": list(self.models),
            "message": self.message,
            "hint": self.hint,
            "details": dict(self.details),
        }


@dataclass(frozen=True)
class Report:
    """Everything one check found, with what was checked.

    >>> report = check_environment(models=[load_manifest("models/a")])   # doctest: +SKIP
    >>> report.exit_code, [f.kind for f in report.findings]               # doctest: +SKIP
    (1, ['model-vs-host'])
    """

    findings: list[Finding]
    #: The interpreter checked (``None`` when only models were compared, without an environment).
    python: str | None = None
    python_version: str | None = None
    distributions: int = 0
    models: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when no finding affects the exit code (informational findings may remain)."""
        return not any(f.severity == "error" for f in self.findings)

    @property
    def exit_code(self) -> int:
        """0 when :attr:`ok`, else 1 (the command's exit code)."""
        return EXIT_OK if self.ok else EXIT_FINDINGS

    def summary(self) -> dict[str, Any]:
        """Counts: all findings, errors, informational, and per kind (kinds with no finding are left out)."""
        by_kind: dict[str, int] = {}
        for finding in self.findings:
            by_kind[finding.kind] = by_kind.get(finding.kind, 0) + 1
        errors = sum(1 for f in self.findings if f.severity == "error")
        return {
            "findings": len(self.findings),
            "errors": errors,
            "informational": len(self.findings) - errors,
            "by_kind": {kind: by_kind[kind] for kind in KINDS if kind in by_kind},
        }

    def to_json(self) -> dict[str, Any]:
        """One JSON object: format version, ok, exit code, what was checked, summary and findings."""
        environment = None
        if self.python is not None:
            environment = {
                "python": self.python,
                "python_version": self.python_version,
                "distributions": self.distributions,
            }
        return {
            "format": REPORT_FORMAT,
            "code": "E0101",
            "ok": self.ok,
            "exit_code": self.exit_code,
            "environment": environment,
            "models": list(self.models),
            "summary": self.summary(),
            "findings": [f.to_json() for f in self.findings],
        }

    def render(self, width: int = 100) -> str:
        """Human output for a terminal: each model's own findings, the findings between models (each once,
        however many models it names), the environment's, then a summary.
        """
        between = [f for f in self.findings if len(f.models) > 1]
        groups: list[tuple[str, list[Finding]]] = []
        for model in self.models:
            mine = [f for f in self.findings if f.models == (model,)]
            shared = sum(1 for f in between if model in f.models)
            title = f"model '{model}'" + (f" (and {shared} between models, below)" if shared else "")
            groups.append((title, mine))
        extra = sorted({m for f in self.findings for m in f.models} - set(self.models))
        groups += [(f"model '{m}'", [f for f in self.findings if f.models == (m,)]) for m in extra]
        if between:
            groups.append(("between models", between))
        host = [f for f in self.findings if not f.models]
        if host or not self.models:
            where = f"environment ({self.python}, Python {self.python_version})" if self.python else "environment"
            groups.append((where, host))
        lines: list[str] = []
        for title, found in groups:
            lines.append(f"{title}: " + ("ok" if not found else _count(found)))
            for finding in found:
                lines.extend(_wrap(f"[{finding.kind}] {finding.message}", width, "  ", "    "))
                lines.extend(_wrap(f"hint: {finding.hint}", width, "    ", "      "))
            lines.append("")
        lines.append(self._summary_line())
        return "\n".join(lines) + "\n"

    def _summary_line(self) -> str:
        summary = self.summary()
        plural = "" if self.distributions == 1 else "s"
        checked = f"{self.distributions} distribution{plural}" if self.python is not None else "no environment"
        models = f"{len(self.models)} model" + ("" if len(self.models) == 1 else "s")
        info = f", {summary['informational']} informational" if summary["informational"] else ""
        if not summary["errors"]:  # E0101 names a conflict: a clean run carries no code
            return f"check-deps: no problems{info} ({checked}, {models}); exit {self.exit_code}"
        return (
            f"E0101 check-deps: {summary['errors']} problem{'' if summary['errors'] == 1 else 's'}{info} "
            f"({checked}, {models}); exit {self.exit_code}"
        )


def _count(found: Sequence[Finding]) -> str:
    return f"{len(found)} finding{'' if len(found) == 1 else 's'}"


def _wrap(text: str, width: int, first: str, rest: str) -> list[str]:
    import textwrap  # here: a report printed as JSON never wraps text

    return textwrap.wrap(
        text, width=width, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False, break_long_words=False
    )
