"""JSON-lines logs: fields, trace ids, error codes, extras, and that values never reach a log."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from autoglm_runtime.errors import ConfigValueError
from autoglm_runtime.logging import (
    JsonFormatter,
    bind_trace_id,
    configure_json_logging,
    current_trace_id,
    describe_value,
)


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    logger = logging.getLogger("autoglm_runtime.tests.capture")
    handler = configure_json_logging(logging.DEBUG, stream=stream, logger=logger.name)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_has_every_field(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    logger.warning("drift corrected for %s", "models/a", extra={"error_code": "E0409", "key": "models/a"})
    (line,) = _lines(stream)
    assert line["level"] == "WARNING"
    assert line["module"] == "autoglm_runtime.tests.capture"
    assert line["error_code"] == "E0409"
    assert line["message"] == "drift corrected for models/a"
    assert line["key"] == "models/a"
    assert "trace_id" not in line
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(line["timestamp"]))


def test_trace_id_is_bound_per_context(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    seen_in_thread: list[str | None] = []
    with bind_trace_id("req-42"):
        logger.info("inside")
        thread = threading.Thread(target=lambda: seen_in_thread.append(current_trace_id()))
        thread.start()
        thread.join()
    logger.info("outside")
    inside, outside = _lines(stream)
    assert inside["trace_id"] == "req-42"
    assert "trace_id" not in outside
    assert seen_in_thread == [None]  # a new thread does not inherit the request's context
    assert current_trace_id() is None


def test_error_code_comes_from_a_logged_sdk_exception(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    try:
        raise ConfigValueError("key 'a' holds invalid JSON: Expecting value at line 1 column 1")
    except ConfigValueError:
        logger.exception("update rejected")
    (line,) = _lines(stream)
    assert line["error_code"] == "E0409"
    assert line["level"] == "ERROR"
    assert "ConfigValueError" in str(line["exception"])


def test_a_plain_line_has_a_null_error_code(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    logger.info("hello")
    assert _lines(stream)[0]["error_code"] is None


def test_unserialisable_extras_are_written_as_repr() -> None:
    record = logging.LogRecord("m", logging.INFO, __file__, 1, "msg", None, None)
    record.thing = object()
    record.items = (1, "two")
    line = json.loads(JsonFormatter().format(record))
    assert line["items"] == [1, "two"]
    assert str(line["thing"]).startswith("<object object at")


def test_configuring_twice_does_not_double_lines() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("autoglm_runtime.tests.twice")
    logger.propagate = False
    configure_json_logging(stream=stream, logger=logger.name)
    handler = configure_json_logging(stream=stream, logger=logger.name)
    logger.info("once")
    logger.removeHandler(handler)
    assert len(stream.getvalue().splitlines()) == 1


def test_the_library_only_adds_a_null_handler() -> None:
    handlers = logging.getLogger("autoglm_runtime").handlers
    assert [type(h) for h in handlers] == [logging.NullHandler]


@pytest.mark.parametrize(
    ("value", "size", "digest"),
    [
        (b"secret", 6, "2bb80d537b1d"),
        ("secret", 6, "2bb80d537b1d"),
        (None, 0, "e3b0c44298fc"),
        ({"token": "hunter2"}, 20, "6fae4c186799"),
    ],
)
def test_describe_value_gives_size_and_short_hash(value: object, size: int, digest: str) -> None:
    assert describe_value(value) == {"size": size, "sha256": digest}


def test_a_described_value_never_shows_its_content(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    logger.info("value changed", extra={"key": "auth/token", **describe_value("hunter2-secret")})
    assert "hunter2" not in stream.getvalue()
    assert _lines(stream)[0]["size"] == 14


def test_the_root_package_leaves_logging_alone_and_each_part_that_logs_installs_the_null_handler() -> None:
    code = (
        "import sys\n"
        "import autoglm_runtime, autoglm_runtime.cli, autoglm_runtime.cli.check_deps\n"
        "print('logging' in sys.modules)\n"
        "import autoglm_runtime.isolation, autoglm_runtime.config, autoglm_runtime.logging, logging\n"
        "print([type(h).__name__ for h in logging.getLogger('autoglm_runtime').handlers])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["False", "['NullHandler']"]
