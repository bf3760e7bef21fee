"""What the commands write on standard output, and what becomes of output that cannot be written there.

Every command writes its result with :func:`write`, naming what it writes, so that a failure ends it with one
coded line on stderr (``autoglm-runtime: error E0003: cannot write the report to standard output: No space left
on device``) and exit status 120 (:data:`~autoglm_runtime.errors.EXIT_OUTPUT`, what Python's own exit gives when
its last flush fails) instead of a traceback. Closed standard output (``>&-``: Python then sets ``sys.stdout`` to
``None``, where ``print`` writes nothing without a word) fails the same way. A reader that went away
(``| head -1``) stays a :class:`BrokenPipeError`, which the console ends with 120 and nothing on stderr.

Loads only ``os`` and ``sys`` (check-deps is judged by its start-up time); the error registry only on failure.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from autoglm_runtime.errors import AutoGLMRuntimeError, OutputError

__all__ = ["discard", "flush", "note", "report", "write"]


def write(text: str, what: str) -> None:
    """Write ``text`` on standard output and flush it; ``what`` names it in the error (``"the report"``).

    Raises :class:`BrokenPipeError` when the reader went away and :class:`~autoglm_runtime.errors.OutputError`
    (E0003) for any other failure, after which standard output is discarded (:func:`discard`).
    """
    _send(text, what)


def flush(what: str = "the output") -> None:
    """Flush standard output, failing as :func:`write` does; nothing to do when it is closed (nothing was
    written: :func:`write` refuses)."""
    _send(None, what)


def _send(text: str | None, what: str) -> None:
    stream = sys.stdout
    if stream is None:
        if text is None:
            return
        raise _failure(what, None)
    try:
        if text is not None:
            stream.write(text)
        stream.flush()
    except OSError as exc:
        discard()
        if isinstance(exc, BrokenPipeError):
            raise
        raise _failure(what, exc) from exc


def _failure(what: str, exc: OSError | None) -> OutputError:
    from autoglm_runtime.errors import OutputError

    reason = "it is closed" if exc is None else exc.strerror or str(exc)
    return OutputError(f"cannot write {what} to standard output: {reason}")


def discard() -> None:
    """Point standard output at ``/dev/null`` for good, once nothing more can reach its reader: what its buffer
    still holds, and whatever is written later, goes there instead of failing again at the interpreter's exit
    (with an ``Exception ignored`` traceback). Closed or not a file (a test's capture): nothing to do."""
    try:
        fd = sys.stdout.fileno()  # (closed: sys.stdout is None, an AttributeError)
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def report(exc: AutoGLMRuntimeError) -> None:
    """Print ``exc`` as a command's error line on stderr. An :class:`~autoglm_runtime.errors.OutputError` that
    interrupted the printing of another error (``check-deps --json`` writing an E0102 as JSON) comes after that
    error's own line, which is not lost. A closed or failing stderr loses them: there is nowhere else to say it
    (the exit status still does)."""
    from autoglm_runtime.errors import AutoGLMRuntimeError, OutputError

    errors = [exc]
    if isinstance(exc, OutputError):
        earlier = exc.__context__
        while earlier is not None:  # (Python keeps the chain free of cycles)
            if isinstance(earlier, AutoGLMRuntimeError):
                errors.insert(0, earlier)
            earlier = earlier.__context__
    note("\n".join(f"autoglm-runtime: error {error}" for error in errors))


def note(text: str) -> None:
    """Print ``text`` as a line on stderr (``print(file=sys.stderr)`` writes on stdout when stderr is closed); a
    closed or failing stderr loses it: there is nowhere else to say it."""
    stream = sys.stderr
    if stream is None:
        return
    try:
        stream.write(f"{text}\n")
        stream.flush()
    except OSError:
        pass
