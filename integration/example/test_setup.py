"""The example server's set-up pieces: command line, port and state-dir checks, config stores, walk-through numbers."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from autoglm_runtime.config import ConfigClient, SyncTuning
from autoglm_runtime.deps import load_manifest
from autoglm_runtime.errors import ConfigUnavailableError, UsageError
from autoglm_runtime.testing import ZooKeeperUnavailableError, fail_in_ci_else_skip, wait_until
from autoglm_runtime.testing._local import find_local_installation
from autoglm_runtime.testing.proxy import FaultProxy
from autoglm_runtime.validation import ChatTemplate, ContextWindowGuard, HFTokenizer
from examples.model_server import banner, options
from examples.model_server.assets import MODELS, build_tokenizer
from examples.model_server.model_limits import DEFAULT_LIMITS
from examples.model_server.started import Started
from examples.model_server.store import ConfigStore, defaults, open_store, seed, start_config

REPO = Path(__file__).resolve().parents[2]


def test_a_relative_state_dir_is_resolved_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUTOGLM_ZK_HOSTS", raising=False)
    args = options.parse([])
    assert args.state_dir == tmp_path / ".autoglm" / "example"
    assert (args.zk, args.config_store, args.reset) == (None, "auto", False)


def test_zk_and_a_config_store_contradict() -> None:
    with pytest.raises(UsageError) as info:
        options.parse(["--zk", "127.0.0.1:2181", "--config-store", "file"])
    assert info.value.message == (
        "--zk 127.0.0.1:2181 and --config-store file contradict each other: --zk names the ZooKeeper to follow, "
        "--config-store chooses a local store when there is none; pass one of them"
    )


def test_the_subinterpreter_backend_is_refused_at_once_with_the_reason() -> None:
    # numpy's extension modules refuse isolated subinterpreters: the flag could only fail, after the set-up.
    with pytest.raises(UsageError) as info:
        options.parse(["--backend", "subinterp"])
    assert info.value.message.startswith(
        "--backend subinterp cannot load these models: they import numpy, whose extension modules refuse isolated "
        "subinterpreters"
    )
    assert options.parse(["--backend", "auto"]).backend == "auto"


def test_a_zk_connect_string_kazoo_cannot_parse_is_a_usage_error() -> None:
    with pytest.raises(UsageError) as info:
        options.parse(["--zk", "127.0.0.1:abc"])
    assert info.value.message == (
        "config hosts '127.0.0.1:abc' are not a ZooKeeper connect string (Port could not be cast to integer value "
        "as 'abc'): give 'host:port[,host:port...]' or 'file:///dir'"
    )


@pytest.mark.parametrize(
    ("argv", "port_env", "said"),
    [
        ([], "abc", "argument --port: 'abc' is not a port number"),
        (["--port", "70000"], None, "argument --port: 70000 is not a port number (0 to 65535; 0 picks a free one)"),
        (["--port", "-1"], None, "argument --port: -1 is not a port number"),
    ],
)
def test_a_port_that_is_no_port_is_a_usage_error(
    argv: list[str],
    port_env: str | None,
    said: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if port_env is None:
        monkeypatch.delenv("PORT", raising=False)
    else:
        monkeypatch.setenv("PORT", port_env)
    with pytest.raises(SystemExit) as info:
        options.parse(argv)
    assert info.value.code == 2
    assert said in capsys.readouterr().err


def test_help_names_every_flag_with_its_default() -> None:
    done = subprocess.run(
        ["bash", "scripts/serve", "--help"], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    for flag, default in [
        ("--host HOST", "(default: 127.0.0.1)"),
        ("--port PORT", "(default: $PORT or 8000"),
        ("--zk HOSTS", "(default: $AUTOGLM_ZK_HOSTS"),
        ("--config-store {auto,zookeeper,file}", "(default: auto)"),
        ("--root ROOT", "(default: /autoglm/example)"),
        ("--state-dir STATE_DIR", "(default: .autoglm/example)"),
        ("--reset", "(default: keep them)"),
        ("--backend {auto,process,subinterp}", "(default: process)"),
    ]:
        start = text.index(f"{flag} ", text.index("options:"))
        assert default in text[start : start + 300], f"{flag} does not say {default}"


def test_a_taken_port_and_a_used_state_dir_are_usage_errors(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UsageError) as info:
            options.bind("127.0.0.1", port)
    assert info.value.exit_code == 2
    assert info.value.message == (
        f"port {port} on 127.0.0.1 is in use by another program: stop it, or pass --port with a free port "
        "(--port 0 picks one)"
    )
    with options.state_lock(tmp_path), pytest.raises(UsageError) as info, options.state_lock(tmp_path):
        pass
    assert info.value.message.startswith(f"the state directory {tmp_path} is in use by another example server (pid ")
    with options.state_lock(tmp_path):  # released by the first holder
        pass


def test_auto_falls_back_to_a_file_store_when_the_harness_finds_no_zookeeper(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    empty = tmp_path / "no-zookeeper-here"
    empty.mkdir()
    env = {"ZOOKEEPER_HOME": str(empty), "PATH": os.environ["PATH"]}
    with contextlib.ExitStack() as stack, caplog.at_level("INFO"):
        store = open_store(zk=None, choice="auto", state=tmp_path, stack=stack, env=env)
    assert (store.hosts, store.description, store.data, store.zookeeper) == (
        f"file://{tmp_path / 'config'}",
        "a file:// config directory (no ZooKeeper installed)",
        str(tmp_path / "config"),
        None,
    )
    # What works for this server, which only starts an installed ZooKeeper; before, the test harness's advice
    # ended with "or start a Docker engine so the 'zookeeper' image can be used".
    why = f"ZOOKEEPER_HOME is set to {str(empty)!r}, but no zookeeper-*.jar was found in it or in its lib folder"
    hint = (
        "to follow ZooKeeper, install it (Debian/Ubuntu: apt-get install zookeeper; elsewhere an Apache ZooKeeper "
        "tarball with ZOOKEEPER_HOME set to it) and start again, or give a running one with --zk HOSTS (or "
        "AUTOGLM_ZK_HOSTS)"
    )
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "examples.model_server"] == [
        (
            "WARNING",
            f"no local ZooKeeper could start ({why}), so the config is a file:// directory, "
            f"{tmp_path / 'config'}: {hint}; --config-store file chooses the directory without this warning",
        )
    ]
    with contextlib.ExitStack() as stack, pytest.raises(UsageError) as info:
        open_store(zk=None, choice="zookeeper", state=tmp_path, stack=stack, env=env)
    assert info.value.message == (
        f"--config-store zookeeper needs a local ZooKeeper, and none could start ({why}): {hint}; or use "
        "--config-store file"
    )


def test_the_local_zookeeper_is_the_examples_own_and_the_stop_says_it_stopped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    try:
        find_local_installation()
    except ZooKeeperUnavailableError as exc:
        fail_in_ci_else_skip(f"scripts/serve starts a local ZooKeeper only where one is installed. {exc.message}")
    started = Started()
    with contextlib.ExitStack() as stack, caplog.at_level("INFO"):
        store = started.store = open_store(zk=None, choice="auto", state=tmp_path, stack=stack)
        assert store.zookeeper is not None
        assert store.description == "a local ZooKeeper for this example (it runs while the server does)"
        assert started.stopped_line() == f"still running after the stop: the local ZooKeeper at {store.hosts}"
    # Not the harness's "ZooKeeper test server uses the local backend": this ZooKeeper is no test's.
    assert [r.getMessage() for r in caplog.records if r.name.startswith(("autoglm_runtime.testing", "examples"))] == [
        f"a local ZooKeeper for this example serves at {store.hosts} (data in {tmp_path / 'zookeeper'})"
    ]
    assert logging.getLogger("autoglm_runtime.testing").level == logging.NOTSET  # quiet only while it starts
    assert started.stopped_line() == (
        f"stopped: the local ZooKeeper at {store.hosts} (its data stays in {tmp_path / 'zookeeper'})"
    )
    assert Started().stopped_line() is None  # stopped before anything started: nothing to say


def test_seeding_keeps_an_operator_value_unless_reset(tmp_path: Path) -> None:
    hosts = f"file://{tmp_path}"
    limits = tmp_path / "autoglm" / "example" / "limits"
    window, other = limits / "a" / "context_window", limits / "b" / "context_window"
    seed(hosts, "/autoglm/example", ["a", "b"], reset=False)
    assert window.read_text() == other.read_text() == str(DEFAULT_LIMITS.context_window)
    assert (limits / "a" / "truncate_on_overflow").read_text() == "false"
    # Every limit in force is written, so none is "missing" at each start (an INFO line for truncation_side was)
    assert (limits / "a" / "truncation_side").read_text() == '"left"'
    assert (limits / "b" / "max_output_tokens").read_text() == "32"
    window.write_text("26")
    seed(hosts, "/autoglm/example", ["a", "b"], reset=False)
    assert window.read_text() == "26"
    seed(hosts, "/autoglm/example", ["a", "b"], reset=True)
    assert window.read_text() == str(DEFAULT_LIMITS.context_window)


def test_the_walkthrough_numbers_hold_for_the_demo_tokenizer(tmp_path: Path) -> None:
    tokenizer = HFTokenizer.from_file(build_tokenizer(tmp_path / "tokenizer.json"))
    template = ChatTemplate.from_file(MODELS / banner.RELOADED / "tokenizer_config.json")
    numbers = banner.Walkthrough.for_tokenizer(tokenizer, template)
    total = numbers.prompt_tokens + banner.MAX_TOKENS
    assert total <= DEFAULT_LIMITS.context_window  # "fits" -> 200
    assert banner.MAX_TOKENS < numbers.lowered_window < total  # "lower the window" -> 400, truncation can fit
    guard = ContextWindowGuard(tokenizer, numbers.lowered_window, truncate_on_overflow=True)
    assert guard.check(banner.PROMPT, max_output_tokens=banner.MAX_TOKENS).removed_tokens == numbers.truncated_tokens
    assert numbers.truncated_tokens > 0
    # The chat step fits the default window, counted with the model's own template (its markers are one token each).
    rendered = template.render(banner.chat_body()["messages"])
    assert rendered.startswith("<|im_start|>user\n")
    assert numbers.chat_tokens == len(tokenizer.without_special_tokens().encode(rendered))
    assert numbers.chat_tokens + banner.MAX_TOKENS <= DEFAULT_LIMITS.context_window
    assert tokenizer.encode("<|im_start|>") == [tokenizer.encode("<|im_start|>")[0]]


def test_the_readme_flag_table_names_every_flag() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme.split("| `scripts/serve` flag |", 1)[1].split("\n\n", 1)[0]
    documented = {row.split("`")[1].split()[0] for row in table.splitlines()[2:]}
    actions = options.build_parser()._actions
    parser_flags = {flag for action in actions for flag in action.option_strings if flag.startswith("--")} - {"--help"}
    assert documented == parser_flags


def test_an_overloaded_model_answers_503_with_retry_after() -> None:
    from autoglm_runtime.errors import ModelOverloadedError
    from examples.model_server.openai_api import error_response

    response = error_response(ModelOverloadedError("model m is busy: retry later", retry_after=2))
    assert (response.status_code, response.headers["retry-after"], response.headers["x-autoglm-error-code"]) == (
        503,
        "2",
        "E0106",
    )
    assert json.loads(response.body)["error"]["message"] == "E0106: model m is busy: retry later"


@pytest.mark.parametrize(("body", "asked"), [({"logprobs": 0}, True), ({"logprobs": False}, False)])
def test_a_completions_logprobs_of_0_asks_for_the_chosen_tokens_log_probabilities(
    body: dict[str, object], asked: bool
) -> None:
    # OpenAI's completions give the chosen token's log probability for logprobs=0 (and up to n more for n): it was
    # taken for "nothing asked" and answered with "logprobs": null.
    from autoglm_runtime.errors import InvalidRequestError
    from examples.model_server.openai_api import Sampling

    if not asked:
        assert Sampling.from_body({"prompt": "hi", **body}).max_tokens > 0
        return
    with pytest.raises(InvalidRequestError) as info:
        Sampling.from_body({"prompt": "hi", **body})
    assert info.value.message == (
        "logprobs asks for log probabilities, which these models do not give, got 0: fix the request body"
    )


@pytest.mark.parametrize(("tools", "choice"), [("tools", "tool_choice"), ("functions", "function_call")])
def test_tools_whose_calls_the_request_forbids_ask_for_nothing(tools: str, choice: str) -> None:
    # tool_choice "none": the model "will not call any tool and instead generates a message", which these models
    # give (an agent framework sends it to force a final answer); refused before. "auto" still asks for tool calls.
    from autoglm_runtime.errors import InvalidRequestError
    from examples.model_server.openai_api import Sampling

    listed = [{"type": "function", "function": {"name": "f"}}] if tools == "tools" else [{"name": "f"}]
    messages = [{"role": "user", "content": "hi"}]
    assert Sampling.from_body({"messages": messages, tools: listed, choice: "none"}).max_tokens > 0
    with pytest.raises(InvalidRequestError) as info:
        Sampling.from_body({"messages": messages, tools: listed, choice: "auto"})
    assert info.value.param == tools


def test_seeding_an_unreachable_zookeeper_is_e0409_and_says_each_kazoo_warning_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as sock:  # a port nothing listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        hosts = f"127.0.0.1:{sock.getsockname()[1]}"
        with caplog.at_level("INFO"), pytest.raises(ConfigUnavailableError) as info:
            seed(hosts, "/autoglm/example", ["words-numpy1"], reset=False, timeout=2)
    # (before: "could not take the default limits ... (KazooTimeoutError)", which said neither how long it waited)
    assert info.value.message == (
        f"ZooKeeper at {hosts} could not be reached within 2 s to write the default limits under /autoglm/example: "
        "check --zk and that ZooKeeper runs there"
    )
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    # kazoo logs a warning per failed attempt (several in 2 s); through OutageLog each template passes once, coded.
    assert warnings, "kazoo said nothing about the failed connection"
    assert all(getattr(r, "error_code", None) == "E0409" for r in warnings)
    assert len({r.msg for r in warnings}) == len(warnings)
    assert all(r.name == "autoglm_runtime.config.kazoo" for r in caplog.records if "kazoo" in r.name)


def _cut_after_the_first_write(proxy: FaultProxy, *, back: bool) -> threading.Event:
    """Cut the seed's connection (behind ``proxy``) at its first write ZooKeeper does (the first parent it
    makes): the write is applied, its answer never reaches the seed. ``back``: it may connect again at once;
    else every new connection is refused from the cut on.

    At that point of the seed's own traffic, not timed from a watch: a watch that fired late, under load, cut
    after the seed's writes were all answered, so it saw no loss and did not say it resumed."""
    return proxy.cut_before_answer("create", refuse=not back)


