"""The model worker: runs one model inside its own environment and answers calls over a socket.

STDLIB ONLY. The host starts it as a script, by path, with the environment's interpreter in isolated mode::

    <env>/bin/python -I .../_scripts/worker_main.py --fd 3 --name a --model-dir models/a --entrypoint a_model:load

so neither the SDK nor the host's site-packages need to (or can) be importable here. It loads
``protocol.py`` and the other files of its own directory as a package of a private name, ``_autoglm_scripts``,
made by path, without putting that directory on ``sys.path`` (the model must not see the SDK's modules).

Start-up: put the model directory first on ``sys.path``, import the entrypoint, call it to get the model
object, then send a ``hello`` frame listing the distributions whose modules were actually imported, with
their versions and the files they came from. Then hand every message to ``dispatch.py``'s
:class:`Dispatcher` (calls multiplexed by id, streams, heartbeats; see there for the messages), each call run
under the trace context its frame carries (``trace_context.py``).

A watchdog thread polls the socket for the host hanging up (``POLLRDHUP``): when the host closes it (or
dies), the worker exits at once, even while a model call is still running, so no worker outlives its host.

``--backend subinterp`` runs all of the above inside an isolated subinterpreter (``_interpreters`` on
Python 3.13+, ``_xxsubinterpreters.create(isolated=True)`` on 3.12), whose ``sys.path`` is the
environment's; the main interpreter only hosts it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import select
import socket
import sys
import threading
import traceback
from importlib import metadata
from types import ModuleType
from typing import Any, NoReturn

#: What refusing subinterpreters looks like: single-phase-init extensions (numpy, pydantic-core, _curses),
#: daemon threads in an isolated subinterpreter, PyO3 extensions, and numpy's own guard.
UNSUPPORTED_MARKERS = (
    "does not support loading in subinterpreters",
    "daemon threads are disabled in this (sub)interpreter",
    "do not yet support subinterpreters",
    "cannot load module more than once per process",
)
EXIT_LOAD_FAILED = 3
#: The longest message (and traceback) an error reply carries; longer ones are cut.
ERROR_TEXT = 65536
EXIT_HOST_FAILED = 4
#: The private name this directory is a package under in the worker (see :func:`_load_sibling`).
PACKAGE = "_autoglm_scripts"


def _load_sibling(module: str) -> ModuleType:
    """``module``.py from this directory, imported as ``_autoglm_scripts.<module>``.

    Run as a script (in a model's environment), this directory is first made a package of that private name, once,
    by path (its ``__init__.py``) and without going on ``sys.path`` (the model must not see the SDK's modules), so
    the files here import one another relatively (``from . import codec``) as they do in the SDK: none of them
    loads a sibling by path itself.
    """
    if __package__:  # (imported in the SDK: its own package)
        return importlib.import_module(f"{__package__}.{module}")
    if PACKAGE not in sys.modules:
        here = os.path.dirname(os.path.abspath(__file__))
        init = os.path.join(here, "__init__.py")
        spec = importlib.util.spec_from_file_location(PACKAGE, init, submodule_search_locations=[here])
        if spec is None or spec.loader is None:  # pragma: no cover - the file ships next to this one
            raise ImportError(f"cannot load the worker's modules from {here}")
        package = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = package  # (where the import system looks a package's modules up)
        spec.loader.exec_module(package)
    return importlib.import_module(f"{PACKAGE}.{module}")


def _error(exc: BaseException, backend: str = "process") -> dict[str, Any]:
    """``exc`` as the error of a reply; ``unsupported`` marks a refusal of the subinterpreter backend.

    Whatever the model raised, this returns: an exception whose ``str()`` raises is described by its type, and a
    message or traceback longer than :data:`ERROR_TEXT` characters is cut (a reply must fit in one frame)."""
    name = type(exc).__name__
    try:
        text = str(exc)
    except Exception as failure:  # the model's own __str__ failed: the reply must still go out
        text = f"<str() of the {name} raised {type(failure).__name__}>"
    try:
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except Exception as failure:
        trace = f"<the traceback of the {name} could not be formatted: {type(failure).__name__}>"
    return {
        "type": name,
        "message": _clip(text),
        "traceback": _clip(trace),
        "unsupported": backend == "subinterp" and any(marker in text for marker in UNSUPPORTED_MARKERS),
    }


def _clip(text: str) -> str:
    """``text`` up to :data:`ERROR_TEXT` characters, saying how many more were cut."""
    if len(text) <= ERROR_TEXT:
        return text
    return f"{text[:ERROR_TEXT]}... ({len(text) - ERROR_TEXT} more characters cut)"


def _top_level_names(dist: Any) -> list[str]:
    text = dist.read_text("top_level.txt")
    if text:
        return [line.strip() for line in text.splitlines() if line.strip()]
    names = set()
    for file in dist.files or ():
        first = str(file).split("/", 1)[0]
        if first.endswith(".py"):
            names.add(first[:-3])
        elif "/" in str(file) and not first.endswith((".dist-info", ".data")) and first != "..":
            names.add(first)
    return sorted(names)


def loaded_versions() -> dict[str, dict[str, str]]:
    """Distributions with at least one top-level module in ``sys.modules``: version and module location."""
    found: dict[str, dict[str, str]] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if not name or name in found:
            continue
        for top in _top_level_names(dist):
            module = sys.modules.get(top)
            where = getattr(module, "__file__", None) if module is not None else None
            if where:
                if os.path.basename(where) == "__init__.py":
                    where = os.path.dirname(where)
                found[name] = {"version": dist.version, "location": where}
                break
    return found


def _load_model(model_dir: str, entrypoint: str) -> Any:
    if model_dir not in sys.path:
        sys.path.insert(0, model_dir)
    module_name, _, attribute = entrypoint.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target()


def _keep_to_this_process(sock: socket.socket) -> None:
    """No process the model starts holds the worker's socket: when the worker dies, its socket closes, so the host's
    next write to it fails at once (and the host restarts the worker) instead of going to a process that never
    answers. Not inherited through ``exec``; closed in the child of a ``fork`` (multiprocessing's "fork")."""
    os.set_inheritable(sock.fileno(), False)  # the host passed it inheritable (``pass_fds``)

    def drop() -> None:
        with contextlib.suppress(OSError):
            os.close(sock.detach())

    with contextlib.suppress(AttributeError, RuntimeError):  # no fork here (or not in this subinterpreter)
        os.register_at_fork(after_in_child=drop)


def _watchdog(sock: socket.socket) -> None:
    """Ends the process as soon as the host closes its end of the socket, even mid-call."""
    rdhup = getattr(select, "POLLRDHUP", 0)
    if rdhup:
        poller = select.poll()
        poller.register(sock.fileno(), rdhup)  # not POLLIN: requests must not wake us
        poller.poll()
    else:  # pragma: no cover - no POLLRDHUP (macOS): notice the host's death instead
        parent = os.getppid()
        while os.getppid() == parent:
            threading.Event().wait(0.5)
    _exit_now(0)


def serve(  # noqa: PLR0917
    fd: int,
    name: str,
    model_dir: str,
    entrypoint: str,
    backend: str,
    concurrency: str = "serial",
    max_inflight: int = 1,
) -> int:
    """Load the model and answer calls until the host closes the socket; returns the exit status."""
    protocol = _load_sibling("protocol")
    dispatch = _load_sibling("dispatch")
    trace_context = _load_sibling("trace_context")
    trace_context.install_logging()  # before the model loads: its log records carry each call's trace ids
    sock = socket.socket(fileno=fd)
    # Blocking at the OS level too: a host under socket.setdefaulttimeout() makes the pair non-blocking, which
    # socket(fileno=) does not see (reads would spin on EAGAIN, a large write fail with BlockingIOError).
    sock.setblocking(True)
    _keep_to_this_process(sock)
    # Daemon where allowed; isolated subinterpreters refuse daemon threads, and there os._exit ends all.
    watchdog = threading.Thread(target=_watchdog, args=(sock,), name=f"autoglm-worker-{name}-watchdog")
    watchdog.daemon = backend == "process"
    watchdog.start()
    try:
        model = _load_model(model_dir, entrypoint)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: report, never die silently
        protocol.write_frame(sock, {"type": "hello", "ok": False, "error": _error(exc, backend)})
        return EXIT_LOAD_FAILED
    send_lock = threading.Lock()

    def reply(message: dict[str, Any]) -> None:
        frame = protocol.encode(message)  # before the lock: a value that cannot travel raises here, sends nothing
        with send_lock:
            protocol.send(sock, frame)

    def result(call_id: Any, value: Any) -> None:  # reply() of the commonest answer, its envelope formatted
        if type(call_id) is not int:
            reply({"id": call_id, "ok": True, "result": value})
            return
        if type(value) is bytes:
            data = protocol.blob_reply(call_id, value)
            if data is not None:  # a small blob: its frame made at once, one write
                with send_lock:
                    sock.sendall(data)
                return
        frame = protocol.encode_wrapped(f'{{"id":{call_id},"ok":true,"result":', value, "}")
        with send_lock:
            protocol.send(sock, frame)

    protocol.write_frame(
        sock,
        {
            "type": "hello",
            "ok": True,
            "pid": os.getpid(),
            "backend": backend,
            "python": "{}.{}.{}".format(*sys.version_info[:3]),
            "executable": sys.executable,
            "prefix": sys.prefix,
            "versions": loaded_versions(),
        },
    )
    errors = lambda exc: _error(exc, backend)  # noqa: E731
    dispatcher = dispatch.Dispatcher(
        model, reply, errors, _exit_now, concurrency, max_inflight, name, scope=trace_context.CallScope, result=result
    )
    reader = protocol.FrameReader(sock)
    while True:
        try:
            message = reader.read()
        except protocol.DecodeError as exc:  # a whole frame we cannot read (the stream is still in step): say so
            reply({"id": exc.call_id, "ok": False, "error": _error(exc), "bad_request": True})
            continue
        except (protocol.FrameError, OSError):  # the host closed the socket (or broke the stream): nothing to serve
            _exit_now(0)
        if isinstance(message, dict):
            dispatcher.handle(message)


def _exit_now(code: object) -> NoReturn:
    status = code if isinstance(code, int) else (0 if code is None else 1)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(status)


def _create_isolated() -> tuple[Any, Any]:
    """An isolated subinterpreter and a ``run(code) -> failure or None`` for it (3.13+, or 3.12)."""
    try:  # 3.13+: the PEP 734 low-level module
        interpreters = importlib.import_module("_interpreters")
        interp = interpreters.create("isolated")
        return interp, lambda code: interpreters.exec(interp, code)
    except ImportError:
        pass
    legacy = importlib.import_module("_xxsubinterpreters")  # 3.12: isolated= selects the PEP 684 config
    interp = legacy.create(isolated=True)

    def run(code: str) -> Any:
        try:
            legacy.run_string(interp, code)
        except Exception as exc:  # RunFailedError carries the subinterpreter's exception as text
            return exc
        return None

    return interp, run


def _run_in_subinterpreter(args: argparse.Namespace) -> int:
    protocol = _load_sibling("protocol")
    try:
        _, run = _create_isolated()
    except (ImportError, AttributeError, TypeError) as exc:
        sock = socket.socket(fileno=args.fd)
        error = _error(exc)
        error["message"] = f"Python {sys.version.split()[0]} cannot create an isolated subinterpreter: {exc}"
        error["unsupported"] = True
        protocol.write_frame(sock, {"type": "hello", "ok": False, "error": error})
        return EXIT_LOAD_FAILED
    here = os.path.abspath(__file__)
    code = (
        "import importlib.util, os, sys\n"
        f"spec = importlib.util.spec_from_file_location('_autoglm_worker', {here!r})\n"
        "worker = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(worker)\n"
        f"status = worker.serve({args.fd}, {args.name!r}, {args.model_dir!r}, {args.entrypoint!r}, 'subinterp', "
        f"{args.concurrency!r}, {args.max_inflight!r})\n"
        "sys.stdout.flush(); sys.stderr.flush()\n"
        "os._exit(status)\n"
    )
    failure = run(code)
    if failure is not None:
        print(f"subinterpreter failed: {getattr(failure, 'formatted', failure)}", file=sys.stderr)
    return EXIT_HOST_FAILED


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="autoglm-worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--entrypoint", required=True)
    parser.add_argument("--backend", choices=("process", "subinterp"), default="process")
    parser.add_argument("--concurrency", choices=("serial", "threads", "async"), default="serial")
    parser.add_argument("--max-inflight", type=int, default=1)
    args = parser.parse_args(argv)
    if args.backend == "subinterp":
        return _run_in_subinterpreter(args)
    return serve(args.fd, args.name, args.model_dir, args.entrypoint, "process", args.concurrency, args.max_inflight)


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
