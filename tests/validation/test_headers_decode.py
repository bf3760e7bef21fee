"""HeaderTokenGuard and DecodeGuard against exact messages; hypothesis for what they must never do."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoglm_runtime.errors import HeaderTooLongError, InputDecodeError, UsageError
from autoglm_runtime.validation import DecodeGuard, HeaderTokenGuard

# For the client, who cannot change the limit (before: "or raise the limit if such values are legitimate").
TOO_LONG = "send at most {} bytes"


def test_header_at_the_limit_passes_and_one_more_byte_fails() -> None:
    guard = HeaderTokenGuard()
    guard.check([(b"authorization", b"x" * 512)])
    with pytest.raises(HeaderTooLongError) as info:
        guard.check([(b"host", b"a"), (b"authorization", b"x" * 513)])
    assert info.value.message == (
        f"the authorization header is 513 bytes long, more than the 512 bytes this server takes: {TOO_LONG.format(512)}"
    )
    assert (info.value.code, info.value.http_status, info.value.param) == ("E0512", 431, "authorization")


def test_header_names_are_case_insensitive_and_others_are_ignored() -> None:
    guard = HeaderTokenGuard(max_length=8, headers=("Authorization", "X-Api-Key"))
    guard.check([(b"cookie", b"c" * 10_000)])
    with pytest.raises(HeaderTooLongError) as info:
        guard.check([("X-API-KEY", "k" * 9)])
    assert info.value.message == (
        f"the x-api-key header is 9 bytes long, more than the 8 bytes this server takes: {TOO_LONG.format(8)}"
    )


def test_str_values_are_measured_in_utf8_bytes() -> None:
    guard = HeaderTokenGuard(max_length=8)
    with pytest.raises(HeaderTooLongError) as info:
        guard.check([("authorization", "ééééé")])  # 5 characters, 10 bytes
    assert info.value.message == (
        f"the authorization header is 10 bytes long, more than the 8 bytes this server takes: {TOO_LONG.format(8)}"
    )


def test_the_message_never_contains_the_value() -> None:
    with pytest.raises(HeaderTooLongError) as info:
        HeaderTokenGuard(max_length=4).check([(b"authorization", b"Bearer SECRET")])
    assert "SECRET" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_length": 0}, "max_length must be a positive integer, got 0"),
        ({"max_length": True}, "max_length must be a positive integer, got True"),
        ({"headers": ()}, "headers must name at least one header to guard"),
    ],
)
def test_header_guard_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError) as info:
        HeaderTokenGuard(**kwargs)  # type: ignore[arg-type]
    assert info.value.message == message


@given(st.lists(st.tuples(st.binary(max_size=40), st.binary(max_size=1200)), max_size=8))
def test_header_guard_either_passes_or_names_an_overlong_guarded_header(headers: list[tuple[bytes, bytes]]) -> None:
    guard = HeaderTokenGuard(max_length=512, headers=("authorization", "\x00\xff"))
    over = [n for n, v in headers if n.lower() in (b"authorization", b"\x00\xff") and len(v) > 512]
    if not over:
        guard.check(headers)
        return
    with pytest.raises(HeaderTooLongError) as info:
        guard.check(headers)
    assert info.value.param == over[0].lower().decode("latin-1")


def test_invalid_utf8_names_the_byte_and_offset() -> None:
    with pytest.raises(InputDecodeError) as info:
        DecodeGuard().check_bytes(b'{"prompt": "ok\xff"}')
    assert info.value.message == (
        "the input is not valid UTF-8: byte 0xff at offset 14 cannot be decoded (invalid start byte): "
        "send UTF-8 encoded text"
    )
    assert (info.value.code, info.value.http_status) == ("E5009", 400)


def test_surrogates_encoded_as_utf8_bytes_are_invalid() -> None:
    with pytest.raises(InputDecodeError) as info:
        DecodeGuard().check_bytes(b"a\xed\xa0\x80")
    assert info.value.message == (
        "the input is not valid UTF-8: byte 0xed at offset 1 cannot be decoded (invalid continuation byte): "
        "send UTF-8 encoded text"
    )


def test_json_lone_surrogate_escape_is_rejected_with_its_place() -> None:
    body = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "ok \\ud800"}]}'
    assert json.loads(body)["messages"][1]["content"] == "ok \ud800"  # json.loads accepts it
    with pytest.raises(InputDecodeError) as info:
        DecodeGuard().check_json(body)
    assert info.value.message == (
        "the input contains a lone surrogate U+D800 at character 3 of messages[1].content, "
        "which no tokenizer can encode: send well-formed Unicode text"
    )
    assert info.value.param == "messages[1].content"


def test_surrogate_in_a_key_is_rejected() -> None:
    with pytest.raises(InputDecodeError) as info:
        DecodeGuard().check_json(b'{"a": {"\\udfff": 1}}')
    assert info.value.message == (
        "the input contains a lone surrogate U+DFFF at character 0 of a key in a, "
        "which no tokenizer can encode: send well-formed Unicode text"
    )


def test_a_proper_surrogate_pair_is_fine() -> None:
    assert DecodeGuard().check_json(b'{"prompt": "\\ud83d\\ude00"}') == {"prompt": "\U0001f600"}


def test_malformed_json() -> None:
    with pytest.raises(InputDecodeError) as info:
        DecodeGuard().check_json(b'{"prompt": ')
    assert info.value.message == (
        "the request body is not valid JSON: Expecting value at line 1 column 12: send a well-formed JSON object"
    )


def test_absurdly_deep_json() -> None:
    with pytest.raises(InputDecodeError) as info:
        DecodeGuard().check_json(b"[" * 200_000 + b"]" * 200_000)
    assert info.value.message == (
        "the request body is not valid JSON: it is nested too deeply to parse: send a flatter JSON object"
    )


def test_an_integer_too_long_to_convert() -> None:
    with pytest.raises(InputDecodeError) as info:
        DecodeGuard().check_json(b'{"max_tokens": ' + b"9" * 5000 + b"}")
    assert info.value.message == (
        "the request body is not valid JSON: a value in it cannot be converted (such as an integer too long to "
        "parse): send a well-formed JSON object"
    )


def test_check_text_without_a_place() -> None:
    with pytest.raises(InputDecodeError) as info:
        DecodeGuard().check_text("ab\udc00")
    assert info.value.message == (
        "the input contains a lone surrogate U+DC00 at character 2, which no tokenizer can encode: "
        "send well-formed Unicode text"
    )


@given(st.binary(max_size=300))
def test_any_bytes_either_parse_or_raise_a_coded_error(data: bytes) -> None:
    try:
        value = DecodeGuard().check_json(data)
    except InputDecodeError:
        return  # a coded error (E5009) is the only failure allowed
    json.dumps(value, ensure_ascii=False).encode("utf-8")  # every string in it is encodable


@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0xFFFF), max_size=50))
def test_surrogates_are_found_wherever_they_are(text: str) -> None:
    has_lone = any(0xD800 <= ord(c) <= 0xDFFF for c in text)
    body = json.dumps({"prompt": [text]}).encode("ascii")
    if not has_lone:
        DecodeGuard().check_json(body)
        return
    with pytest.raises(InputDecodeError) as info:
        DecodeGuard().check_json(body)
    assert info.value.param == "prompt[0]"


PIECES = st.sampled_from(
    ["\\ud800", "\\udc00", "\\udbff", "\\ud83d\\ude00", "\\\\", "\\\\u", "a", "\\u00e9", "u", "d800", "\\n", "é"]
)


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(PIECES, max_size=10), key=st.lists(PIECES, max_size=3))
def test_the_fast_surrogate_screen_never_lets_a_lone_surrogate_through(pieces: list[str], key: list[str]) -> None:
    """Bodies full of valid escaped pairs skip the walk over every string; a lone surrogate never slips past."""
    body = ('{"' + "".join(key) + '": ["' + "".join(pieces) + '"]}').encode()
    value = json.loads(body)
    text = "".join(value) + "".join(next(iter(value.values())))
    lone = any(0xD800 <= ord(c) <= 0xDFFF for c in text)
    if lone:
        with pytest.raises(InputDecodeError):
            DecodeGuard().check_json(body)
    else:
        assert DecodeGuard().check_json(body) == value
