"""Describe an interpreter's installed distributions: run the probe in it and parse what it prints.

:func:`probe_environment` runs :mod:`autoglm_runtime.deps._scripts.probe` in the target interpreter (one
``python -I`` subprocess) or, for the running interpreter, in-process; :func:`parse_probe`
(:mod:`autoglm_runtime.deps.distributions`, whose names this module re-exports) then parses the metadata
with ``packaging``. An interpreter that cannot be run or does not answer is a :class:`UsageError`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from autoglm_runtime.deps._scripts import probe as _probe
from autoglm_runtime.deps.distributions import InstalledDist, ProbedEnvironment, canonical, parse_probe

if TYPE_CHECKING:
    from pathlib import Path

    from autoglm_runtime.errors import UsageError

__all__ = [
    "InstalledDist",
    "ProbedEnvironment",
    "canonical",
    "finish_probe",
    "launch_error",
    "parse_probe",
    "probe_command",
    "probe_environment",
    "probe_payload",
]

PROBE_TIMEOUT = 120.0
#: The oldest interpreter the probe script runs on.
MIN_PYTHON = (3, 7)
_VERSION_SCRIPT = "import sys; sys.stdout.write('%d.%d' % sys.version_info[:2])"  # Python 2 runs it too


def interpreter_path(python: str | Path) -> str:
    """``python`` as an absolute path (a bare name is looked up on ``PATH``), as reports show it."""
    text = os.fspath(python)
    found = None
    if os.sep not in text:
        import shutil  # only for a bare name: shutil's import (bz2, lzma) is a part of check-deps' start-up

        found = shutil.which(text)
    return os.path.abspath(found or text)


def probe_command(python: str | Path) -> list[str]:
    """The command that runs the probe in ``python``, isolated (``-I``: no user site, no environment vars)."""
    return [str(python), "-I", os.path.normpath(_probe.__file__)]


def _directory_error(exe: str) -> UsageError:
    from pathlib import Path  # here: only an error needs it

    from autoglm_runtime.errors import UsageError

    for candidate in (Path(exe) / "bin" / "python", Path(exe) / "Scripts" / "python.exe"):
        if candidate.exists():
            return UsageError(f"{exe} is a directory, not an interpreter; pass its interpreter: --python {candidate}")
    return UsageError(f"{exe} is a directory, not an interpreter; pass a Python executable to --python")


def launch_error(python: str | Path, exc: OSError | subprocess.TimeoutExpired, given: str | None = None) -> UsageError:
    """The usage error for an interpreter (``given`` as ``python``) that could not be started or did not answer."""
    from autoglm_runtime.errors import UsageError  # here: a check that runs never loads the registry

    exe = str(python)
    if isinstance(exc, subprocess.TimeoutExpired):
        return UsageError(f"interpreter {exe} did not answer the probe within {PROBE_TIMEOUT:.0f} s")
    if os.path.isdir(exe):
        return _directory_error(exe)
    if isinstance(exc, FileNotFoundError) and given is not None and os.sep not in given:
        # A bare name was looked for on PATH: ``exe`` (made absolute in the working directory) is only where it is not.
        return UsageError(
            f"interpreter {given} was not found on PATH; pass a Python executable (a path, or a name on PATH) "
            "to --python"
        )
    if isinstance(exc, FileNotFoundError):
        return UsageError(f"interpreter {exe} does not exist; pass a Python executable to --python")
    if isinstance(exc, PermissionError):
        return UsageError(f"interpreter {exe} cannot be run (permission denied); pass a Python executable")
    return UsageError(f"interpreter {exe} cannot be run: {exc}; pass a Python executable to --python")


def _python_version(exe: str) -> tuple[int, int] | None:
    """The ``(major, minor)`` of an interpreter that failed the probe, asked in a way every Python answers."""
    try:
        done = subprocess.run([exe, "-c", _VERSION_SCRIPT], capture_output=True, text=True, timeout=30, check=False)
        major, minor = done.stdout.strip().split(".")
        return int(major), int(minor)
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None


def finish_probe(python: str | Path, returncode: int, stdout: str, stderr: str) -> ProbedEnvironment:
    """Parse what the probe printed; a failed or garbled probe is a :class:`UsageError`.

    Output before the probe's mark (a ``.pth`` file that prints at start-up) is ignored.
    """
    exe = str(python)
    if returncode != 0:
        from autoglm_runtime.errors import UsageError  # here, with the error it raises: see launch_error

        version = _python_version(exe)
        if version is not None and version < MIN_PYTHON:
            oldest = ".".join(map(str, MIN_PYTHON))
            raise UsageError(
                f"interpreter {exe} is Python {version[0]}.{version[1]}; check-deps checks environments of Python "
                f"{oldest} or newer: pass a newer interpreter to --python"
            )
        lines = [line.strip() for line in stderr.splitlines() if line.strip()] or ["no output"]
        # An interpreter that cannot start (a wrong PYTHONHOME) says why in its "Fatal Python error" line, after its
        # path configuration and before a thread dump; a traceback ends with its exception; anything else (a pyenv
        # shim, a wrapper script) says it first.
        fatal = [line for line in lines if line.startswith("Fatal Python error:")]
        said = fatal[0] if fatal else lines[-1] if "Traceback (most recent call last):" in lines else lines[0]
        raise UsageError(f"interpreter {exe} failed to run the probe (exit {returncode}): {said[:300]}")
    try:
        return parse_probe(probe_payload(stdout), exe)
    except (ValueError, KeyError, TypeError, AttributeError, EOFError) as exc:
        from autoglm_runtime.errors import UsageError

        raise UsageError(
            f"interpreter {exe} answered the probe with something that is not its description: {str(exc)[:300]}"
        ) from exc


def probe_payload(stdout: str) -> Any:
    """The description the probe printed on ``stdout``: its JSON text, or its marshal bytes in base64
    (:data:`~autoglm_runtime.deps._scripts.probe.MARSHAL_MARK`), on the line after its last mark (what
    ``.pth`` files print before the mark, or exit handlers after that line, is not the probe's). Raises
    ``ValueError`` (or ``EOFError``, ``TypeError`` from marshal) for output that is neither.
    """
    _, mark, payload = stdout.rpartition(_probe.MARSHAL_MARK)
    if mark:
        import binascii
        import marshal

        return marshal.loads(binascii.a2b_base64(payload.partition("\n")[0]))
    _, mark, payload = stdout.rpartition(_probe.OUTPUT_MARK)
    if not mark:
        raise ValueError("the probe's output mark is missing")
    import json  # here: a check printed as text never needs it

    return json.loads(payload.partition("\n")[0])


def probe_environment(python: str | Path | None = None) -> ProbedEnvironment:
    """Describe ``python``'s environment (the running interpreter's when ``None``).

    Raises :class:`~autoglm_runtime.errors.UsageError` (E0001) when the interpreter cannot be run or
    does not answer with the probe's description (a directory, Python older than 3.7, not a Python at all).
    """
    if python is None:
        return parse_probe(_probe.probe(), sys.executable)
    exe = interpreter_path(python)
    try:
        done = subprocess.run(probe_command(exe), capture_output=True, text=True, timeout=PROBE_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise launch_error(exe, exc, os.fspath(python)) from exc
    return finish_probe(exe, done.returncode, done.stdout, done.stderr)
