"""The example server's command line (``bash scripts/serve --help``), and the checks made before any set-up."""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import os
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path

from autoglm_runtime.config.settings import check_hosts
from autoglm_runtime.deps import ModelManifest
from autoglm_runtime.errors import UsageError

DEFAULT_STATE_DIR = Path(".autoglm/example")
DEFAULT_ROOT = "/autoglm/example"
STORES = ("auto", "zookeeper", "file")

DESCRIPTION = """\
Run the example model server: an OpenAI-compatible API (chat and completions, streamed or not, and the
models list) in front of two small n-gram models, one on numpy 1.26 and one on numpy 2, each in its own
isolated environment, with config that follows ZooKeeper and input guards, in one ASGI app under uvicorn.

Config comes from ZooKeeper at --zk / $AUTOGLM_ZK_HOSTS. Without one, --config-store decides: 'auto' starts
a local ZooKeeper (through autoglm_runtime.testing, data in STATE_DIR/zookeeper) when one is installed and
follows a file:// directory (STATE_DIR/config) when none is; 'zookeeper' and 'file' choose one of the two.
Each model's limits (limits/<model>/context_window, .../truncate_on_overflow, .../max_output_tokens, and
.../tokens_per_second, the pace of its streams) live there, so they persist across restarts; --reset writes
the defaults again. How each model is served (replicas, concurrency, max_inflight, max_queue) is the [serving]
table of its model.toml (examples/model_server/models/<model>/). Everything else is set up in
STATE_DIR on first start and reused afterwards: a wheelhouse (the numpy wheels the models pin are fetched
from the package index at first start only; later starts work offline), a small tokenizer, one environment
per model (environments of STATE_DIR/envs that the server does not use are removed at start). Once the port
serves, a walk-through of curl commands is printed on stdout (stderr carries the JSON log lines alone).

Exit codes: 130 after Ctrl-C and 143 after SIGTERM (everything stopped then), 2 for usage errors (E0001: a
port in use, a state directory used by another server, contradictory flags, a Python the models' wheels do
not exist for), else the code of the error that stopped the start."""


def _port(text: str) -> int:
    """A TCP port number (argparse calls it for --port and for the $PORT default)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0 to 65535; 0 picks a free one)")
    return port


def build_parser() -> argparse.ArgumentParser:
    """The parser behind ``bash scripts/serve --help``."""
    parser = argparse.ArgumentParser(
        prog="bash scripts/serve",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument(
        "--port",
        type=_port,
        default=os.environ.get("PORT", "8000"),
        help="port to listen on; 0 picks a free one (default: $PORT or 8000, now %(default)s)",
    )
    zk = os.environ.get("AUTOGLM_ZK_HOSTS") or None
    parser.add_argument(
        "--zk",
        metavar="HOSTS",
        default=zk,
        help="ZooKeeper connect string to follow instead of a local store; one not reached within 15 s fails a "
        "first start (E0409), while later starts serve the last-known-good config from STATE_DIR/config.snapshot "
        "until it answers (default: $AUTOGLM_ZK_HOSTS, " + ("now %(default)s)" if zk else "unset now)"),
    )
    parser.add_argument(
        "--config-store",
        choices=STORES,
        default="auto",
        help="without --zk: a local ZooKeeper, a file:// directory, or the first when ZooKeeper is installed "
        "(default: %(default)s)",
    )
    parser.add_argument("--root", default=DEFAULT_ROOT, help="config subtree the server follows (default: %(default)s)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="built assets, environments, local config store and ZooKeeper data; relative to the repository root "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--reset", action="store_true", help="write the default limits again before starting (default: keep them)"
    )
    parser.add_argument(
        "--backend",
        default="process",
        choices=["auto", "process", "subinterp"],
        help="how models are isolated: worker processes, or auto (a subinterpreter where the model allows it, else a "
        "process); these models import numpy, which refuses subinterpreters (default: %(default)s)",
    )
    return parser


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The parsed command line; paths are absolute (resolved once, here)."""
    args = build_parser().parse_args(argv)
    args.state_dir = args.state_dir.resolve()
    if args.zk and args.config_store != "auto":
        raise UsageError(
            f"--zk {args.zk} and --config-store {args.config_store} contradict each other: --zk names the "
            "ZooKeeper to follow, --config-store chooses a local store when there is none; pass one of them"
        )
    if args.backend == "subinterp":
        raise UsageError(
            "--backend subinterp cannot load these models: they import numpy, whose extension modules refuse "
            "isolated subinterpreters (single-phase initialisation; docs/isolation.md, Backends): use --backend "
            "process (the default), or auto, which tries a subinterpreter and falls back to a process (WARNING E0104)"
        )
    if args.zk:
        check_hosts(args.zk)  # a typo in --zk is a usage error now, not a traceback after the downloads
    return args


def check_python(manifests: Sequence[ModelManifest], version: str) -> None:
    """Refuse, before any set-up, a Python some model's ``python`` range leaves out: the wheels it pins exist for
    no other, so the first start's ``pip download`` would fail late, in pip's words."""
    refused = [m for m in manifests if m.python is not None and not m.python.contains(version, prereleases=True)]
    if not refused:
        return
    needs = "; ".join(f"model {m.name} needs Python {m.python}" for m in refused)
    fitting = [
        f"3.{minor}"
        for minor in range(20, 9, -1)
        if all(m.python is None or m.python.contains(f"3.{minor}.0") for m in manifests)
    ]
    fix = (
        f"make .venv with Python {fitting[0]}, for example rm -rf .venv && PYTHON=python{fitting[0]} bash scripts/serve"
        if fitting
        else "no Python fits every model: change their model.toml"
    )
    raise UsageError(
        f"{needs} (the python of its model.toml: the wheels it pins exist for no other), and this server runs on "
        f"Python {version}: {fix}"
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port``, made before any set-up so a taken port fails at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a restart need not wait
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(
                f"port {port} on {host} is in use by another program: stop it, or pass --port with a free port "
                "(--port 0 picks one)"
            ) from exc
        raise UsageError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}): pass another --host or --port"
        ) from exc
    return sock


@contextlib.contextmanager
def state_lock(state: Path) -> Iterator[None]:
    """Hold ``state`` for this server: a second server on one state directory (and its ZooKeeper data) fails."""
    state.mkdir(parents=True, exist_ok=True)
    path = state / "server.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = path.read_text(encoding="utf-8").strip() or "unknown"
            raise UsageError(
                f"the state directory {state} is in use by another example server (pid {owner}): stop it, or pass "
                "another --state-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)
