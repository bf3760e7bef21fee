"""Streams that report how they ended: :meth:`LoadedModel.stream` and ``astream`` hand these out.

Each wraps the pool's stream and ends its :class:`~autoglm_runtime.observability.ModelStreamCall` exactly once:
when the model's generator is exhausted, when the stream fails (the E-code), or when its consumer stops it early
(``close``, ``aclose``, leaving its ``with`` block, dropping it, or cancelling the task awaiting a chunk). They
subclass the streams they wrap, so the types :class:`LoadedModel` promises stay true. A forked child's copy records
nothing (the stream goes on in the parent, whose event it is; see ``workers/streams.py``).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from autoglm_runtime.isolation.workers import _closer
from autoglm_runtime.isolation.workers.streams import AsyncModelStream, ModelStream
from autoglm_runtime.observability import ModelStreamCall

__all__ = ["ObservedAsyncStream", "ObservedStream"]


class ObservedStream(ModelStream):
    """A :class:`ModelStream` whose end is recorded (see the module)."""

    def __init__(self, inner: ModelStream, event: ModelStreamCall) -> None:
        self._inner = inner  # not ModelStream.__init__: every method delegates to the pool's stream
        self._event = event
        self._pid = _closer.pid()

    def __next__(self) -> Any:
        if self._pid != _closer.pid():
            return next(self._inner)  # a forked child's copy: refused (E0001), or ended once closed
        try:
            chunk = next(self._inner)
        except StopIteration:
            self._event.end()
            raise
        except BaseException as exc:
            self._event.end(exc)
            raise
        self._event.chunks += 1
        return chunk

    def close(self) -> None:
        """Stop early (see :meth:`ModelStream.close`). Idempotent."""
        try:
            self._inner.close()
        finally:
            if self._pid == _closer.pid():
                self._event.end(cancelled=True)

    def __del__(self) -> None:
        if self._pid == _closer.pid():
            _end_dropped(self._event)  # the pool's stream, dropped with this one, stops its generator itself


class ObservedAsyncStream(AsyncModelStream):
    """An :class:`AsyncModelStream` whose end is recorded; it opens (and may fail with E0106) on the first
    ``__anext__``, under the stream's span."""

    def __init__(self, inner: AsyncModelStream, event: ModelStreamCall) -> None:
        self._inner = inner
        self._event = event
        self._opened = False
        self._pid = _closer.pid()

    async def __anext__(self) -> Any:
        if self._pid != _closer.pid():
            return await self._inner.__anext__()  # a forked child's copy (see ObservedStream)
        try:
            if self._opened:
                chunk = await self._inner.__anext__()
            else:
                self._opened = True
                with self._event.opening():  # the request frame is built now: it carries this span's context
                    chunk = await self._inner.__anext__()
        except StopAsyncIteration:
            self._event.end()
            raise
        except asyncio.CancelledError:
            self._event.end(cancelled=True)
            raise
        except BaseException as exc:
            self._event.end(exc)
            raise
        self._event.chunks += 1
        return chunk

    async def aclose(self) -> None:
        """Stop early (see :meth:`AsyncModelStream.aclose`). Idempotent."""
        try:
            await self._inner.aclose()
        finally:
            if self._pid == _closer.pid():
                self._event.end(cancelled=True)

    def __del__(self) -> None:
        if self._pid == _closer.pid():
            _end_dropped(self._event)


def _end_dropped(event: ModelStreamCall) -> None:
    """Count and end a dropped stream's event as cancelled (see ``workers/_closer.py``)."""
    if not event.ended:
        _closer.dropped(functools.partial(event.end, cancelled=True))
