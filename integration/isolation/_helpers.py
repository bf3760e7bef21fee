"""Helpers shared by the worker integration tests: calls on a thread of their own, pids a model writes down."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autoglm_runtime.testing import wait_until


def outcome(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """What ``call(*args, **kwargs)`` returned, or the exception it raised."""
    try:
        return call(*args, **kwargs)
    except BaseException as exc:
        return exc


def in_background(call: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[threading.Thread, list[Any]]:
    """Start ``call(*args, **kwargs)`` on a thread of its own; the list gets its :func:`outcome`."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(outcome(call, *args, **kwargs)), name="test-caller")
    thread.start()
    return thread, out


def pid_in(path: Path, timeout: float = 30.0) -> int:
    """The pid a model wrote to ``path``, once it is there."""
    wait_until(lambda: path.exists() and path.read_text(), timeout, f"{path} to be written")
    return int(path.read_text())


def log_line(stream: io.StringIO, text: str) -> dict[str, Any]:
    """The one JSON log line in ``stream`` whose message contains ``text`` (waited for: the pump forwards
    asynchronously)."""

    def found() -> list[dict[str, Any]]:
        return [line for line in map(json.loads, stream.getvalue().splitlines()) if text in line["message"]]

    wait_until(lambda: len(found()) == 1, 30, f"the worker's log line with {text!r}")
    return found()[0]
