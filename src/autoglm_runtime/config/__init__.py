"""The config part of autoglm-runtime."""

from __future__ import annotations

__all__: list[str] = []
