"""``autoglm-runtime check-deps [PATH ...] [--python INTERPRETER] [--json] [--plan] [--why PKG]``: (E0101).

Finds dependency conflicts; ``--plan`` adds a greedy grouping of the models into shared environments,
``--why PKG`` who requires a distribution.

PATH is a model directory, a ``model.toml`` or a requirements file (checked as a model named after the
file); with no PATH the environment is checked alone. Exit 0 when clean, 1 with findings, 2 on a usage error
(a bad path, a malformed manifest: E0102, an interpreter that cannot be probed).

Start-up time matters (the command runs in CI and before every isolated load). With ``--python`` the probe
process is started before argparse is imported (:mod:`~autoglm_runtime.cli._early_probe`), and the checker
and ``packaging`` only inside :func:`run`, so the target interpreter scans its path while this process
imports them and parses manifests. When the environment, the options and the code are all unchanged since
the last run, the stored report is printed again (:mod:`~autoglm_runtime.cli._report_cache`) and neither
is imported at all; ``--no-cache`` computes everything afresh.
"""

from __future__ import annotations

import sys

from autoglm_runtime.cli import _early_probe, _output, _report_cache
from autoglm_runtime.cli._early_probe import ProbeProcess

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from pathlib import Path
    from typing import Any

    from packaging.requirements import Requirement

    from autoglm_runtime.deps.findings import Report
    from autoglm_runtime.deps.manifest import ModelManifest
    from autoglm_runtime.deps.planning import ModelRequirements
    from autoglm_runtime.errors import AutoGLMRuntimeError

__all__ = ["DEFAULTS", "cache_file", "load_target", "plain_arguments", "register", "run"]


#: The probe script, found without importing the deps package (whose import is what the probe overlaps).
PROBE_SCRIPT = _early_probe.PROBE_SCRIPT
#: How long the probe may take (the probe module's own limit, which is imported only when needed).
PROBE_TIMEOUT = 120.0


def _path(text: str) -> Path:
    from pathlib import Path  # here: pathlib is not needed when no PATH is given

    return Path(text)


