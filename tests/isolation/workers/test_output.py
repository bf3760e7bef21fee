"""Forwarding worker output into logging: lines, bounded memory for lines without end, and truncation marks."""

from __future__ import annotations

import logging
import os
import threading

import pytest

from autoglm_runtime.isolation.workers._output import MAX_LINE, LineSplitter, OutputPump


def test_lines_are_split_across_chunks() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"one\ntw") == [(b"one", False)]
    assert splitter.feed(b"o\n\nthr") == [(b"two", False), (b"", False)]
    assert splitter.flush() == [(b"thr", False)]


def test_a_line_without_newline_is_cut_at_the_limit_and_its_rest_dropped() -> None:
    splitter = LineSplitter(limit=8)
    lines = []
    for _ in range(1000):  # 16 KB without a newline: never held beyond the limit
        lines += splitter.feed(b"x" * 16)
    assert lines == [(b"x" * 8, True)]
    assert splitter.feed(b"rest of it\nnext\nla") == [(b"next", False)]
    assert splitter.flush() == [(b"la", False)]


def test_a_long_line_in_one_chunk_is_truncated() -> None:
    splitter = LineSplitter(limit=4)
    assert splitter.feed(b"abcdefgh\nij\n") == [(b"abcd", True), (b"ij", False)]
    assert splitter.feed(b"abcd\n") == [(b"abcd", False)]
    assert splitter.flush() == []


def test_the_pump_logs_long_lines_truncated(caplog: pytest.LogCaptureFixture) -> None:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    logger = logging.getLogger("autoglm_runtime.isolation.workers.process")
    caplog.set_level(logging.INFO, logger=logger.name)
    pump = OutputPump("m", 42, os.fdopen(out_r, "rb"), os.fdopen(err_r, "rb"), logger)
    pump.start()
    with os.fdopen(err_w, "wb") as err:  # more than a pipe holds: the pump reads while we write
        err.write(b"y" * (4 * MAX_LINE) + b"\nshort\n")
    with os.fdopen(out_w, "wb") as out:
        out.write(b"last words")
    pump.finish(30)
    records = [(r.stream, r.getMessage(), r.levelname, r.truncated) for r in caplog.records]
    long = "y" * MAX_LINE + " [line truncated at 65536 bytes]"
    assert [r for r in records if r[0] == "stderr"] == [
        ("stderr", f"model m stderr: {long}", "WARNING", True),
        ("stderr", "model m stderr: short", "WARNING", False),
    ]
    assert [r for r in records if r[0] == "stdout"] == [("stdout", "model m stdout: last words", "INFO", False)]
    assert pump.stderr_tail == [long, "short"]


def test_the_pump_stops_once_the_worker_exited_though_a_process_it_started_holds_the_pipes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    escaped = [os.dup(out_w), os.dup(err_w)]  # a daemon the model started in a session of its own keeps these
    logger = logging.getLogger("autoglm_runtime.isolation.workers.process")
    caplog.set_level(logging.INFO, logger=logger.name)
    pump = OutputPump("m", 43, os.fdopen(out_r, "rb"), os.fdopen(err_r, "rb"), logger)
    pump.start()
    try:
        os.write(out_w, b"said\nunfinished")
        os.write(err_w, b"complained\n")
        os.close(out_w)  # the worker exited: its own ends are closed, the daemon's are not
        os.close(err_w)
        pump.finish(10)
        assert "autoglm-worker-m-output-43" not in [thread.name for thread in threading.enumerate()]
        records = [(r.stream, r.getMessage()) for r in caplog.records]
        assert sorted(records) == [
            ("stderr", "model m stderr: complained"),
            ("stdout", "model m stdout: said"),
            ("stdout", "model m stdout: unfinished"),
        ]
        assert pump.stderr_tail == ["complained"]
        pump.finish(10)  # again: nothing more to do
    finally:
        for fd in escaped:
            os.close(fd)
