"""Config text, srvr parsing, connect strings and four-letter words, without a ZooKeeper server."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from autoglm_runtime.testing._common import (
    QuorumPeer,
    format_hosts,
    four_letter_word,
    free_port,
    parse_mode,
    render_config,
    wait_for_mode,
)


def test_standalone_config() -> None:
    text = render_config(data_dir="/tmp/zk", client_port=2281)

    assert text == (
        "tickTime=500\n"
        "initLimit=10\n"
        "syncLimit=5\n"
        "dataDir=/tmp/zk\n"
        "clientPort=2281\n"
        "clientPortAddress=127.0.0.1\n"
        "minSessionTimeout=1000\n"
        "maxSessionTimeout=60000\n"
        "admin.enableServer=false\n"
        "4lw.commands.whitelist=*\n"
        "forceSync=no\n"
        "maxClientCnxns=0\n"
    )


def test_ensemble_config_lists_every_peer_and_extra_settings_win() -> None:
    peers = [QuorumPeer(1, "127.0.0.1", 3001, 4001), QuorumPeer(2, "127.0.0.1", 3002, 4002)]

    text = render_config(data_dir="/d", client_port=1, peers=peers, extra={"tickTime": "200", "a.b": "c"})

    lines = text.splitlines()
    assert lines[0] == "tickTime=200"
    assert lines[-3:] == ["server.1=127.0.0.1:3001:4001", "server.2=127.0.0.1:3002:4002", "a.b=c"]


def test_parse_mode() -> None:
    reply = "Zookeeper version: 3.8.0-x, built on 2024\nLatency min/avg/max: 0/0.0/0\nMode: follower\nNode count: 5\n"

    assert parse_mode(reply) == "follower"
    assert parse_mode("This ZooKeeper instance is not currently serving requests\n") is None
    assert parse_mode("") is None
    assert parse_mode(None) is None
    assert parse_mode("Mode:\n") is None


@given(
    st.lists(st.text(alphabet=st.characters(exclude_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"))),
    st.sampled_from(["leader", "follower", "standalone", "observer"]),
)
def test_parse_mode_finds_the_mode_line_among_any_others(lines: list[str], mode: str) -> None:
    others = [line for line in lines if line.partition(":")[0].strip() != "Mode"]

    assert parse_mode("\n".join(others)) is None
    assert parse_mode("\n".join([*others, f"Mode: {mode}", *others])) == mode


def test_format_hosts() -> None:
    assert format_hosts([("127.0.0.1", 2181), ("::1", 2182)]) == "127.0.0.1:2181,[::1]:2182"


def test_four_letter_word_and_wait_for_mode(srvr_port: int) -> None:
    assert four_letter_word("127.0.0.1", srvr_port, "srvr") == "Zookeeper version: test\nMode: standalone\n"
    assert wait_for_mode("127.0.0.1", srvr_port, timeout=5) == "standalone"


def test_no_answer_gives_none() -> None:
    port = free_port()  # nothing listens there

    assert four_letter_word("127.0.0.1", port, "srvr") is None
    assert wait_for_mode("127.0.0.1", port, timeout=60, alive=lambda: False) is None


def test_wait_for_mode_gives_up_at_the_deadline() -> None:
    port = free_port()
    now = [0.0]

    def timer() -> float:
        now[0] += 1.0  # every look at the clock moves it a second
        return now[0]

    assert wait_for_mode("127.0.0.1", port, timeout=3, timer=timer, interval=0) is None
    assert now[0] == 4.0  # deadline 1 + 3 = 4: the clock reads 2 and 3 try again, the read of 4 gives up
