"""``python -m autoglm_runtime`` runs the command line."""

import sys

from autoglm_runtime.cli import main

sys.exit(main())
