"""``python -m autoglm_runtime`` runs the command line."""

from autoglm_runtime.cli import console

console()
