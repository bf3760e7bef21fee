"""The ``autoglm-runtime`` command.

Each subcommand lives in a module of this package that exposes ``register(subparsers)``; it sets
``func`` on its parser to a callable taking the parsed arguments and returning an exit code. Exit codes
are one convention across all commands: 0 ok, 1 findings or failure of the checked thing, 2 usage or
configuration error. Errors of the SDK are printed as their coded message, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from autoglm_runtime import __version__
from autoglm_runtime.errors import EXIT_USAGE, AutoGLMRuntimeError

__all__ = ["build_parser", "main"]

# Subcommand modules, in the order --help lists them.
_SUBCOMMANDS: tuple[str, ...] = ("config", "check_deps", "env")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="autoglm-runtime",
        description="Config sync, isolated model loading and input validation for LLM model servers.",
    )
    parser.add_argument("--version", action="version", version=f"autoglm-runtime {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMANDS:
        importlib.import_module(f"autoglm_runtime.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        code: int = func(args)
    except AutoGLMRuntimeError as exc:
        print(f"autoglm-runtime: error {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
