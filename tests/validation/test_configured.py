"""GuardSettings and EnvValidationMiddleware: a settings file is judged whole, every problem named with the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from autoglm_runtime.errors import InvalidRequestError, UsageError
from autoglm_runtime.validation import EnvValidationMiddleware, GuardSettings


async def _app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - never called
    raise AssertionError("not called")


def test_every_out_of_range_value_of_the_file_is_reported_at_once_with_the_file_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: only the first, without the file: "E0001: max_body_bytes must be at least 1, got -1".
    path = tmp_path / "guard.toml"
    path.write_text("max_body_bytes = -1\nmax_concurrent_checks = 0\nbody_timeout = -5\n")
    monkeypatch.setenv("AUTOGLM_VALIDATION_CONFIG", str(path))
    with pytest.raises(UsageError) as info:
        EnvValidationMiddleware(_app)
    assert str(info.value) == (
        f"E0001: the guard settings in {str(path)!r} are not valid: 'max_body_bytes' must be at least 1, got -1; "
        "'max_concurrent_checks' must be at least 1, got 0; 'body_timeout' must be positive, got -5: fix them (see "
        "docs/validation.md)"
    )


def test_a_tokenizer_and_a_chat_template_that_cannot_be_loaded_are_named_together_with_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: only the tokenizer's error, without the file or the key that named it.
    path = tmp_path / "guard.toml"
    path.write_text(f'context_window = 64\ntokenizer = "{tmp_path}"\nchat_template = "{tmp_path / "none.json"}"\n')
    monkeypatch.setenv("AUTOGLM_VALIDATION_CONFIG", str(path))
    with pytest.raises(UsageError) as info:
        EnvValidationMiddleware(_app)
    assert info.value.message == (
        f"the guard settings in {str(path)!r} name files that cannot be used: 'tokenizer': the directory "
        f"{str(tmp_path)!r} holds no tokenizer.json: give the model's tokenizer.json, or the directory holding it; "
        f"'chat_template': no chat template at {str(tmp_path / 'none.json')!r}: the file or directory does not exist"
    )


def test_range_problems_come_with_unknown_keys_and_wrong_types(tmp_path: Path) -> None:
    path = tmp_path / "guard.json"
    path.write_text('{"max_parts": 0, "colour": "red", "retry_after": "soon", "error_style": "xml"}')
    with pytest.raises(UsageError) as info:
        GuardSettings.from_file(path)
    assert info.value.message == (
        f"the guard settings in {str(path)!r} are not valid: unknown key 'colour'; 'max_parts' must be at least 1, "
        "got 0; 'retry_after' cannot be 'soon'; 'error_style' must be 'autoglm' or 'openai', got 'xml': fix them "
        "(see docs/validation.md)"
    )


#: (key, the least value the components take, a value they refuse, the message for it) for every bounded setting.
BOUNDS: list[tuple[str, Any, Any, str]] = [
    ("context_window", 1, 0, "'context_window' must be at least 1 token, got 0"),
    ("truncation_side", "right", "middle", "'truncation_side' must be 'left' or 'right', got 'middle'"),
    ("default_output_tokens", 0, -1, "'default_output_tokens' must not be negative, got -1"),
    ("message_tokens", 0, -1, "'message_tokens' must not be negative, got -1"),
    ("max_body_bytes", 1, 0, "'max_body_bytes' must be at least 1, got 0"),
    ("max_concurrent_checks", 1, 0, "'max_concurrent_checks' must be at least 1, got 0"),
    ("retry_after", 0, -1, "'retry_after' must not be negative, got -1"),
    ("body_timeout", 0.001, 0, "'body_timeout' must be positive, got 0"),
    ("body_timeout", 0.001, float("nan"), "'body_timeout' must be positive, got nan"),
    ("error_style", "openai", "xml", "'error_style' must be 'autoglm' or 'openai', got 'xml'"),
    ("max_header_length", 1, 0, "'max_header_length' must be at least 1, got 0"),
    ("guarded_headers", ["x-api-key"], [], "'guarded_headers' must name at least one header, got ()"),
    ("max_prompts", 1, 0, "'max_prompts' must be at least 1, got 0"),
    ("max_messages", 1, 0, "'max_messages' must be at least 1, got 0"),
    ("max_parts", 1, 0, "'max_parts' must be at least 1, got 0"),
    ("roles", ["user"], [], "'roles' must name at least one role, got ()"),
]
_NEEDS_TOKENIZER = {"context_window", "truncation_side", "default_output_tokens", "message_tokens"}


@pytest.mark.parametrize(("key", "least", "refused", "message"), BOUNDS, ids=[f"{b[0]}={b[2]!r}" for b in BOUNDS])
def test_the_settings_refuse_exactly_what_the_components_refuse(
    key: str, least: Any, refused: Any, message: str, tokenizer_dir: Path
) -> None:
    base: dict[str, Any] = {}
    if key in _NEEDS_TOKENIZER:
        base = {"tokenizer": str(tokenizer_dir / "wordlevel.json"), "context_window": 64}
    with GuardSettings.from_mapping({**base, key: least}).middleware(_app):
        pass  # the least value is taken by the settings and by the middleware's parts
    with pytest.raises(UsageError) as info:
        GuardSettings.from_mapping({**base, key: refused}, source="the settings")
    assert info.value.message == f"the settings are not valid: {message}: fix them (see docs/validation.md)"
    # The parts refuse it too, when given it without the settings' check (a dataclass built directly).
    value = tuple(refused) if isinstance(refused, list) else refused
    with pytest.raises(UsageError):
        GuardSettings(**{**base, key: value}).middleware(_app)


def test_roles_are_any_string_by_default_listed_or_any_for_a_json_null(tmp_path: Path) -> None:
    observation = {"messages": [{"role": "observation", "content": "42"}]}
    default = GuardSettings.from_mapping({}).middleware_options()["extractor"]
    assert default.roles is None
    assert default.extract(observation).segments == ["42"]  # GLM's tool results, as vLLM takes them
    path = tmp_path / "openai.toml"
    path.write_text('roles = ["system", "assistant", "user", "function", "tool", "developer"]\n')
    with pytest.raises(InvalidRequestError):
        GuardSettings.from_file(path).middleware_options()["extractor"].extract(observation)
    path = tmp_path / "guard.toml"
    path.write_text('roles = ["system", "user", "assistant", "observation"]\n')
    listed = GuardSettings.from_file(path).middleware_options()["extractor"]
    assert listed.extract(observation).segments == ["42"]
    with pytest.raises(InvalidRequestError):
        listed.extract({"messages": [{"role": "tool", "content": "42"}]})
    path = tmp_path / "guard.json"
    path.write_text('{"roles": null}')
    assert GuardSettings.from_file(path).middleware_options()["extractor"].extract(observation).segments == ["42"]
