"""The exit codes every ``autoglm-runtime`` command uses (re-exported by :mod:`autoglm_runtime.errors`).

Apart from the error registry so that a report can give its exit code without importing every error class
(``check-deps`` is judged by its start-up time).
"""

from __future__ import annotations

__all__ = ["EXIT_FINDINGS", "EXIT_OK", "EXIT_OUTPUT", "EXIT_PARTIAL", "EXIT_USAGE"]

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
#: The command printed what it could, but not everything it was asked for (``config dump`` with keys it may not
#: read): each missing part is named on stderr.
EXIT_PARTIAL = 3
#: The output could not be written (its reader went away, the disk is full, stdout is closed): the status Python's
#: own exit gives when its last flush fails.
EXIT_OUTPUT = 120
