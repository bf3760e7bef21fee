"""Run a command whose standard output cannot take its output, as the CLI's tests of exit status 120 do.

from tests._support.stdout import REASONS, cannot_write, run_with_stdout
done = run_with_stdout("full", ["autoglm-runtime", "--version"])
assert (done.returncode, done.stderr) == (120, cannot_write("the version", "full"))
"""

from __future__ import annotations

import os
import subprocess

__all__ = ["REASONS", "cannot_write", "run_with_stdout"]

#: Standard output that cannot take the output -> what the error says about it: a full device, closed (``>&-``:
#: Python sets ``sys.stdout`` to ``None``), open for reading only (every write fails with EBADF).
REASONS = {"full": "No space left on device", "closed": "it is closed", "read-only": "Bad file descriptor"}


def run_with_stdout(stdout: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with its standard output ``stdout`` (a key of :data:`REASONS`); stderr is captured."""
    if stdout == "closed":
        return subprocess.run(
            ["bash", "-c", 'exec "$@" >&-', "bash", *argv], stderr=subprocess.PIPE, text=True, check=False
        )
    with open("/dev/full" if stdout == "full" else os.devnull, "w" if stdout == "full" else "r") as target:
        return subprocess.run(argv, stdout=target, stderr=subprocess.PIPE, text=True, check=False)


def cannot_write(what: str, stdout: str) -> str:
    """The error line a command prints when ``what`` cannot be written to ``stdout`` (a key of :data:`REASONS`)."""
    return f"autoglm-runtime: error E0003: cannot write {what} to standard output: {REASONS[stdout]}\n"
