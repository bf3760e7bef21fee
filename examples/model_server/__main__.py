"""Run the example model server: ``python -m examples.model_server`` (``bash scripts/serve`` does the set-up).

Config comes from ZooKeeper at ``--zk`` / ``$AUTOGLM_ZK_HOSTS``; without one, a local ZooKeeper is started
through the test harness when one is installed, and a ``file://`` config directory is used when none is.
Everything else is built offline on first start in ``--state-dir``: a wheelhouse of the two conflicting
``conflictlib`` releases, a small tokenizer, and one environment per model.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path

import uvicorn

from autoglm_runtime import ConfigClient
from autoglm_runtime.isolation import ModelLoader
from autoglm_runtime.logging import configure_json_logging
from autoglm_runtime.testing import ZooKeeperUnavailableError, start_zookeeper
from autoglm_runtime.validation import HFTokenizer
from examples.model_server.app import DEFAULT_LIMITS, LIMITS_PREFIX, create_app
from examples.model_server.assets import HERE, build_tokenizer, build_wheelhouse

log = logging.getLogger("examples.model_server")

SEED = {
    f"{LIMITS_PREFIX}context_window": str(DEFAULT_LIMITS.context_window).encode(),
    f"{LIMITS_PREFIX}truncate_on_overflow": b"false",
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m examples.model_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--zk", default=os.environ.get("AUTOGLM_ZK_HOSTS"), help="ZooKeeper connect string")
    parser.add_argument("--root", default="/autoglm/example", help="config subtree (default /autoglm/example)")
    parser.add_argument("--state-dir", type=Path, default=Path(".autoglm/example"), help="built assets and envs")
    parser.add_argument("--backend", default="process", choices=["auto", "process", "subinterp"])
    return parser.parse_args(argv)


def _config_source(args: argparse.Namespace, stack: contextlib.ExitStack) -> tuple[str, str]:
    """The hosts string to follow and a description of where it came from."""
    if args.zk:
        return args.zk, "ZooKeeper given by --zk / AUTOGLM_ZK_HOSTS"
    try:
        server = stack.enter_context(start_zookeeper("local", data_dir=args.state_dir / "zookeeper"))
    except ZooKeeperUnavailableError as exc:
        directory = (args.state_dir / "config").resolve()
        log.warning("no ZooKeeper installed (%s); following the config directory %s instead", exc, directory)
        return f"file://{directory}", "a file:// config directory (no ZooKeeper installed)"
    return server.hosts, "a local ZooKeeper started through autoglm_runtime.testing"


def _seed(hosts: str, root: str) -> None:
    """Write the default limits where they are missing, never overwriting an operator's value."""
    if hosts.startswith("file://"):
        base = Path(hosts[len("file://") :]) / root.strip("/")
        for key, value in SEED.items():
            path = base / key
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                path.write_bytes(value)
        return
    from kazoo.client import KazooClient
    from kazoo.exceptions import NodeExistsError

    zk = KazooClient(hosts=hosts)
    zk.start(timeout=15)
    try:
        for key, value in SEED.items():
            with contextlib.suppress(NodeExistsError):
                zk.create(f"{root}/{key}", value, makepath=True)
    finally:
        zk.stop()
        zk.close()


def _banner(url: str, hosts: str, source: str, root: str) -> str:
    cli = ".venv/bin/autoglm-runtime"
    long_prompt = "one two three four five six seven eight nine ten " * 4
    body = '{"model": "%s", "prompt": "%s", "max_tokens": 8}'
    return f"""
autoglm-runtime example model server listening on {url}
config: {source}: {hosts} root {root}
models: summarizer-v1 (conflictlib==1.0) and summarizer-v2 (conflictlib==2.0), each in its own environment

Try it (in another shell):

  # two models with conflicting requirements answer side by side
  curl -s {url}/v1/completions -H 'content-type: application/json' -d '{body % ("summarizer-v1", "hello there world")}'
  curl -s {url}/v1/completions -H 'content-type: application/json' -d '{body % ("summarizer-v2", "hello there world")}'

  # hot reload: a prompt that fits the context window ...
  curl -s {url}/v1/completions -H 'content-type: application/json' -d '{body % ("summarizer-v1", long_prompt)}'
  # ... lower the window in the config, and the next request is judged by it (400, E0513)
  {cli} config set {LIMITS_PREFIX}context_window 24 --hosts {hosts} --root {root}
  curl -s {url}/v1/completions -H 'content-type: application/json' -d '{body % ("summarizer-v1", long_prompt)}'
  # ... or let it truncate, and the response says so (x-autoglm-truncated-tokens)
  {cli} config set {LIMITS_PREFIX}truncate_on_overflow true --hosts {hosts} --root {root}
  curl -si {url}/v1/completions -H 'content-type: application/json' -d '{body % ("summarizer-v1", long_prompt)}'

  # an overlong Authorization header is refused before parsing (431, E0512)
  curl -s {url}/v1/completions -H "Authorization: Bearer $(printf 'x%.0s' $(seq 600))" -d '{{}}'

  # config connection, staleness, limits and each worker's state
  curl -s {url}/health
"""


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    configure_json_logging(logging.INFO)
    state: Path = args.state_dir
    state.mkdir(parents=True, exist_ok=True)
    wheelhouse = build_wheelhouse(state / "wheels")
    tokenizer_path = state / "tokenizer.json"
    if not tokenizer_path.exists():
        build_tokenizer(tokenizer_path)

    with contextlib.ExitStack() as stack:
        hosts, source = _config_source(args, stack)
        _seed(hosts, args.root)
        snapshot = None if hosts.startswith("file://") else state / "config.snapshot"
        config = ConfigClient(hosts, args.root, snapshot_path=snapshot)
        config.start(timeout=15)
        stack.callback(config.stop)
        loader = stack.enter_context(
            ModelLoader(state / "envs", wheelhouse=wheelhouse, offline=True, backend=args.backend)
        )
        for model_dir in sorted((HERE / "models").iterdir()):
            loader.load(model_dir)
        app = create_app(config=config, loader=loader, tokenizer=HFTokenizer.from_file(tokenizer_path))
        url = f"http://{args.host}:{args.port}"
        print(_banner(url, hosts, source, args.root), file=sys.stderr, flush=True)
        uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