def test_seeding_resumes_after_a_connection_loss_in_the_middle(
    zk_proxy: FaultProxy, zk_client: KazooClient, zk_root: str, caplog: pytest.LogCaptureFixture
) -> None:
    wanted = defaults(["a", "b"])
    cut = _cut_after_the_first_write(zk_proxy, back=True)
    with caplog.at_level("INFO", logger="examples.model_server"):
        seed(zk_proxy.hosts, zk_root, ["a", "b"], reset=False, timeout=20)
    assert cut.is_set()
    assert {key: zk_client.get(f"{zk_root}/{key}")[0] for key in wanted} == wanted
    resumed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("the connection to ZooKeeper")]
    assert resumed == [
        f"the connection to ZooKeeper at {zk_proxy.hosts} was lost while the default limits were written; resumed "
        f"and wrote all {len(wanted)}"
    ]


def test_seeding_whose_connection_does_not_come_back_is_e0409_with_what_was_written(
    zk_proxy: FaultProxy, zk_client: KazooClient, zk_root: str
) -> None:
    wanted = defaults(["a"])
    cut = _cut_after_the_first_write(zk_proxy, back=False)
    with pytest.raises(ConfigUnavailableError) as info:
        seed(zk_proxy.hosts, zk_root, ["a"], reset=False, timeout=5)
    assert cut.is_set()
    assert zk_client.exists(f"{zk_root}/limits") is not None  # done by ZooKeeper, never confirmed to the seed
    assert (info.value.code, info.value.message) == (
        "E0409",
        f"ZooKeeper at {zk_proxy.hosts} lost the connection while the default limits under {zk_root} were written "
        f"and did not answer again within 5 s (0 of {len(wanted)} confirmed written): check --zk and that ZooKeeper "
        "runs there",
    )


