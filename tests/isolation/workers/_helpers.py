"""Helpers shared by the worker protocol tests and the worker integration tests."""

from __future__ import annotations

from typing import Any

import numpy as np


def exact(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (numpy arrays: dtype, shape and bytes)."""
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(exact(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(exact(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and a != a:  # NaN (JSON's NaN travels): the same value, though never equal to itself
        return bool(b != b)
    return bool(a == b)
