"""``autoglm-runtime check-deps [PATH ...] [--python INTERPRETER] [--json] [--plan] [--why PKG]``: (E0101).

Finds dependency conflicts; ``--plan`` adds a greedy grouping of the models into shared environments,
``--why PKG`` who requires a distribution.

PATH is a model directory, a ``model.toml`` or a requirements file (checked as a model named after the
file); with no PATH the environment is checked alone. Exit 0 when clean, 1 with findings, 2 on a usage error
(a bad path, a malformed manifest: E0102, an interpreter that cannot be probed).

Start-up time matters (the command runs in CI and before every isolated load), so the checker is imported
inside :func:`run`, and with ``--python`` the probe subprocess is started *before* that import: the target
interpreter scans its path while this process imports ``packaging`` and parses manifests.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import zlib
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoglm_runtime.errors import AutoGLMRuntimeError, UsageError

if TYPE_CHECKING:
    from autoglm_runtime.deps.findings import Report
    from autoglm_runtime.deps.manifest import ModelManifest

__all__ = ["cache_file", "load_target", "register", "run"]

#: The probe script, found without importing the deps package (whose import is what we overlap with).
PROBE_SCRIPT = Path(__file__).resolve().parent.parent / "deps" / "_scripts" / "probe.py"


def register(subparsers: Any) -> None:
    """Add the ``check-deps`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "check-deps",
        help="find and explain dependency conflicts of models and environments (E0101)",
        description="Check an environment, alone or against model directories, model.toml files or requirements "
        "files. Exit 0 clean, 1 findings, 2 usage error.",
    )
    parser.add_argument(
        "paths", nargs="*", type=Path, metavar="PATH", help="model directory, model.toml or requirements file"
    )
    parser.add_argument(
        "--python", metavar="INTERPRETER", help="check this interpreter's environment (default: the running one)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object with the findings and a summary")
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="describe every distribution afresh (by default descriptions are cached per metadata directory, "
        "keyed by its files' mtimes and sizes)",
    )
    parser.add_argument(
        "--resolve",
        action="store_true",
        help="also resolve each model alone and all together with uv's resolver (the 'uv' extra), finding "
        "transitive conflicts",
    )
    parser.add_argument("--find-links", action="append", default=[], metavar="DIR", help="with --resolve: a wheelhouse")
    parser.add_argument("--index-url", metavar="URL", help="with --resolve: the package index to resolve against")
    parser.add_argument("--offline", action="store_true", help="with --resolve: never use the network")
    parser.add_argument(
        "--plan",
        action="store_true",
        help="also print a plan: the models in groups that can each share one environment (greedy)",
    )
    parser.add_argument(
        "--why",
        action="append",
        default=[],
        metavar="PKG",
        help="also print which installed distributions and models require PKG, with their ranges (repeatable)",
    )
    parser.set_defaults(func=run)


def load_target(path: Path) -> ModelManifest:
    """A model from a model directory or ``model.toml``, or a pseudo-model named after a requirements file.

    Raises :class:`~autoglm_runtime.errors.UsageError` for a path that does not exist and
    :class:`~autoglm_runtime.errors.ManifestError` (E0102) for a malformed file.
    """
    from autoglm_runtime.deps.manifest import (  # here: kept off the import path of --help
        ModelManifest,
        load_manifest,
        parse_requirements_file,
    )

    if not path.exists():
        raise UsageError(
            f"{path}: no such file or directory; PATH must be a model directory, a model.toml or a requirements file"
        )
    if path.is_dir() or path.suffix == ".toml":
        return load_manifest(path)
    requirements, included = parse_requirements_file(path)
    source = path.resolve()
    return ModelManifest(
        name=path.name,
        entrypoint="",
        requirements=tuple(requirements),
        python=None,
        directory=source.parent,
        source=source,
        included_files=tuple(included),
    )


def cache_file(python: str) -> Path:
    """Where the probe of ``python`` keeps its per-distribution cache (``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    # zlib, not hashlib: this runs before the probe starts, and hashlib's import costs more than the name is worth
    digest = zlib.crc32(python.encode("utf-8", "surrogateescape"))
    readable = "".join(c if c.isalnum() or c in "._-" else "_" for c in python)[-80:]
    return root / "autoglm-runtime" / "check-deps" / f"{readable}-{digest:08x}.json"


def _start_probe(python: str, cache: bool) -> subprocess.Popen[str] | OSError:
    command = [python, "-I", str(PROBE_SCRIPT)]
    if cache:
        command += ["--cache", str(cache_file(python))]
    try:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except OSError as exc:
        return exc


def _absolute(python: str) -> str:
    found = shutil.which(python) if os.sep not in python else None
    return os.path.abspath(found or python)


def run(args: argparse.Namespace) -> int:
    """Run the check and print the report; returns the exit code.

    With ``--json`` an error is printed as a JSON object on stdout too (``ok`` false, its ``code``,
    ``exit_code`` 2 and the ``error`` message), so a caller parsing stdout always gets JSON.
    """
    if args.python:
        args.python = _absolute(args.python)
    started = _start_probe(args.python, not args.no_cache) if args.python else None
    try:
        report, extras = _check(args, started)
    except AutoGLMRuntimeError as exc:
        if args.json:
            error = {"format": 1, "code": exc.code, "ok": False, "exit_code": exc.exit_code, "error": str(exc)}
            print(json.dumps(error, indent=2))
        raise
    finally:
        if isinstance(started, subprocess.Popen) and started.poll() is None:
            started.kill()
            started.communicate()
    if args.json:
        out = report.to_json()
        if "plan" in extras:
            out["plan"] = extras["plan"].to_json()
        if "why" in extras:
            out["why"] = [answer.to_json() for answer in extras["why"]]
        print(json.dumps(out, indent=2))
    else:
        width = min(max(shutil.get_terminal_size((100, 24)).columns, 60), 120)
        for answer in extras.get("why", []):
            sys.stdout.write(answer.render() + "\n")
        sys.stdout.write(report.render(width=width))
        if "plan" in extras:
            sys.stdout.write("\n" + extras["plan"].render())
    return report.exit_code


def _check(args: argparse.Namespace, started: subprocess.Popen[str] | OSError | None) -> tuple[Report, dict[str, Any]]:
    # Imported here: kept off the import path of --help and of the other subcommands.
    from autoglm_runtime.deps.check import check_probed
    from autoglm_runtime.deps.planning import ModelRequirements
    from autoglm_runtime.deps.probe import (
        PROBE_TIMEOUT,
        finish_probe,
        launch_error,
        probe_environment,
    )

    models = [load_target(path) for path in args.paths]
    seen: dict[str, Path] = {}
    for model in models:
        if model.name in seen:
            raise UsageError(
                f"model name '{model.name}' is used by both {seen[model.name]} and {model.source}; names must be unique"
            )
        seen[model.name] = model.source
    if started is None:
        env = probe_environment(None)
    elif isinstance(started, OSError):
        raise launch_error(args.python, started) from started
    else:
        try:
            stdout, stderr = started.communicate(timeout=PROBE_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise launch_error(args.python, exc) from exc
        env = finish_probe(args.python, started.returncode, stdout, stderr)
    extras: dict[str, Any] = {}
    if args.resolve:
        from autoglm_runtime.deps.resolve import ResolveSources, find_uv

        find_uv()  # a usage error saying how to get uv, before any work
        extras["resolve"] = ResolveSources(tuple(args.find_links), args.index_url, args.offline)
    planned = [ModelRequirements(m.name, m.requirements, m.python) for m in models]
    if args.plan:
        from autoglm_runtime.deps.planning import plan_groups

        extras["plan"] = plan_groups(planned, env.markers)
    if args.why:
        from autoglm_runtime.deps.why import explain

        extras["why"] = [explain(name, env, planned) for name in args.why]
    report = check_probed(env, models)
    if args.resolve:
        from autoglm_runtime.deps.findings import Finding
        from autoglm_runtime.deps.resolve import resolve_models

        found = resolve_models(planned, env.python, extras.pop("resolve"))
        report = replace(report, findings=sorted([*report.findings, *found], key=Finding.sort_key))
    return report, extras
