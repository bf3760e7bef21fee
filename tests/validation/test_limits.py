"""ConfigLimits with a real ConfigClient (a file:// store: no server needed)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from autoglm_runtime.config import ConfigClient, SyncTuning
from autoglm_runtime.testing import wait_until
from autoglm_runtime.validation import ConfigLimits, Limits


def test_keys_read_before_the_client_loaded_are_not_said_not_to_exist(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    # Before: limits judged before ConfigClient.start() logged "config key ... does not exist" for keys that exist,
    # sending the operator to look for a typo, and nothing said the defaults were in force only because nothing
    # was loaded yet.
    (tmp_path / "cfg" / "m").mkdir(parents=True)
    (tmp_path / "cfg" / "m" / "context_window").write_text("77")
    config = ConfigClient(tmp_path.as_uri(), "/cfg")  # a real client, on a file:// store, not started
    limits = ConfigLimits(config, prefix="m/", defaults=Limits(10), truncation_side_key="side")
    with caplog.at_level(logging.INFO, logger="autoglm_runtime.validation"):
        assert limits.current() == Limits(10)
        with config:  # started: what is missing now is said to be missing
            assert limits.current() == Limits(77)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        *(
            (
                "WARNING",
                f"config key 'm/{key}' under /cfg is not loaded yet (the config client's state is 'new': start() it "
                f"before requests are judged); the default {field} is in force",
            )
            for key, field in [
                ("context_window", "context_window=10"),
                ("truncate_on_overflow", "truncate_on_overflow=False"),
                ("side", "truncation_side='left'"),
            ]
        ),
        (
            "INFO",
            "config key 'm/truncate_on_overflow' does not exist under /cfg; the default truncate_on_overflow=False is "
            "in force",
        ),
        ("INFO", "config key 'm/side' does not exist under /cfg; the default truncation_side='left' is in force"),
    ]


def test_rejected_names_the_keys_whose_value_is_refused_now(tmp_path: Path) -> None:
    # Before: a refused value was said only in a WARNING line; nothing a health endpoint could show.
    (tmp_path / "cfg" / "m").mkdir(parents=True)
    (tmp_path / "cfg" / "m" / "context_window").write_text("77")
    config = ConfigClient(tmp_path.as_uri(), "/cfg", tuning=SyncTuning(poll_interval=0.05))
    limits = ConfigLimits(config, prefix="m/", defaults=Limits(10))
    with config:
        assert (limits.current(), limits.rejected()) == (Limits(77), {})
        (tmp_path / "cfg" / "m" / "context_window").write_text('"huge"')
        (tmp_path / "cfg" / "m" / "truncate_on_overflow").write_text('"maybe"')
        wait_until(lambda: config.get("m/truncate_on_overflow") == "maybe" and config.get("m/context_window") == "huge")
        assert limits.current() == Limits(77)  # the last good values stay
        assert limits.rejected() == {
            "m/context_window": "expected a whole number of tokens",
            "m/truncate_on_overflow": "expected true or false",
        }
        (tmp_path / "cfg" / "m" / "context_window").unlink()
        wait_until(lambda: config.get("m/context_window") is None)
        assert limits.current() == Limits(10)
        assert limits.rejected() == {"m/truncate_on_overflow": "expected true or false"}


def test_a_prefix_without_its_slash_is_a_warning_naming_the_key_meant(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    # Before: only an INFO line said 'models/llmcontext_window' does not exist, and the default window stayed in
    # force: silent under a WARNING log level, the misconfiguration the limits are read live to avoid.
    (tmp_path / "cfg" / "models" / "llm").mkdir(parents=True)
    (tmp_path / "cfg" / "models" / "llm" / "context_window").write_text("77")
    with ConfigClient(tmp_path.as_uri(), "/cfg") as config, caplog.at_level(logging.INFO, "autoglm_runtime.validation"):
        limits = ConfigLimits(config, prefix="models/llm", defaults=Limits(10))
        assert limits.current() == Limits(10)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            "config key 'models/llmcontext_window' does not exist under /cfg, but 'models/llm/context_window' does: "
            "end the ConfigLimits prefix with '/' (keys are the prefix and the name joined as they are); the default "
            "context_window=10 is in force",
        ),
        (
            "INFO",
            "config key 'models/llmtruncate_on_overflow' does not exist under /cfg; the default "
            "truncate_on_overflow=False is in force",
        ),
        (
            "INFO",
            "config key 'models/llmtruncation_side' does not exist under /cfg; the default truncation_side='left' is "
            "in force",
        ),
    ]
    assert caplog.records[0].error_code == "E0409"
