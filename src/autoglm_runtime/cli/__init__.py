"""The ``autoglm-runtime`` command.

Each subcommand lives in a module of this package that exposes ``register(subparsers)``; it sets
``func`` on its parser to a callable taking the parsed arguments and returning an exit code. Exit codes
are one convention across all commands: 0 ok, 1 findings or failure of the checked thing, 2 usage or
configuration error, 3 partial output (what could not be had is named on stderr), 120 output that could not be
written (:func:`console`). Errors of the SDK are printed as
their coded message, never as a traceback; commands write their output with :func:`._output.write`.

Start-up time is part of what ``check-deps`` is judged by, so this module imports nothing at load time:
a command line naming a subcommand registers only that one, and ``check-deps --python PY`` starts its probe
process (:mod:`autoglm_runtime.cli._early_probe`) before argparse is even imported; when the same arguments
were given last time and nothing the report rests on changed, argparse is not imported at all
(:func:`autoglm_runtime.cli.check_deps.replay`).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence
    from typing import Any, NoReturn, Protocol

    class _Writable(Protocol):  # what argparse prints to (typeshed's SupportsWrite[str])
        def write(self, text: str, /) -> object: ...


__all__ = ["UsageExit", "build_parser", "console", "main"]

#: Subcommand -> the module of this package that registers it, in the order --help lists them.
_SUBCOMMANDS: dict[str, str] = {"config": "config", "check-deps": "check_deps", "env": "env"}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser, with every subcommand registered (or only the subcommand ``only``)."""
    import importlib

    from autoglm_runtime import __version__

    parser = _parser_class()(
        prog="autoglm-runtime",
        description="Config sync, isolated model loading and input validation for LLM model servers.",
    )
    parser.add_argument("--version", action="version", version=f"autoglm-runtime {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _SUBCOMMANDS.items():
        if only is None or name == only:
            importlib.import_module(f"autoglm_runtime.cli.{module}").register(subparsers)
    return parser


class UsageExit(SystemExit):
    """argparse's refusal of a command line (exit status 2), with its ``message``; raised after argparse's own
    usage and message are on stderr, so it behaves as argparse's ``SystemExit`` everywhere."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message


_INNERMOST = "_autoglm_innermost_parser"


def _parser_class() -> type[argparse.ArgumentParser]:
    """argparse's parser, whose errors raise :class:`UsageExit` (its subcommands' parsers are of its class)."""
    import argparse

    class Parser(argparse.ArgumentParser):
        # argparse says "unrecognized arguments" with the top parser's usage (`autoglm-runtime [-h] [--version]
        # COMMAND ...`), which shows none of the options of the subcommand the stray argument was given to: the
        # innermost parser that ran records itself (a subcommand's namespace is copied into its parent's), and
        # the error comes from it.
        def parse_known_args(  # type: ignore[override]  # (argparse types it with overloads)
            self, args: Any = None, namespace: Any = None
        ) -> tuple[argparse.Namespace, list[str]]:
            parsed, extras = super().parse_known_args(args, namespace)
            if not hasattr(parsed, _INNERMOST):
                setattr(parsed, _INNERMOST, self)
            return parsed, extras

        def parse_args(self, args: Any = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
            parsed, extras = self.parse_known_args(args, namespace)
            innermost: argparse.ArgumentParser = vars(parsed).pop(_INNERMOST, self)  # not one of the arguments
            if extras:
                innermost.error(f"unrecognized arguments: {' '.join(extras)}")
            return parsed

        def error(self, message: str) -> NoReturn:
            from autoglm_runtime.errors import UsageError

            self.print_usage(sys.stderr)
            # Coded like every other usage error of the command (docs/check-deps.md: "E0001 with the parser's message").
            sys.stderr.write(f"{self.prog}: error {UsageError.code}: {message}\n")
            raise UsageExit(message)

        # argparse drops what it cannot write; --help and --version on stdout fail as every output does.
        def print_help(self, file: _Writable | None = None) -> None:
            if file is None:
                from autoglm_runtime.cli import _output

                _output.write(self.format_help(), "the help")
            else:
                super().print_help(file)

        def _print_message(self, message: str, file: _Writable | None = None) -> None:
            if message and (file is None or file is sys.stdout):  # only the --version action writes there
                from autoglm_runtime.cli import _output

                _output.write(message, "the version")
            else:
                super()._print_message(message, file)

    return Parser


def _json_requested(arguments: Sequence[str]) -> bool:
    """Whether check-deps' arguments spell ``--json`` (before any ``--``)."""
    for arg in arguments:
        if arg == "--":
            return False
        if arg == "--json":
            return True
    return False


def _unwind_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # 143, the status SIGTERM's default action gives, after the clean-up


