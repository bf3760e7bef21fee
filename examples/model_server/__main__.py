"""Run the example model server: ``python -m examples.model_server`` (``bash scripts/serve`` does the set-up).

The order matters to a newcomer: the command line and the port are checked before anything is built (a
taken port is E0001, exit 2, at once); then the state directory is locked, assets are built or reused (the
numpy wheels are fetched at first start only), the config store is opened and seeded, the models are
loaded, environments nobody uses are removed, and the banner is printed only once uvicorn serves on the
port. See ``options.py`` for the flags.
"""

from __future__ import annotations

import argparse
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
from autoglm_runtime.logging import configure_json_logging
from autoglm_runtime.validation import ChatTemplate, HFTokenizer
from examples.model_server import banner, options
from examples.model_server.app import create_app, numpy_version
from examples.model_server.assets import MODELS, build_tokenizer, fill_wheelhouse, tokenizer_path
from examples.model_server.model_limits import ModelLimits
from examples.model_server.request_ids import RequestIds
from examples.model_server.started import Started
from examples.model_server.store import open_store, start_config

log = logging.getLogger("examples.model_server")


class _Server(uvicorn.Server):
    """uvicorn's server, printing the banner once it accepts connections on the socket."""

    def __init__(self, config: uvicorn.Config, text: str) -> None:
        super().__init__(config)
        self._text = text
        #: The signals that stopped the server, in order.
        self.received: list[int] = []

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.received.append(sig)
        super().handle_exit(sig, frame)

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


def _serve(args: argparse.Namespace, sock: socket.socket) -> None:
    state: Path = args.state_dir
    started = Started()
    with contextlib.ExitStack() as stack:
        stack.push(_say_stopped(started))  # first in, so last out: once the workers and ZooKeeper are stopped
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
        app = RequestIds(
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
        server = _Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"), text)
        server.run(sockets=[sock])
        # uvicorn raises the signal again after its shutdown, but inside asyncio.run, whose own SIGINT handler may
        # only cancel a task that has already finished: then run() returns normally. Say how it ended anyway.
        if signal.SIGINT in server.received:
            raise KeyboardInterrupt
        if signal.SIGTERM in server.received:
            raise _Terminated


class _Terminated(Exception):
    """SIGTERM arrived: unwind like Ctrl-C, so every worker, client and local ZooKeeper is stopped."""


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


def _drop_color_message(record: logging.LogRecord) -> bool:
    record.__dict__.pop("color_message", None)
    return True


def _terminate(signum: int, frame: object) -> None:
    raise _Terminated


def main(argv: list[str] | None = None) -> int:
    """Run the server until Ctrl-C or SIGTERM; returns the exit code: 130 and 143 after those (everything
    stopped), 2 for usage errors, the error's own code for others (each printed with its code)."""
    configure_json_logging(logging.INFO)
    # uvicorn adds its message again with terminal colour codes: noise in a JSON log.
    logging.getLogger("uvicorn.error").addFilter(_drop_color_message)
    # uvicorn handles both signals while it serves, then raises them again; the default SIGTERM action would
    # end the process without the clean-up below.
    signal.signal(signal.SIGTERM, _terminate)
    try:
        args = options.parse(argv)
        sock = options.bind(args.host, args.port)  # before any set-up: a taken port fails at once
        with sock:
            _serve(args, sock)
    except AutoGLMRuntimeError as exc:
        print(f"bash scripts/serve: error {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except _Terminated:
        return 143
    return 0


if __name__ == "__main__":
    sys.exit(main())
