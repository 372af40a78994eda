"""The fast JSON path reads and writes exactly what the standard library would, or defers to it."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.errors import TransformError
from etl.model import content_hash, encode_payload
from etl.source.reading import parse_json

# NUL is refused by design (PostgreSQL cannot store it); see the refusals below.
TEXT = st.text(
    st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=12
) | st.sampled_from(["ünï ✓", "😀", "\x1f\x7f", "\u2028", '"\\/'])
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=25,
)


def stdlib(value: Any) -> bytes:
    """What earlier versions stored and hashed: sorted keys, compact, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def holds_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(holds_float(item) for item in value.values())
    if isinstance(value, list):
        return any(holds_float(item) for item in value)
    return False


@settings(max_examples=400, deadline=None)
@given(value=JSON, escaped=st.booleans())
def test_parse_json_reads_what_the_standard_library_reads(value: Any, escaped: bool) -> None:
    text = json.dumps(value, ensure_ascii=escaped).encode()  # \u escapes or raw UTF-8

    parsed = parse_json(text)

    assert parsed == json.loads(text)
    assert stdlib(parsed) == stdlib(json.loads(text))  # same types too: no int became a float


@settings(max_examples=400, deadline=None)
@given(value=st.dictionaries(TEXT, JSON, max_size=6))
def test_encode_payload_writes_the_standard_librarys_bytes(value: dict) -> None:
    encoded = encode_payload(value)

    assert json.loads(encoded) == value
    if not holds_float(value):  # float spelling may differ (1e-07 against 1e-7), not value
        assert encoded == stdlib(value)


@pytest.mark.parametrize(
    "text",
    [
        b'{"id": 18446744073709551616}',  # past 64 bits: orjson would read a float
        b'{"id": 18446744073709551615}',
        b'{"id": -9223372036854775809}',
        b'{"id": 123456789012345678901234567890}',
        b'{"note": "12345678901234567890123"}',  # a long digit run inside a string
        b'{"x": 1e400}',  # the standard library reads infinity, later refused per action
        b'{"x": NaN}',
        b'{"x": "\\ud800"}',  # a lone surrogate: read, later refused per action
        b'{"a": 1, "a": 2}',
    ],
)
def test_parse_json_defers_to_the_standard_library_where_orjson_differs(text: bytes) -> None:
    parsed = parse_json(text)
    expected = json.loads(text)

    assert repr(parsed) == repr(expected)  # NaN != NaN; the reprs compare types and values


@pytest.mark.parametrize(
    "text", [b"\xef\xbb\xbf{}", b'{"a": "\xff"}', b'{"a": 1', b"", b"[" * 100_000]
)
def test_parse_json_refuses_what_is_not_rfc_8259_json(text: bytes) -> None:
    assert parse_json(text) is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"x": math.nan}, "NaN or Infinity"),
        ({"x": [1, {"y": -math.inf}]}, "NaN or Infinity"),
        ({"x": 2**64}, None),  # past what orjson writes: the standard library writes it
        ({"x": "\ud800"}, "a lone surrogate"),
        ({"x": "\x00"}, "NUL character"),
        ({1: "a", "b": 2}, "cannot be ordered"),
    ],
)
def test_encode_payload_refuses_or_defers_like_the_standard_library(
    value: dict, reason: str | None
) -> None:
    if reason is None:
        assert encode_payload(value) == stdlib(value)
        return
    with pytest.raises(TransformError, match=reason):
        encode_payload(value)


def test_a_payload_nested_past_orjsons_depth_is_written_by_the_standard_library() -> None:
    deep: Any = "leaf"
    for _ in range(300):  # orjson stops at 254 levels
        deep = [deep]

    assert encode_payload({"x": deep}) == stdlib({"x": deep})


def test_null_next_to_a_finite_float_is_not_taken_for_nan() -> None:
    value = {"a": None, "b": 0.5}

    assert encode_payload(value) == b'{"a":null,"b":0.5}'
    assert content_hash(value, 3) == content_hash({"b": 0.5, "a": None}, 3)