def _sigterm_unwinds() -> Callable[[], None]:
    """Make SIGTERM unwind the command as Ctrl-C does (``finally`` blocks kill an installer's process group and
    remove an unfinished environment) instead of ending the process at once; returns what restores the handler.

    Only where SIGTERM has its default action and in the main thread: a program running :func:`main` in-process
    keeps its own handler."""
    import signal

    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return lambda: None
        signal.signal(signal.SIGTERM, _unwind_on_sigterm)
    except ValueError:  # not the main thread
        return lambda: None

    def restore() -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    return restore


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = arguments[0] if arguments else None
    prestarted = None
    extra: dict[str, object] = {}
    if command == "check-deps":
        from autoglm_runtime.cli._early_probe import prestart

        prestarted = prestart(arguments[1:])
        extra = {"prestarted": prestarted, "argv": arguments[1:]}
    # check-deps is a one-shot read whose start-up time counts (signal imports enum); the others build and follow.
    restore = _sigterm_unwinds() if command in ("config", "env") else None
    try:
        if prestarted is not None:
            from autoglm_runtime.cli.check_deps import replay

            try:
                code = replay(arguments[1:], prestarted)
            except KeyboardInterrupt:
                return 130
            if code is not None:
                return code
        if command == "check-deps":
            from autoglm_runtime.cli.check_deps import plain_arguments

            plain = plain_arguments(arguments[1:], **extra)
            if plain is not None:
                return _call(plain)
        # A known subcommand first: argparse then never looks at the other subcommands, so registering
        # only this one parses exactly as the full parser would.
        parser = build_parser(only=command if command in _SUBCOMMANDS else None)
        import argparse

        try:
            args = parser.parse_args(arguments, namespace=argparse.Namespace(**extra))
        except UsageExit as exc:
            if command == "check-deps" and _json_requested(arguments[1:]):
                # A caller parsing check-deps --json's stdout gets JSON for a refused command line too.
                from autoglm_runtime.cli.check_deps import print_json_error
                from autoglm_runtime.errors import UsageError

                print_json_error(UsageError(exc.message))
            raise
        return _dispatch(parser, args)
    finally:
        if prestarted is not None:
            prestarted.kill()  # a no-op once check-deps has used it; else (a usage error, --help) it must go
        if restore is not None:
            restore()


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        from autoglm_runtime.errors import EXIT_USAGE

        return EXIT_USAGE
    return _call(args)


def _call(args: argparse.Namespace) -> int:
    """Run the parsed command ``args.func``; an SDK error is printed as its coded message and exit code."""
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from autoglm_runtime.errors import AutoGLMRuntimeError  # here: a run that succeeds never loads the registry

        if not isinstance(exc, AutoGLMRuntimeError):
            raise
        from autoglm_runtime.cli import _output

        _output.report(exc)
        return exc.exit_code
    return code


def console() -> NoReturn:
    """The ``autoglm-runtime`` console script (and ``python -m autoglm_runtime`` or ``python -m
    autoglm_runtime.cli``): :func:`main`, then exit.

    ``check-deps`` is a one-shot command whose whole-process time is part of what it is judged by: once its
    output is flushed, its process ends at once (``os._exit``) instead of tearing down the interpreter, which for
    an environment of a few hundred distributions spends 10-15 ms freeing objects nobody will read (a sixth of
    a cold run). It starts no thread, registers no exit handler and leaves no file open, so nothing is lost. Every
    other command exits normally: their ZooKeeper clients' threads and exit handlers run. So does a run inside
    another program's process (a test runner executing the console script in-process, as pytest-console-scripts
    does by default): only the command's own process is ended early, and only its collector is turned off.

    Every command writes its output through :mod:`autoglm_runtime.cli._output`, and what it leaves unflushed is
    flushed here, before the process ends either way. Output that cannot be written ends any command with exit
    status 120, as a failed flush at the interpreter's shutdown does, but with one coded line on stderr instead of
    a traceback (``autoglm-runtime: error E0003: cannot write the report to standard output: No space left on
    device``; closed standard output too). A reader that went away (``autoglm-runtime check-deps | head -1``) ends
    it with 120 and nothing on stderr. (A reader leaving in the middle of one large write is not seen: Python's
    buffered writer takes the partial write for a whole one, and the command ends with its own code.)
    """
    import os

    from autoglm_runtime.cli import _output

    fast = sys.argv[1:2] == ["check-deps"] and _is_the_program()
    if fast:  # a one-shot run making many small objects and no garbage cycles: the collector would only walk them
        import gc

        gc.disable()
    try:
        code = main()
        _output.flush()
    except BrokenPipeError:
        from autoglm_runtime._exit_codes import EXIT_OUTPUT

        _output.discard()  # nothing more can reach the reader: the interpreter's own flush must not fail again
        code = EXIT_OUTPUT
    except Exception as exc:
        from autoglm_runtime.errors import OutputError

        if not isinstance(exc, OutputError):
            raise
        _output.report(exc)  # written outside a command: a stored report replayed, argparse's help
        code = exc.exit_code
    if fast:
        try:  # noqa: SIM105 (contextlib would be a module more to import on every check's start-up)
            sys.stderr.flush()
        except (AttributeError, OSError):  # stderr closed or failing: nowhere is left to say so
            pass
        os._exit(code)
    sys.exit(code)


def _is_the_program() -> bool:
    """Whether this process runs the command as its program: its ``__main__`` is the console script or this
    packages' ``__main__`` (all import :func:`console` under that name), not a caller's module."""
    return getattr(sys.modules.get("__main__"), "console", None) is console
