"""Run the example model server: ``python -m examples.model_server`` (``bash scripts/serve`` does the set-up).

The order matters to a newcomer: the command line and the port are checked before anything is built (a
taken port is E0001, exit 2, at once); then the state directory is locked, assets are built or reused (the
numpy wheels are fetched at first start only), the config store is opened and seeded, the models are
loaded, environments nobody uses are removed, and the banner is printed only once uvicorn serves on the
port. See ``options.py`` for the flags.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import platform
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import tokenizers
import uvicorn

from autoglm_runtime.deps import load_manifest
from autoglm_runtime.errors import AutoGLMRuntimeError
from autoglm_runtime.isolation import ModelLoader, collect_garbage
from autoglm_runtime.logging import RequestIdMiddleware, configure_json_logging
from autoglm_runtime.validation import ChatTemplate, HFTokenizer
from examples.model_server import banner, options
from examples.model_server.app import create_app, numpy_version
from examples.model_server.assets import MODELS, build_tokenizer, fill_wheelhouse, tokenizer_path
from examples.model_server.model_limits import ModelLimits
from examples.model_server.started import Started
from examples.model_server.store import open_store, start_config

log = logging.getLogger("examples.model_server")


class _Server(uvicorn.Server):
    """uvicorn's server, printing the banner once it accepts connections on the socket.

    A second Ctrl-C (or SIGTERM) while it shuts down stops it at once, as uvicorn's own second Ctrl-C does, but
    quietly: the requests and the lifespan task that forced exit cancels are not logged as errors with tracebacks.
    """

    def __init__(self, config: uvicorn.Config, text: str, stop: _Stop) -> None:
        super().__init__(config)
        self._text = text
        self._stop = stop
        #: The signals that stopped the server, in order.
        self.received: list[int] = []
        self._hurried = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.received.append(sig)
        self._stop.stopping = True
        self._stop.replays += 1  # (uvicorn raises each again once it has shut down)
        again = self.should_exit
        super().handle_exit(sig, frame)
        if again and not self._hurried:
            self._hurried = True
            self.force_exit = True  # (uvicorn forces only on a second SIGINT; a second SIGTERM means it too)
            log.info("second interrupt: stopping at once, without waiting for open connections")

    def quiet_cancellations(self, record: logging.LogRecord) -> bool:
        """(A filter of uvicorn's logger) False for what a forced exit's cancellations log: a request or the
        lifespan task cancelled mid-way is how a second Ctrl-C stops them, not an error."""
        if not self.force_exit:
            return True
        cancelled = record.exc_info is not None and isinstance(record.exc_info[1], asyncio.CancelledError)
        return not (cancelled or record.getMessage().rstrip().endswith("CancelledError"))

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if not self.should_exit:
            # On standard output: standard error carries the JSON log lines alone, for whatever collects them.
            print(self._text, file=sys.stdout, flush=True)


def _shown(path: Path) -> str:
    """``path`` relative to the current directory when it is inside it (as a newcomer typed it)."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def _serve(args: argparse.Namespace, sock: socket.socket, stop: _Stop) -> None:
    started = Started()
    with contextlib.ExitStack() as stack:
        stack.push(_say_stopped(started))  # first in, so last out: once the workers and ZooKeeper are stopped
        # Before the loader: its workers, and those of a load Ctrl-C interrupts, are stopped while this counts.
        stack.enter_context(started.counting_stops(lambda: stop.stopping))
        try:
            _start_and_serve(args, sock, stack, stop, started)
        finally:
            stop.stopping = True  # however it ended: the clean-up below runs to its end


def _start_and_serve(
    args: argparse.Namespace, sock: socket.socket, stack: contextlib.ExitStack, stop: _Stop, started: Started
) -> None:
    state: Path = args.state_dir
    stack.enter_context(options.state_lock(state))
    manifests = [load_manifest(model_dir) for model_dir in sorted(MODELS.iterdir())]
    options.check_python(manifests, platform.python_version())
    # Config first: a ZooKeeper that cannot be reached fails a first start before its downloads.
    store = started.store = open_store(zk=args.zk, choice=args.config_store, state=state, stack=stack)
    root: str = args.root
    # A restart while ZooKeeper is down serves the snapshot of the last run (E0409, stale in /health).
    config = start_config(store, root, [m.name for m in manifests], state=state, reset=args.reset)
    stack.callback(config.stop)

    wheelhouse = fill_wheelhouse(state / "wheels", manifests)
    tokenizer_file = tokenizer_path(state)
    if not tokenizer_file.exists():
        build_tokenizer(tokenizer_file)
    tokenizer = HFTokenizer.from_file(tokenizer_file)
    templates = {m.name: ChatTemplate.from_file(m.directory / "tokenizer_config.json") for m in manifests}
    walkthrough = banner.Walkthrough.for_tokenizer(tokenizer, templates[banner.RELOADED])

    envs = state / "envs"
    loader = stack.enter_context(ModelLoader(envs, wheelhouse=wheelhouse, offline=True, backend=args.backend))
    loaded = started.models
    for manifest in manifests:
        loaded.append(loader.load(manifest))
    # The state directory's environments are this server's alone: those it does not hold are old keys.
    removed = collect_garbage(envs).removed
    built = sum(model.environment.created for model in loaded)
    environments = f"{_shown(envs)}: {len(loaded) - built} reused, {built} built, {len(removed)} unused removed"

    limits = {m.name: ModelLimits(config, m.name) for m in manifests}  # the app's, read once for the banner
    app = RequestIdMiddleware(
        create_app(
            config=config,
            loader=loader,
            tokenizer=tokenizer,
            templates=templates,
            limits=limits,
            vocabulary=tokenizers.Tokenizer.from_file(str(tokenizer_file)).get_vocab_size(),
        )
    )
    host, port = sock.getsockname()[:2]
    url = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
    text = banner.render(
        url=url,
        store=store,
        root=root,
        limits={name: model_limits.current() for name, model_limits in limits.items()},
        numpy={model.name: numpy_version(model) for model in loaded},
        serving={model.name: model.serving for model in loaded},
        environments=environments,
        walkthrough=walkthrough,
        cli=str(Path(sys.executable).parent / "autoglm-runtime"),
    )
    # Lifespan on: shutdown stops the guards' threads.
    server = _Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"), text, stop)
    logging.getLogger("uvicorn.error").addFilter(server.quiet_cancellations)
    server.run(sockets=[sock])
    # (uvicorn raises the signals again after its shutdown, inside asyncio.run: _Stop lets them pass there.)
    # The first signal says how it ended: a Ctrl-C pressed while a SIGTERM's shutdown waits only hurries it.
    stopped_by = next((sig for sig in server.received if sig in (signal.SIGINT, signal.SIGTERM)), None)
    if stopped_by == signal.SIGINT:
        raise KeyboardInterrupt
    if stopped_by == signal.SIGTERM:
        raise _Terminated


class _Terminated(BaseException):
    """SIGTERM arrived: unwind like Ctrl-C, so every worker, client and local ZooKeeper is stopped. A
    ``BaseException``, as ``KeyboardInterrupt`` is: raised wherever the start is, it must pass the ``except
    Exception`` of the code it lands in (which would turn it into that code's own error, and its exit code)."""


def _say_stopped(started: Started) -> Callable[[type[BaseException] | None, BaseException | None, object], bool]:
    """An exit callback saying, after Ctrl-C or SIGTERM, what was stopped: on standard output under the banner,
    and in the log."""

    def say(kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        interrupted = kind is not None and issubclass(kind, (KeyboardInterrupt, _Terminated))
        line = started.stopped_line() if interrupted else None
        if line is not None:
            log.info("%s", line)
            with contextlib.suppress(OSError):  # a reader of standard output gone first: the log has it
                print(line, file=sys.stdout, flush=True)
        return False  # the exception goes on: main() turns it into the exit code

    return say


class _Stop:
    """The handler of Ctrl-C (SIGINT) and SIGTERM outside uvicorn's own (which serves while it runs, see
    :class:`_Server`): the first unwinds (``KeyboardInterrupt``, :class:`_Terminated`) so that everything is
    stopped; once stopping, another is said once and lets that clean-up run to its end -- raised, it would cut the
    clean-up short wherever it landed (leaving workers behind) and print that place's traceback."""

    def __init__(self) -> None:
        #: True once the server stops (a signal came, or serving ended): signals no longer raise.
        self.stopping = False
        #: Signals uvicorn handled and will raise again once it has shut down: not the user's doing.
        self.replays = 0
        self._told = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping:
            self.stopping = True
            raise KeyboardInterrupt if signum == signal.SIGINT else _Terminated
        if self.replays:
            self.replays -= 1
        elif not self._told:
            self._told = True
            log.info("interrupted again: already stopping the models' workers and the config store")


def _drop_color_message(record: logging.LogRecord) -> bool:
    record.__dict__.pop("color_message", None)
    return True


def main(argv: list[str] | None = None) -> int:
    """Run the server until Ctrl-C or SIGTERM; returns the exit code: 130 and 143 after those (everything
    stopped), 2 for usage errors, the error's own code for others (each printed with its code)."""
    configure_json_logging(logging.INFO)
    # uvicorn adds its message again with terminal colour codes: noise in a JSON log.
    logging.getLogger("uvicorn.error").addFilter(_drop_color_message)
    # uvicorn handles both signals while it serves, then raises them again; the default SIGTERM action would
    # end the process without the clean-up below.
    stop = _Stop()
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        args = options.parse(argv)
        sock = options.bind(args.host, args.port)  # before any set-up: a taken port fails at once
        with sock:
            _serve(args, sock, stop)
    except AutoGLMRuntimeError as exc:
        print(f"bash scripts/serve: error {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except _Terminated:
        return 143
    return 0


if __name__ == "__main__":
    code = main()
    # Everything is stopped: a Ctrl-C now (the interpreter restores the default action as it finalizes) would only
    # turn exit status 130 into death by SIGINT.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(code)
