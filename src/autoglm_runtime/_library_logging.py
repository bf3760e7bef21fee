"""The one thing the library does to logging: keep an unconfigured application free of "no handler" noise.

Installed by each part that logs (``config``, ``isolation``, ``testing``) and by :mod:`autoglm_runtime.logging`
when it is imported, rather than by the root package: ``autoglm-runtime check-deps`` never logs, and
``logging`` is among the costlier imports of its start-up.
"""

from __future__ import annotations

import logging


def install_null_handler() -> None:
    """Attach one ``NullHandler`` to the ``autoglm_runtime`` logger (again a no-op)."""
    logger = logging.getLogger("autoglm_runtime")
    if not any(type(handler) is logging.NullHandler for handler in logger.handlers):
        logger.addHandler(logging.NullHandler())