def register(subparsers: Any) -> None:
    """Add the ``check-deps`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "check-deps",
        help="find and explain dependency conflicts of models and environments (E0101)",
        description="Check an environment, alone or against model directories, model.toml files or requirements "
        "files. Exit 0 clean, 1 findings, 2 usage error.",
    )
    parser.add_argument(
        "paths", nargs="*", type=_path, metavar="PATH", help="model directory, model.toml or requirements file"
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
        help="also print a plan: the models in groups whose direct requirements can share one environment (greedy)",
    )
    parser.add_argument(
        "--why",
        action="append",
        default=[],
        metavar="PKG",
        help="also print which installed distributions and models require PKG, with their ranges (repeatable)",
    )
    parser.set_defaults(func=run)


#: What :func:`register`'s parser gives each option that is not on the command line (a test keeps them equal).
DEFAULTS: dict[str, Any] = {
    "paths": [],
    "python": None,
    "json": False,
    "no_cache": False,
    "resolve": False,
    "find_links": [],
    "index_url": None,
    "offline": False,
    "plan": False,
    "why": [],
}
_FLAGS = {"--json": "json", "--no-cache": "no_cache", "--plan": "plan", "--resolve": "resolve", "--offline": "offline"}


def plain_arguments(arguments: Sequence[str], **extra: object) -> argparse.Namespace | None:
    """check-deps' ``arguments`` as the parser reads them, when each is an exact spelling of a flag or of
    ``--python X`` / ``--python=X``; ``None`` for anything else (paths, abbreviations, ``--help``), which
    argparse reads. ``extra`` is set on the result as well. Building the parser costs more than the rest of a
    check's start-up, for command lines that are almost always of this form.
    """
    values: dict[str, object] = {**DEFAULTS, "paths": [], "find_links": [], "why": []}
    i = 0
    while i < len(arguments):
        arg = arguments[i]
        if arg in _FLAGS:
            values[_FLAGS[arg]] = True
        elif arg == "--python" and i + 1 < len(arguments) and not arguments[i + 1].startswith("-"):
            values["python"] = arguments[i + 1]
            i += 1
        elif arg.startswith("--python="):
            values["python"] = arg[len("--python=") :]
        else:
            return None
        i += 1
    from types import SimpleNamespace

    # The attributes an argparse.Namespace would have, without importing argparse for its class.
    return SimpleNamespace(**values, **extra, func=run)  # type: ignore[return-value]


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
    from autoglm_runtime.errors import UsageError

    if not path.exists():
        raise UsageError(
            f"{path}: no such file or directory; PATH must be a model directory, a model.toml or a requirements file"
        )
    if path.is_dir() or path.suffix == ".toml":
        return load_manifest(path)
    constraints: list[Requirement] = []
    requirements, included = parse_requirements_file(path, constraints)
    source = path.resolve()
    return ModelManifest(
        name=path.name,
        entrypoint="",
        requirements=tuple(requirements),
        python=None,
        directory=source.parent,
        source=source,
        included_files=tuple(included),
        constraints=tuple(constraints),
    )


def cache_file(python: str) -> Path:
    """Where the probe of ``python`` keeps its per-distribution cache (``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    from pathlib import Path

    return Path(_early_probe.cache_path(python))


def _probe_process(args: argparse.Namespace) -> ProbeProcess:
    """The probe the arguments ask for: the one :func:`~autoglm_runtime.cli.main` started early if it fits."""
    cache = None if args.no_cache else _early_probe.cache_path(args.python)
    early: ProbeProcess | None = getattr(args, "prestarted", None)
    if early is not None and early.serves(args.python, cache):
        return early
    if early is not None:
        early.kill()
    return _early_probe.start_probe(args.python, cache)


def _width() -> int:
    import shutil  # here: JSON output has no width, and argparse's own import of shutil may not have happened

    return min(max(shutil.get_terminal_size((100, 24)).columns, 60), 120)


def _report_key(args: argparse.Namespace, width: int | None) -> dict[str, Any] | None:
    """What a stored report must have been made with to be printed again; ``None``: never reuse one."""
    if args.no_cache or not args.python or args.paths or args.resolve:
        return None
    from autoglm_runtime import __version__

    options = {"json": args.json, "plan": args.plan, "why": list(args.why)}
    return {
        "version": __version__,
        "runtime": sys.version,
        "python": args.python,
        "argv": getattr(args, "argv", None),
        "width": width,
        "options": options,
        "code": _report_cache.code_stamp(),
    }


def replay(argv: Sequence[str], early: ProbeProcess | None) -> int | None:
    """Print the stored report of a run with exactly these arguments, if nothing it rests on changed.

    Returns its exit code, or ``None`` when the command must run (and parse its arguments) as usual. Called
    before argparse is imported: the same arguments parse the same way, so the stored run's options hold.
    """
    if early is None or early.cache is None or early.error is not None:
        return None
    from autoglm_runtime import __version__

    entry = _report_cache.entry_path(early.cache)
    stored = _report_cache.load(entry, None)
    key = stored["key"] if stored is not None and isinstance(stored.get("key"), dict) else None
    if key is None or key.get("argv") != list(argv) or key.get("python") != early.python:
        return None
    if key.get("version") != __version__ or key.get("runtime") != sys.version:
        return None
    if key.get("width") is not None and key.get("width") != _width():
        return None
    if key.get("code") != _report_cache.code_stamp():
        return None
    try:
        answer = early.communicate(PROBE_TIMEOUT)
    except Exception:
        return None  # the full run reports it (the process keeps its outcome)
    if answer[0] != 0 or answer[1] != stored["probe"]:  # type: ignore[index]
        return None  # the process keeps its answer: the full run uses it
    _output.write(stored["output"], "the report")  # type: ignore[index]
    return int(stored["exit_code"])  # type: ignore[index]


def _wait(started: ProbeProcess) -> tuple[int, str, str]:
    """The probe's exit code, stdout and stderr; one that cannot start or does not finish is a usage error."""
    if started.error is not None:
        from autoglm_runtime.deps.probe import launch_error

        raise launch_error(started.python, started.error) from started.error
    try:
        return started.communicate(PROBE_TIMEOUT)
    except Exception as exc:
        import subprocess  # here: only a probe that timed out needs it

        if not isinstance(exc, subprocess.TimeoutExpired):
            raise
        from autoglm_runtime.deps.probe import launch_error

        raise launch_error(started.python, exc) from exc


def run(args: argparse.Namespace) -> int:
    """Run the check and print the report; returns the exit code.

    With ``--json`` an error is printed as a JSON object on stdout too (``ok`` false, its ``code``,
    ``exit_code`` 2 and the ``error`` message), so a caller parsing stdout always gets JSON.
    """
    given = args.python
    if args.python:
        args.python = _early_probe.absolute(args.python)
    started = _probe_process(args) if args.python else None
    try:
        if given and started is not None and isinstance(started.error, FileNotFoundError):
            from autoglm_runtime.deps.probe import launch_error

            raise launch_error(args.python, started.error, given) from started.error
        width = None if args.json else _width()
        key = _report_key(args, width)
        entry = _report_cache.entry_path(_early_probe.cache_path(args.python)) if key is not None else ""
        stored = _report_cache.load(entry, key) if key is not None else None
        answer = None
        output: str | None = None
        if stored is not None and started is not None and started.error is None:
            # Most likely unchanged: wait for the probe before importing the checker, which a hit never needs.
            answer = _wait(started)
            if answer[0] == 0 and answer[1] == stored["probe"]:
                code, output = int(stored["exit_code"]), stored["output"]
        if output is None:
            code, output, answer = _check(args, started, answer, width)
            if key is not None and answer is not None:
                _report_cache.store(entry, key, answer[1], code, output)
    except Exception as exc:
        from autoglm_runtime.errors import AutoGLMRuntimeError

        if args.json and isinstance(exc, AutoGLMRuntimeError):
            print_json_error(exc)
        raise
    finally:
        if started is not None:
            started.kill()
    _output.write(output, "the report")  # (outside the try: a report that cannot be written is no JSON error)
    return code


def print_json_error(exc: AutoGLMRuntimeError) -> None:
    """``exc`` as ``--json`` prints an error: one JSON object on stdout (``ok`` false, its code, exit code 2)."""
    import json

    error = {"format": 1, "code": exc.code, "ok": False, "exit_code": exc.exit_code, "error": str(exc)}
    _output.write(json.dumps(error, indent=2) + "\n", "the error as JSON")


def _check(
    args: argparse.Namespace, started: ProbeProcess | None, answer: tuple[int, str, str] | None, width: int | None
) -> tuple[int, str, tuple[int, str, str] | None]:
    """The exit code and output of a full check, with the probe's answer it rests on."""
    # Imported here: kept off the import path of --help, of the other subcommands and of a stored report.
    from dataclasses import replace

    from autoglm_runtime.deps.check import check_probed
    from autoglm_runtime.deps.probe import finish_probe, probe_environment

    models = [load_target(path) for path in args.paths]
    seen: dict[str, Path] = {}
    for model in models:
        if model.name in seen:
            from autoglm_runtime.errors import UsageError

            if seen[model.name].resolve() == model.source.resolve():
                raise UsageError(f"model '{model.name}' ({model.source}) is given twice: give each model once")
            raise UsageError(
                f"model name '{model.name}' is used by both {seen[model.name]} and {model.source}; names must be unique"
            )
        seen[model.name] = model.source
    if started is None:
        env = probe_environment(None)
    else:
        answer = answer or _wait(started)
        env = finish_probe(args.python, *answer)
    extras: dict[str, Any] = {}
    if args.resolve:
        from autoglm_runtime.deps.resolve import ResolveSources, find_uv

        find_uv()  # a usage error saying how to get uv, before any work
        extras["resolve"] = ResolveSources(tuple(args.find_links), args.index_url, args.offline)
    planned: list[ModelRequirements] = []
    if models and (args.plan or args.why or args.resolve):
        from autoglm_runtime.deps.planning import ModelRequirements

        planned = [ModelRequirements(m.name, m.requirements, m.python, m.constraints) for m in models]
    if args.plan:
        from autoglm_runtime.deps.planning import plan_groups

        extras["plan"] = plan_groups(planned, env.markers)
    if args.why:
        from autoglm_runtime.deps.why import explain

        extras["why"] = [explain(name, env, planned) for name in args.why]
    report: Report = check_probed(env, models)
    if args.resolve:
        from autoglm_runtime.deps.findings import Finding
        from autoglm_runtime.deps.resolve import resolve_models

        found = resolve_models(planned, env.python, extras.pop("resolve"))
        report = replace(report, findings=sorted([*report.findings, *found], key=Finding.sort_key))
    return report.exit_code, _render(args, report, extras, width), answer


def _render(args: argparse.Namespace, report: Report, extras: dict[str, Any], width: int | None) -> str:
    if args.json:
        import json

        out = report.to_json()
        if "plan" in extras:
            out["plan"] = extras["plan"].to_json()
        if "why" in extras:
            out["why"] = [answer.to_json() for answer in extras["why"]]
        return json.dumps(out, indent=2) + "\n"
    text = "".join(answer.render() + "\n" for answer in extras.get("why", []))
    text += report.render(width=width or 100)
    if "plan" in extras:
        text += "\n" + extras["plan"].render()
    return text
