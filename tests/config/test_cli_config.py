"""``autoglm-runtime config``: what it refuses before it touches a store, and the file:// store's shape rules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from autoglm_runtime.cli import main


def _refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    return err.splitlines()[-1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["get", "k", "--timeout", "0"], "argument --timeout: '0' is not a number of seconds above 0"),
        (["dump", "--timeout", "-1"], "argument --timeout: '-1' is not a number of seconds above 0"),
        (["dump", "--timeout", "nan"], "argument --timeout: 'nan' is not a number of seconds above 0"),
        (["dump", "--timeout", "soon"], "argument --timeout: 'soon' is not a number of seconds above 0"),
        (["watch", "--for", "0"], "argument --for: '0' is not a number of seconds above 0"),
        (["watch", "--count", "0"], "argument --count: '0' is not a whole number of changes, 1 or more"),
        (["watch", "--count", "1.5"], "argument --count: '1.5' is not a whole number of changes, 1 or more"),
    ],
)
def test_a_duration_or_count_that_would_end_the_command_at_once_is_a_usage_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Before: --timeout 0 waited for nothing and reported ZooKeeper unreachable "within 0 s" (E0409, exit 1);
    # --count 0 and --for 0 watched nothing and exited 0.
    target = ["--hosts", tmp_path.as_uri(), "--root", "/cfg"]
    assert _refused(capsys, "config", *argv, *target) == f"autoglm-runtime config {argv[0]}: error E0001: {message}"


def test_a_bare_word_for_the_json_codec_is_refused_with_how_to_write_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = main(["config", "set", "models/llm/name", "llama", "--hosts", tmp_path.as_uri(), "--root", "/cfg"])
    assert (code, *capsys.readouterr()) == (
        2,
        "",
        "autoglm-runtime: error E0001: value 'llama' cannot be decoded by the codec, so servers would reject it: "
        "Expecting value: line 1 column 1 (char 0); give JSON text (a string in quotes: '\"llama\"'), or --codec "
        "text\n",
    )
    assert not (tmp_path / "cfg").exists()


def test_a_file_store_key_cannot_both_hold_a_value_and_have_keys_below_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    store = tmp_path.as_uri()
    target = ["--hosts", store, "--root", "/cfg"]
    assert main(["config", "set", "a/b", "1", *target]) == 0
    # Before: both were tracebacks (IsADirectoryError, FileExistsError), the first leaving cfg/.a.tmp behind.
    assert main(["config", "set", "a", "2", *target]) == 2
    assert capsys.readouterr().err == (
        f"autoglm-runtime: error E0001: key 'a' has keys below it in the file:// store ({store}, root /cfg), so it "
        "cannot hold a value there: set a key below it, or delete them first (config delete --recursive)\n"
    )
    assert main(["config", "set", "a/b/c/d", "3", *target]) == 2
    assert capsys.readouterr().err == (
        f"autoglm-runtime: error E0001: key 'a/b/c/d' cannot be created in the file:// store ({store}, root /cfg): "
        "'a/b' holds a value, and a key with a value cannot have keys below it there: delete it first, or choose "
        "another key\n"
    )
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["cfg", "cfg/a", "cfg/a/b"]
    assert (tmp_path / "cfg" / "a" / "b").read_text() == "1"


def test_set_says_what_it_set_and_whether_the_key_is_new(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # Before: nothing on success, so a mistyped key was created as quietly as a value was changed.
    store = tmp_path.as_uri()
    target = ["--hosts", store, "--root", "/cfg"]
    assert main(["config", "set", "limits/llm/context_window", "64", *target]) == 0
    assert capsys.readouterr() == (f"set limits/llm/context_window under /cfg at {store} (new key)\n", "")
    assert main(["config", "set", "limits/llm/context_window", "25", *target]) == 0
    assert capsys.readouterr() == (f"set limits/llm/context_window under /cfg at {store}\n", "")
    assert (tmp_path / "cfg" / "limits" / "llm" / "context_window").read_text() == "25"


def test_an_unreachable_zookeeper_is_one_coded_line_without_kazoos_own(tmp_path: Path) -> None:
    # Before: kazoo's "Connection dropped: ... Connection refused" lines reached stderr through logging's last
    # resort (the library's logger has a NullHandler, kazoo's had nothing), one per attempt, before the error.
    done = subprocess.run(
        [sys.executable, "-m", "autoglm_runtime", "config", "set", "k", "1", "--hosts", "127.0.0.1:1", "--root",
         "/x", "--timeout", "1"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (
        1,
        "",
        "autoglm-runtime: error E0409: ZooKeeper at 127.0.0.1:1 could not be reached within 1 s: check --hosts and "
        "that ZooKeeper runs there, or give a longer --timeout\n",
    )


def test_a_read_from_an_unreachable_zookeeper_names_the_commands_own_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Before: the SDK's advice, "give a snapshot_path with a valid snapshot", which no config command takes.
    for command in (["get", "k"], ["dump"], ["watch"]):
        assert main(["config", *command, "--hosts", "127.0.0.1:1", "--root", "/x", "--timeout", "0.3"]) == 1
        assert capsys.readouterr().err == (
            "autoglm-runtime: error E0409: ZooKeeper at 127.0.0.1:1 could not be reached (or root /x loaded) within "
            "0.3 s: check --hosts and that ZooKeeper runs there, or give a longer --timeout\n"
        )


def test_a_connect_string_kazoo_cannot_parse_is_a_usage_error_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for command in (["get", "k"], ["set", "k", "1"]):
        assert main(["config", *command, "--hosts", "127.0.0.1:abc", "--root", "/x"]) == 2
        assert capsys.readouterr() == (
            "",
            "autoglm-runtime: error E0001: config hosts '127.0.0.1:abc' are not a ZooKeeper connect string (Port "
            "could not be cast to integer value as 'abc'): give 'host:port[,host:port...]' or 'file:///dir'\n",
        )


@pytest.mark.parametrize("command", ["get", "set", "delete"])
def test_help_says_what_a_key_is_and_the_default_codec(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["config", command, "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "key path relative to --root, such as models/llm/context_window" in text
    assert "JSON text (default)" in text


def test_a_key_holding_data_the_codec_cannot_decode_is_named_as_such_not_as_missing_nor_left_out_silently(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Before: config get said "key ... does not exist" (exit 1) and config dump left the key out with exit 0, so
    # an operator looking for why the servers ignore a value was told it was not there at all.
    store = tmp_path / "cfg"
    store.mkdir()
    (store / "window").write_bytes(b"not json")
    (store / "name").write_bytes(b"\xff")
    (store / "ok").write_bytes(b"1")
    target = ["--hosts", tmp_path.as_uri(), "--root", "/cfg"]
    undecodable = (
        "autoglm-runtime: error E0409: key {key!r} under /cfg holds data the {codec} codec cannot decode ({why}): "
        "servers reading it with that codec keep their last good value (or their default); fix it with config set, "
        "or read it as it is with --codec {other}\n"
    )
    window = undecodable.format(
        key="window", codec="json", why="Expecting value: line 1 column 1 (char 0)", other="text"
    )
    name_json = undecodable.format(
        key="name",
        codec="json",
        why="'utf-8' codec can't decode byte 0xff in position 0: invalid start byte",
        other="bytes",
    )
    assert main(["config", "get", "window", *target]) == 1
    assert capsys.readouterr() == ("", window)
    assert main(["config", "get", "window", "--codec", "text", *target]) == 0
    assert capsys.readouterr() == ("not json\n", "")
    assert main(["config", "get", "name", "--codec", "text", *target]) == 1
    assert capsys.readouterr().err == name_json.replace("the json codec", "the text codec")
    assert main(["config", "dump", *target]) == 3
    assert capsys.readouterr() == ("ok = 1\n", name_json + window)
    assert main(["config", "dump", "--json", *target]) == 3
    assert capsys.readouterr() == ('{\n  "ok": 1\n}\n', name_json + window)


@pytest.mark.parametrize(
    ("root", "fix"),
    [("cfg", ""), ("/cfg/", "; drop the final '/'"), ("/a//cfg", "; an empty part ('//') names no znode")],
)
@pytest.mark.parametrize("command", [["set", "k", "1"], ["delete", "k"], ["get", "k"]])
def test_a_root_the_servers_refuse_is_refused_by_writes_too(
    root: str, fix: str, command: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Before: get refused --root cfg (as every ConfigClient does) while set wrote tmp/cfg/k and delete removed it,
    # and against ZooKeeper kazoo quietly took 'cfg' for '/cfg' and '/cfg/' for '/cfg'.
    assert main(["config", *command, "--hosts", tmp_path.as_uri(), "--root", root]) == 2
    assert capsys.readouterr() == (
        "",
        f"autoglm-runtime: error E0001: config root {root!r} must be an absolute ZooKeeper path such as "
        f"'/autoglm/prod'{fix}\n",
    )
    assert list(tmp_path.iterdir()) == []


def test_watch_says_when_a_key_is_set_to_data_servers_refuse(tmp_path: Path) -> None:
    # Before: such an update printed nothing at all (the client refused it as servers do), so an operator watching
    # a bad write go in saw no trace of it. The changes around it show what servers hold ("old" is the value they
    # kept).
    store = tmp_path / "cfg"
    store.mkdir()
    (store / "k").write_text("1")
    watch = subprocess.Popen(
        [sys.executable, "-m", "autoglm_runtime", "config", "watch", "--count", "2", "--for", "120", "--json",
         "--hosts", tmp_path.as_uri(), "--root", "/cfg"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert watch.stdout is not None
    assert watch.stderr is not None
    assert watch.stderr.readline() == f"watching /cfg/ on {tmp_path.as_uri()}\n"
    (store / "k").write_text("not json")
    assert watch.stderr.readline() == (
        "autoglm-runtime: warning E0409: key 'k' under /cfg now holds data the json codec cannot decode (Expecting "
        "value: line 1 column 1 (char 0)): servers reading it with that codec keep their last good value (or their "
        "default); fix it with config set, or read it as it is with --codec text\n"
    )
    (store / "k").write_text("2")
    assert json.loads(watch.stdout.readline()) | {"version": None} == {
        "key": "k",
        "kind": "updated",
        "old": 1,
        "new": 2,
        "version": None,
    }
    (store / "k").unlink()
    out, err = watch.communicate(timeout=120)
    assert json.loads(out) | {"version": None} == {
        "key": "k",
        "kind": "deleted",
        "old": 2,
        "new": None,
        "version": None,
    }
    assert (watch.returncode, err) == (0, "")
