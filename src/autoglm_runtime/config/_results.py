"""What one znode read found (:class:`ReadResult`), and how a read ends without an answer (:class:`Interrupted`).

The reader (:mod:`._reader`) fills results; the tree (:mod:`._tree`), the walker (:mod:`._walk`) and the sync
(:mod:`._sync`) consume them.
"""

from __future__ import annotations

from typing import Any

from kazoo.exceptions import NoAuthError, NoNodeError

__all__ = ["Interrupted", "ReadResult"]


class Interrupted(Exception):
    """The connection went away (or a read timed out) in the middle of a batch."""


class ReadResult:
    """What one path's read found."""

    __slots__ = ("children", "data", "denied", "missing", "path", "seq", "stat")

    def __init__(self, path: str, seq: int) -> None:
        self.path = path
        self.seq = seq
        self.data: bytes | None = None
        self.stat: Any = None
        self.children: list[str] | None = None
        self.missing = False
        self.denied = False

    def take(self, value: Any, *, children: bool) -> None:
        """Record one answer: a value, or a kazoo exception instance from a multiRead."""
        if isinstance(value, NoNodeError):
            self.missing = True
        elif isinstance(value, NoAuthError):
            self.denied = True
        elif isinstance(value, BaseException):
            raise Interrupted from value
        elif children:
            self.children = value
        else:
            self.data, self.stat = value
