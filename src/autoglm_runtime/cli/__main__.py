"""``python -m autoglm_runtime.cli`` runs the command line, as ``python -m autoglm_runtime`` does."""

from autoglm_runtime.cli import console

console()
