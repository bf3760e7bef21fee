"""How a worker's frames become results or SDK errors on the host: pure functions, no process state.

:mod:`worker` supervises the process and calls these on every handshake and reply. A frame that breaks the
protocol (not a dict, the wrong call id) raises :class:`ReplyMismatch`, which the supervisor answers by
stopping the worker; every other outcome is a result or a coded error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autoglm_runtime.errors import BackendUnsupportedError, IsolationError, ModelCallError, ModelLoadError
from autoglm_runtime.isolation._scripts.dispatch import a_type

__all__ = ["ReplyMismatch", "hello_of", "result_of", "undecodable_reply"]


class ReplyMismatch(Exception):
    """A frame that breaks the protocol; its text completes "model 'x' worker (pid N) ..."."""


def _error_of(message: Mapping[str, Any]) -> Mapping[str, Any]:
    error = message.get("error")
    return error if isinstance(error, Mapping) else {}


def _summary(error: Mapping[str, Any]) -> str:
    return f"{error.get('type', 'Exception')}: {error.get('message', '')}"


def hello_of(name: str, entrypoint: str, hello: Any) -> Mapping[str, Any]:
    """The handshake ``hello`` if it reports a loaded model; else the load error it reports, raised.

    Raises :class:`BackendUnsupportedError` (a subinterpreter was refused), :class:`ModelLoadError` (the
    entrypoint failed) or :class:`ReplyMismatch`.
    """
    if not isinstance(hello, dict):
        raise ReplyMismatch(f"sent {a_type(hello)} instead of a handshake")
    if hello.get("ok"):
        return hello
    error = _error_of(hello)
    if error.get("unsupported"):
        raise BackendUnsupportedError(
            f"model '{name}' cannot run in a subinterpreter: {_summary(error)}; use backend='process' "
            "(or 'auto', which falls back to it)"
        )
    last = str(error.get("traceback", "")).strip().splitlines()[-3:]
    raise ModelLoadError(
        f"model '{name}' failed to load its entrypoint {entrypoint}: {_summary(error)}"
        + ("\n" + "\n".join(last) if last else "")
    )


def result_of(name: str, method: str, call_id: int, reply: Any) -> Any:
    """The result ``reply`` carries for call ``call_id``; else the error it reports, raised.

    Raises :class:`ModelCallError` (the model raised, or the worker could not decode the arguments),
    :class:`BackendUnsupportedError` (the call imported an extension refusing subinterpreters) or
    :class:`ReplyMismatch`.
    """
    if not isinstance(reply, dict):
        raise ReplyMismatch(f"answered {method}() with {a_type(reply)}")
    if reply.get("ok") is True and reply.get("id") == call_id:  # the common case, without building an error
        return reply.get("result")
    error = _error_of(reply)
    remote = {"remote_type": str(error.get("type", "")), "remote_traceback": str(error.get("traceback", ""))}
    if reply.get("bad_request"):  # a frame of ours it could not decode
        raise ModelCallError(
            f"model '{name}' worker could not decode the arguments of {method}(): {error.get('message', '')}; "
            "the worker keeps running",
            **remote,
        )
    if reply.get("id") != call_id:
        raise ReplyMismatch(f"answered call {reply.get('id')!r} instead of {call_id}")
    if reply.get("ok"):
        return reply.get("result")
    if error.get("unsupported"):
        raise BackendUnsupportedError(
            f"model '{name}' cannot run in a subinterpreter: {_summary(error)}; use backend='process'"
        )
    raise ModelCallError(f"model '{name}' raised {_summary(error)} in {method}()", **remote)


def undecodable_reply(name: str, method: str, exc: Exception) -> IsolationError:
    """The error for a well-framed reply the host cannot decode (the worker itself is fine)."""
    return ModelCallError(
        f"model '{name}' answered {method}() with a reply the host cannot decode ({exc}); the worker keeps "
        "running: return JSON values (and bytes) from the model",
        remote_type="DecodeError",
    )