def test_a_restart_whose_seed_loses_zookeeper_for_good_serves_the_snapshot(
    zk_proxy: FaultProxy, zk_client: KazooClient, zk_root: str, tmp_path: Path
) -> None:
    zk_client.create(f"{zk_root}/note", b'"kept"')
    snapshot = tmp_path / "config.snapshot"
    with ConfigClient(zk_proxy.hosts, zk_root, snapshot_path=snapshot, tuning=SyncTuning(snapshot_debounce=0.05)):
        wait_until(snapshot.exists, what="the snapshot of the last run")
    # The restart's seed writes the defaults of a new model; its connection goes after the first write for good.
    cut = _cut_after_the_first_write(zk_proxy, back=False)
    config = start_config(
        ConfigStore(zk_proxy.hosts, "behind a proxy", "-"), zk_root, ["a"], state=tmp_path, reset=False
    )
    try:
        assert cut.is_set()
        health = config.health()
        assert (health["source"], health["following"], config.get("note")) == ("snapshot", False, "kept")
    finally:
        config.stop()


def test_a_python_the_models_pins_have_no_wheels_for_is_refused_before_any_set_up() -> None:
    # On Python 3.13, pip download found no numpy 1.26 wheel and the start failed with E0101 after starting
    # ZooKeeper, advising to "start once with access to the package index", which it had.
    manifests = [load_manifest(directory) for directory in sorted(MODELS.iterdir())]
    options.check_python(manifests, "3.12.1")
    options.check_python(manifests, "3.10.13")
    with pytest.raises(UsageError) as info:
        options.check_python(manifests, "3.13.0")
    assert info.value.message == (
        "model words-numpy1 needs Python <3.13,>=3.10 (the python of its model.toml: the wheels it pins exist for "
        "no other), and this server runs on Python 3.13.0: make .venv with Python 3.12, for example rm -rf .venv && "
        "PYTHON=python3.12 bash scripts/serve"
    )
