"""How truncation cuts a chat: the oldest turns go whole, then the last turn's text is cut from the truncation side,
with a chat template or without one, and the log says which side (autoglm_runtime.validation._truncation)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from tests.validation._helpers import write_chat_model

from autoglm_runtime.validation import (
    CallableTokenizer,
    ChatTemplate,
    ContextWindowGuard,
    GuardResult,
    HFTokenizer,
    Limits,
    OpenAIExtractor,
    StaticLimits,
)

WORDS = CallableTokenizer(str.split, decode=" ".join)
TEMPLATE = ChatTemplate(
    "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
CHAT = {
    "messages": [
        {"role": "user", "content": "a b c d e"},
        {"role": "assistant", "content": "f g h"},
        {"role": "user", "content": "one two three four five six seven eight"},
    ],
    "max_tokens": 2,
}


def truncate(body: dict[str, Any], side: str, template: ChatTemplate | None, tok: Any = WORDS) -> GuardResult:
    limits = StaticLimits(Limits(10, truncate_on_overflow=True, truncation_side=side))  # type: ignore[arg-type]
    guard = ContextWindowGuard(tok, limits, chat_template=template, message_tokens=0)
    return guard.judge(OpenAIExtractor().extract(body).guard_input())


@pytest.mark.parametrize("template", [None, TEMPLATE], ids=["no-template", "template"])
@pytest.mark.parametrize(
    ("side", "kept"),
    [("left", "three four five six seven eight"), ("right", "one two three four five six")],
)
def test_a_chat_loses_its_oldest_turns_then_the_last_turn_s_text_from_the_side(
    template: ChatTemplate | None, side: str, kept: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Before, with truncation_side "right" a chat template's last turn was still cut from its start, and without a
    # template the newest turn was dropped whole and the oldest kept, against what the docs promise.
    if template is None:
        # Without a template each turn's text alone counts: 8 tokens fit the 8 left, so only the old turns go.
        kept = "one two three four five six seven eight"
    with caplog.at_level(logging.WARNING, logger="autoglm_runtime.validation"):
        result = truncate(CHAT, side, template)
    assert result.dropped_messages == (0, 1)
    assert result.segments == ("", "", kept)
    assert result.input_tokens == 8
    if template is not None:
        assert result.prompt == f"<user> {kept} <assistant>"
        assert caplog.records[-1].getMessage().endswith(f"tokens removed from the {side}")


def test_the_last_turn_s_text_is_cut_from_the_side_without_a_template() -> None:
    body = {**CHAT, "messages": [*CHAT["messages"][:2], {"role": "user", "content": " ".join("123456789ab")}]}
    assert truncate(body, "left", None).segments[2] == " ".join("456789ab")
    assert truncate(body, "right", None).segments[2] == " ".join("12345678")


def test_a_tokenizer_adding_a_bos_still_cuts_the_last_turn(tmp_path: Path) -> None:
    # The last turn's text was measured with the tokenizer's BOS, which the rendered chat does not hold: cutting
    # "one token" removed only that BOS, and a chat one token over the window could never be cut (E0513 after 8
    # rounds) although truncation was on.
    tok = HFTokenizer.from_file(write_chat_model(tmp_path, "{{ messages }}"))
    template = ChatTemplate("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    text = "hello world, the quick brown fox, one two three"
    ids = tok.without_special_tokens().encode(text)
    limits = StaticLimits(Limits(len(ids), truncate_on_overflow=True))  # one token for the output: one over
    guard = ContextWindowGuard(tok, limits, chat_template=template)
    result = guard.judge(OpenAIExtractor().extract({"messages": [{"role": "user", "content": text}]}).guard_input())
    assert result.input_tokens <= len(ids) - 1
    assert text.endswith(result.segments[0])  # type: ignore[arg-type]
    assert result.removed_tokens == len(ids) - result.input_tokens
