"""Helpers users may import in their own tests: a real ZooKeeper harness and offline wheel builder."""

from __future__ import annotations

__all__: list[str] = []
