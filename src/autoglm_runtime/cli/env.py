"""``autoglm-runtime env build PATH...`` builds (or reuses) the isolated environment of each model;
``autoglm-runtime env gc`` removes environments that no running model holds and nobody used for a while.

On a terminal, progress is one redrawn bar on stderr; otherwise every build step and installer line is
printed on stderr as its own line. stdout gets one line per model: ``<name> <key> built|reused <path>``.
Exit codes: 0 when every environment is ready, 1 when a build or its check failed, 2 for usage errors (a
malformed manifest, an interpreter, wheelhouse or environment root that does not exist or cannot be used).
``env gc`` prints ``removed <key> <path> (<reason>)`` or ``kept <key> (<reason>)`` per entry on stdout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from autoglm_runtime.cli import _output
from autoglm_runtime.errors import EXIT_OK, UsageError

if TYPE_CHECKING:
    from autoglm_runtime.isolation.envs.build import BuildEvent

__all__ = ["DEFAULT_ENV_ROOT", "DEFAULT_UNUSED_DAYS", "ProgressBar", "ProgressLines", "register", "run_build", "run_gc"]

DEFAULT_ENV_ROOT = os.environ.get("AUTOGLM_ENV_ROOT", str(Path("~/.cache/autoglm-runtime/envs").expanduser()))
#: ``env gc`` removes environments last used this many days ago or earlier.
DEFAULT_UNUSED_DAYS = 7.0


class ProgressBar:
    """Draws ``[#####-----] 2/4 install  <last line>`` on one redrawn terminal line."""

    def __init__(self, stream: TextIO, width: int = 24) -> None:
        self.stream = stream
        self.width = width

    def __call__(self, event: BuildEvent) -> None:
        filled = self.width * event.step // event.total
        bar = "#" * filled + "-" * (self.width - filled)
        columns = shutil.get_terminal_size((100, 20)).columns
        head = f"[{bar}] {event.step}/{event.total} {event.phase:<7} "
        text = (head + event.message)[: max(columns - 1, len(head))]
        self.stream.write("\r\x1b[2K" + text)
        if event.phase == "done":
            self.stream.write("\n")
        self.stream.flush()


class ProgressLines:
    """Prints ``[2/4 install] <line>`` for every event (for logs and pipes)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, event: BuildEvent) -> None:
        self.stream.write(f"[{event.step}/{event.total} {event.phase}] {event.message}\n")
        self.stream.flush()


def register(subparsers: Any) -> None:
    """Add ``env`` and its ``build`` subcommand."""
    env = subparsers.add_parser("env", help="build model environments (env build) and remove unused ones (env gc)")
    commands = env.add_subparsers(dest="env_command", metavar="ENV_COMMAND", required=True)
    build = commands.add_parser("build", help="build (or reuse) the environment of each model")
    build.add_argument("paths", nargs="+", metavar="PATH", help="model directory or model.toml")
    build.add_argument("--env-root", default=DEFAULT_ENV_ROOT, help="where environments live (%(default)s)")
    build.add_argument("--wheelhouse", help="directory of wheels to install from (--find-links)")
    build.add_argument("--offline", action="store_true", help="never use the network (with --wheelhouse: --no-index)")
    build.add_argument("--index-url", help="package index to use instead of the default")
    build.add_argument("--python", help="interpreter to build for (default: the one running this command)")
    build.add_argument(
        "--installer", choices=("auto", "uv", "pip"), default="auto", help="auto: uv when found, else venv + pip (auto)"
    )
    build.add_argument("--no-check", action="store_true", help="skip the check-deps run after a build")
    build.add_argument(
        "--build-timeout",
        type=float,
        default=1800.0,
        metavar="SECONDS",
        help="kill an installer still running after this long and fail the build (%(default)g)",
    )
    build.add_argument(
        "--progress", choices=("auto", "bar", "lines"), default="auto", help="bar on a terminal, lines otherwise"
    )
    build.set_defaults(func=run_build)

    gc = commands.add_parser(
        "gc",
        help="remove environments no loaded model holds and nobody used for a while",
        description="Remove the environments under --env-root that no running ModelLoader holds and that were last "
        "built or used --unused-days ago or earlier, and what interrupted builds left behind.",
    )
    gc.add_argument("--env-root", default=DEFAULT_ENV_ROOT, help="where environments live (%(default)s)")
    gc.add_argument(
        "--unused-days",
        type=float,
        default=DEFAULT_UNUSED_DAYS,
        metavar="DAYS",
        help="remove environments last used at least this long ago; 0 removes every one not in use (%(default)g)",
    )
    gc.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    gc.set_defaults(func=run_gc)


def run_build(args: argparse.Namespace) -> int:
    """Build every model's environment; SDK errors propagate to ``main`` (printed with their code)."""
    err: TextIO = sys.stderr
    style = args.progress
    if style == "auto":
        style = "bar" if err.isatty() else "lines"
    progress = ProgressBar(err) if style == "bar" else ProgressLines(err)
    # Imported here: registering the command must not load the isolation package for every other command.
    from autoglm_runtime.deps.manifest import load_manifest
    from autoglm_runtime.isolation.envs.build import EnvironmentBuilder

    builder = EnvironmentBuilder(
        args.env_root,
        python=args.python,
        wheelhouse=args.wheelhouse,
        offline=args.offline,
        index_url=args.index_url,
        installer=args.installer,
        progress=progress,
        check=not args.no_check,
        build_timeout=args.build_timeout,
    )
    for path in args.paths:
        manifest = load_manifest(path)
        env = builder.ensure(manifest)
        line = f"{manifest.name} {env.key} {'built' if env.created else 'reused'} {env.path}\n"
        _output.write(line, f"the line of model {manifest.name!r} (its environment is ready)")
    return EXIT_OK


def run_gc(args: argparse.Namespace) -> int:
    """Collect unused environments; prints one line per environment removed or kept."""
    from autoglm_runtime.isolation.envs.gc import collect_garbage

    if not args.unused_days >= 0:
        raise UsageError(f"--unused-days must be a number of days >= 0, got {args.unused_days:g}")
    report = collect_garbage(args.env_root, unused_for=args.unused_days * 86400.0, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    lines = [f"{verb} {removal.key} {removal.path} ({removal.reason})\n" for removal in report.removed]
    lines += [f"kept {key} ({reason})\n" for key, reason in sorted(report.kept.items())]
    if lines:
        done = "" if args.dry_run else f" ({len(report.removed)} removed)"
        _output.write("".join(lines), f"the list of {len(lines)} environments{done}")
    return EXIT_OK
