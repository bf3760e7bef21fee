"""``check-deps --resolve``: resolve each model alone and the models together with uv's resolver.

Direct requirements can all overlap while the models still cannot share one environment: model A's
``transformers==4.30.2`` needs ``tokenizers<0.14``, model B needs ``tokenizers>=0.15``. Only a resolver that
reads every distribution's metadata finds that. :func:`resolve_models` runs ``uv pip compile`` (the ``uv``
extra: ``pip install 'autoglm-runtime[uv]'``) for the target interpreter, on each model alone
(``unresolvable``) and on all of them together (``resolve-conflict``); findings carry uv's explanation,
trimmed. Sources are the ones given (``find_links``, ``index_url``), with ``offline`` for no network.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from autoglm_runtime.deps._graph import req_text
from autoglm_runtime.deps.findings import Finding
from autoglm_runtime.deps.planning import ModelRequirements
from autoglm_runtime.errors import UsageError

__all__ = ["ResolveSources", "find_uv", "resolve_models"]

RESOLVE_TIMEOUT = 300.0
#: How much of uv's explanation a finding keeps.
EXPLANATION_LIMIT = 600
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class ResolveSources:
    """Where the resolver may look for distributions."""

    find_links: tuple[str, ...] = ()
    index_url: str | None = None
    offline: bool = False
    extra_args: tuple[str, ...] = field(default=())

    def args(self) -> list[str]:
        out: list[str] = []
        for link in self.find_links:
            out += ["--find-links", link]
        if self.index_url is not None:
            out += ["--index-url", self.index_url]
        elif self.find_links:
            out.append("--no-index")  # only the wheelhouse: never reach for the default index
        if self.offline:
            out.append("--offline")
        return out + list(self.extra_args)


def find_uv() -> str:
    """The uv executable of the ``uv`` extra; a :class:`UsageError` saying how to get it when absent."""
    try:
        import uv

        return str(uv.find_uv_bin())
    except (ImportError, FileNotFoundError) as exc:
        raise UsageError(
            "--resolve needs uv's resolver, which is not installed: pip install 'autoglm-runtime[uv]'"
        ) from exc


def trim(explanation: str, limit: int = EXPLANATION_LIMIT) -> str:
    """uv's explanation on one line: colours, ``error:``/``cause:`` labels and repeated spaces removed."""
    text = _ANSI.sub("", explanation)
    text = re.sub(r"^\s*(error|cause|hint):\s*", "", text, flags=re.MULTILINE)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _compile(
    uv: str, python: str, requirements: Sequence[str], sources: ResolveSources, constraints: Sequence[str] = ()
) -> str | None:
    """``None`` when the requirements resolve under ``constraints`` (as ``-c`` applies them), else uv's
    explanation."""
    command = [uv, "pip", "compile", "-", "--quiet", "--no-header", "--color", "never", "--python", python]
    if not constraints:
        return _run(command + sources.args(), requirements)
    import tempfile  # here: only models with constraints files need one

    with tempfile.TemporaryDirectory(prefix="autoglm-resolve-") as tmp:
        path = Path(tmp, "constraints.txt")
        path.write_text("".join(f"{c}\n" for c in constraints), encoding="utf-8")
        return _run([*command, "-c", str(path), *sources.args()], requirements)


def _run(command: list[str], requirements: Sequence[str]) -> str | None:
    try:
        done = subprocess.run(
            command,
            input="\n".join(requirements) + "\n",
            capture_output=True,
            text=True,
            timeout=RESOLVE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise UsageError(f"uv did not finish resolving within {RESOLVE_TIMEOUT:.0f} s") from exc
    except OSError as exc:
        raise UsageError(f"uv ({command[0]}) cannot be run: {exc}") from exc
    return None if done.returncode == 0 else (done.stderr or done.stdout or f"uv exited {done.returncode}")


def resolve_models(
    models: Sequence[ModelRequirements], python: str | Path, sources: ResolveSources = ResolveSources()
) -> list[Finding]:
    """``unresolvable`` for each model that does not resolve alone, then ``resolve-conflict`` when the
    models that do resolve alone do not resolve together.
    """
    uv = find_uv()
    exe = str(python)
    findings: list[Finding] = []
    fine: list[ModelRequirements] = []
    for model in models:
        lines = [str(r) for r in model.requirements]
        why = _compile(uv, exe, lines, sources, [str(c) for c in model.constraints])
        if why is None:
            fine.append(model)
            continue
        findings.append(
            Finding(
                kind="unresolvable",
                packages=(),
                models=(model.name,),
                message=f"model '{model.name}' cannot be installed from the given sources: {trim(why)}",
                hint=f"change the requirements of model '{model.name}', or add the distributions it needs to the "
                "sources",
                details={"requirements": [req_text(r) for r in model.requirements], "explanation": trim(why)},
            )
        )
    if len(fine) > 1:
        constraints = [str(c) for m in fine for c in m.constraints]
        why = _compile(uv, exe, [str(r) for m in fine for r in m.requirements], sources, constraints)
        if why is not None:
            names = tuple(sorted(m.name for m in fine))
            listed = ", ".join(f"'{n}'" for n in names)
            findings.append(
                Finding(
                    kind="resolve-conflict",
                    packages=(),
                    models=names,
                    message=f"models {listed} each resolve alone but not together: {trim(why)}",
                    hint="load them in separate environments (see --plan), or align the requirements the explanation "
                    "names",
                    details={"explanation": trim(why)},
                )
            )
    return findings
