"""``autoglm-runtime config`` against a real ZooKeeper and a file:// directory, as operators run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from integration._helpers import kazoo_session
from kazoo.client import KazooClient
from kazoo.security import make_digest_acl

from autoglm_runtime.cli import main


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_set_get_dump_delete_round_trip(
    zk_hosts: str, zk_root: str, zk_client: KazooClient, capsys: pytest.CaptureFixture[str]
) -> None:
    target = ("--hosts", zk_hosts, "--root", zk_root)
    said = f"set models/llm/context_window under {zk_root} at {zk_hosts}"
    assert _run(capsys, "config", "set", "models/llm/context_window", "8192", *target) == (0, f"{said} (new key)\n", "")
    # A new key is created with its value in one write: version 0, not a create followed by a set.
    assert zk_client.get(f"{zk_root}/models/llm/context_window")[1].version == 0
    assert _run(capsys, "config", "set", "models/llm/context_window", "8192", *target) == (0, f"{said}\n", "")
    assert zk_client.get(f"{zk_root}/models/llm/context_window")[1].version == 1
    assert _run(capsys, "config", "set", "flags", '{"truncate": false}', *target)[0] == 0
    assert _run(capsys, "config", "get", "models/llm/context_window", *target) == (0, "8192\n", "")
    code, out, _ = _run(capsys, "config", "get", "flags", "--json", *target)
    record = json.loads(out)
    assert (code, record["key"], record["value"]) == (0, "flags", {"truncate": False})
    assert isinstance(record["version"], int)
    code, out, _ = _run(capsys, "config", "dump", *target)
    assert (code, out) == (0, 'flags = {"truncate": false}\nmodels = null\nmodels/llm = null\n'
                                 "models/llm/context_window = 8192\n")  # fmt: skip
    assert _run(capsys, "config", "delete", "models", *target) == (
        2,
        "",
        "autoglm-runtime: error E0001: key 'models' has children: pass --recursive to delete them too\n",
    )
    assert _run(capsys, "config", "delete", "models", "--recursive", *target)[0] == 0
    assert _run(capsys, "config", "get", "models/llm/context_window", *target) == (
        1,
        "",
        f"autoglm-runtime: error E0409: key 'models/llm/context_window' does not exist under {zk_root}\n",
    )


def test_a_value_the_codec_rejects_is_never_written(
    zk_hosts: str, zk_root: str, zk_client: KazooClient, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, "config", "set", "a", "{not json", "--hosts", zk_hosts, "--root", zk_root)
    assert (code, out) == (2, "")
    assert err.startswith("autoglm-runtime: error E0001: value '{not json' cannot be decoded by the codec")
    assert zk_client.exists(f"{zk_root}/a") is None


def test_watch_prints_each_change_as_json(zk_hosts: str, zk_root: str, zk_client: KazooClient) -> None:
    zk_client.create(f"{zk_root}/limit", b"1")
    watcher = subprocess.Popen(
        [sys.executable, "-m", "autoglm_runtime", "config", "watch", "--json", "--count", "2", "--for", "60",
         "--hosts", zk_hosts, "--root", zk_root],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert watcher.stderr is not None
        assert watcher.stderr.readline().startswith(f"watching {zk_root}/ on {zk_hosts}")
        assert watcher.stdout is not None
        zk_client.set(f"{zk_root}/limit", b"2")
        # One change at a time: a watch-driven cache may fold a set+delete that land together into one event.
        first = watcher.stdout.readline()
        zk_client.delete(f"{zk_root}/limit")
        rest, _ = watcher.communicate(timeout=60)
    finally:
        watcher.kill()
        watcher.wait()
    events = [json.loads(line) for line in (first + rest).splitlines()]
    assert [(e["kind"], e["key"], e["old"], e["new"]) for e in events] == [
        ("updated", "limit", 1, 2),
        ("deleted", "limit", 2, None),
    ]
    assert watcher.returncode == 0


def test_unreachable_zookeeper_and_missing_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "config", "dump", "--hosts", "127.0.0.1:1", "--root", "/x", "--timeout", "0.5")
    assert code == 1
    assert err == (
        "autoglm-runtime: error E0409: ZooKeeper at 127.0.0.1:1 could not be reached (or root /x loaded) within "
        "0.5 s: check --hosts and that ZooKeeper runs there, or give a longer --timeout\n"
    )
    code, _, err = _run(capsys, "config", "get", "k", "--hosts", "127.0.0.1:1")
    assert (code, err) == (2, "autoglm-runtime: error E0001: no config root given: pass --root /path or set "
                              "AUTOGLM_ZK_ROOT\n")  # fmt: skip
    code, _, err = _run(capsys, "config", "get", "/abs", "--hosts", "h", "--root", "/r")
    assert (code, err) == (2, "autoglm-runtime: error E0001: key '/abs' must be a path relative to the root, "
                              "such as 'models/llm/context_window'\n")  # fmt: skip


def test_a_root_that_does_not_exist_is_said_not_served_as_an_empty_tree(
    zk_hosts: str, zk_root: str, zk_client: KazooClient, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: dump of a mistyped root printed nothing and exited 0, and get said the key did not exist.
    zk_client.create(f"{zk_root}/a", b"1", makepath=True)
    typo = f"{zk_root}x"
    problem = f"config root {typo} does not exist on ZooKeeper at {zk_hosts}"
    for command in (["dump"], ["get", "a"]):
        assert _run(capsys, "config", *command, "--hosts", zk_hosts, "--root", typo) == (
            1,
            "",
            f"autoglm-runtime: error E0409: {problem}: check --root (a server following it serves no keys), or "
            "create it by setting a key under it with config set\n",
        )
    # watch follows it all the same (its keys are printed once it is created), after saying so
    assert _run(capsys, "config", "watch", "--hosts", zk_hosts, "--root", typo, "--for", "0.5") == (
        0,
        "",
        f"autoglm-runtime: warning E0409: {problem}: check --root; its keys are printed once it is created\n"
        f"watching {typo}/ on {zk_hosts}\n",
    )
    assert _run(capsys, "config", "dump", "--hosts", zk_hosts, "--root", zk_root) == (0, "a = 1\n", "")


def test_writes_without_credentials_are_refused_with_the_path(
    zk_hosts: str, zk_root: str, zk_client: KazooClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    acl = make_digest_acl("ops", "s3cret", all=True)
    zk_client.create(f"{zk_root}/locked", b"1", acl=[acl])
    target = ("--hosts", zk_hosts, "--root", zk_root)
    code, _, err = _run(capsys, "config", "set", "locked", "2", *target)
    assert (code, err) == (
        2,
        f"autoglm-runtime: error E0409: ZooKeeper at {zk_hosts} denied writing under {zk_root}: give --auth-file "
        "(or --auth) with credentials that have write access\n",
    )
    secret = tmp_path / "zk-auth"
    secret.write_text("ops:s3cret\n")
    assert _run(capsys, "config", "set", "locked", "3", "--auth-file", str(secret), *target)[0] == 0
    zk_client.add_auth("digest", "ops:s3cret")
    assert zk_client.get(f"{zk_root}/locked")[0] == b"3"
    assert _run(capsys, "config", "delete", "locked", "--auth", "ops:s3cret", *target)[0] == 0
    code, _, err = _run(capsys, "config", "set", "x", "1", "--auth-file", str(tmp_path / "absent"), *target)
    assert (code, err) == (
        2,
        f"autoglm-runtime: error E0001: cannot read --auth-file {tmp_path / 'absent'}: No such file or directory\n",
    )


def test_file_directory_backend(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = ("--hosts", f"file://{tmp_path}", "--root", "/dev")
    (tmp_path / "dev").mkdir()
    assert _run(capsys, "config", "set", "models/window", "512", *target)[0] == 0
    assert (tmp_path / "dev" / "models" / "window").read_bytes() == b"512"
    assert _run(capsys, "config", "get", "models/window", *target) == (0, "512\n", "")
    assert _run(capsys, "config", "dump", "--json", *target)[1] == '{\n  "models/window": 512\n}\n'
    assert _run(capsys, "config", "delete", "models", "--recursive", *target)[0] == 0
    assert list((tmp_path / "dev").iterdir()) == []


def _cli(*argv: str) -> tuple[int, str, str]:
    command = [sys.executable, "-m", "autoglm_runtime", *argv]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout, done.stderr


def test_dump_prints_what_it_may_read_and_names_each_key_it_may_not(
    zk_hosts: str, zk_root: str, tmp_path: Path
) -> None:
    # Before: exit 2 and nothing on stdout, with the SDK's hint "check the credentials (auth=)".
    only_reader = [make_digest_acl("reader", "s3cret", all=True)]
    with kazoo_session(zk_hosts, auth_data=[("digest", "reader:s3cret")]) as owner:
        owner.create(f"{zk_root}/public", b'"open"')
        owner.create(f"{zk_root}/models/window", b"8192", makepath=True)
        owner.create(f"{zk_root}/models/locked", b"1", acl=only_reader)
        owner.create(f"{zk_root}/secret", b'"hidden"', acl=only_reader)
        owner.create(f"{zk_root}/secret/inner", b"2")
        try:
            target = ("--hosts", zk_hosts, "--root", zk_root)
            hint = "give --auth-file (or --auth) with credentials that may read it, or check its ACL"
            refused = [
                f"autoglm-runtime: error E0409: ZooKeeper at {zk_hosts} denied reading key {key!r} under {zk_root} "
                f"(and any key below it): {hint}"
                for key in ("models/locked", "secret")
            ]
            assert _cli("config", "dump", *target) == (
                3,
                'models = null\nmodels/window = 8192\npublic = "open"\n',
                "\n".join(refused) + "\n",
            )
            code, out, err = _cli("config", "dump", "--json", *target)
            assert (code, json.loads(out), err) == (
                3,
                {"models": None, "models/window": 8192, "public": "open"},
                "\n".join(refused) + "\n",
            )
            # get: a readable key is served; one below a refused key is refused, not "missing".
            assert _cli("config", "get", "public", *target) == (0, '"open"\n', "")
            assert _cli("config", "get", "secret/inner", *target) == (2, "", refused[1] + "\n")
            assert _cli("config", "get", "nothing", *target) == (
                1,
                "",
                f"autoglm-runtime: error E0409: key 'nothing' does not exist under {zk_root}\n",
            )
            # watch: said the same way, and what it may read is followed (test_cli_config_watch.py); exit 3.
            watched = f"watching {zk_root}/ on {zk_hosts}\n"
            assert _cli("config", "watch", "--for", "1", *target) == (3, "", "\n".join(refused) + "\n" + watched)
            secret = tmp_path / "zk-auth"
            secret.write_text("reader:s3cret\n")
            assert _cli("config", "dump", "--auth-file", str(secret), *target) == (
                0,
                'models = null\nmodels/locked = 1\nmodels/window = 8192\npublic = "open"\nsecret = "hidden"\n'
                "secret/inner = 2\n",
                "",
            )
        finally:
            owner.delete(f"{zk_root}/secret", recursive=True)  # the fixture's cleanup has no credentials for it
            owner.delete(f"{zk_root}/models/locked")
