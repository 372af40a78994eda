"""Any JSON in, never an unhandled exception out: rows stored exactly, or dead letters."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete

from etl.errors import ApiError
from etl.fake import FakeApi, World
from etl.source.client import ApiClient
from etl.source.extract import iter_image_action_pages
from etl.source.reading import next_link, parse_total
from etl.store.load import upsert_actions
from etl.store.schema import image_actions
from etl.sync.pages import split_page
from tests.support.doubles import TOKEN
from tests.support.rows import as_stored, read_rows

NASTY_TEXT = st.sampled_from(
    ["", " ", "in-progress", "ünïcødé ✓", "😀" * 10, "x" * 255, "x" * 256, "\x00", "a\x00b",
     "\ud800", "\\u0000", "null", "' OR 1=1 --", "\u202e", "\n\r\t"]
)  # fmt: skip
TEXT = NASTY_TEXT | st.text(max_size=40)
IDS = st.sampled_from([1, 2**31 - 1, 2**31, 3169590176, 2**63 - 1, 2**63, 2**64, 0, -1]) | (
    st.integers(min_value=-(2**70), max_value=2**70)
)
TIMES = st.sampled_from(
    ["2014-07-25T15:04:21Z", "2020-11-14 16:29:21+00:00", "2026-03-01T12:00:00+05:30",
     "2026-03-01T10:00:00.123456Z", "2026-03-01T10:00:00.1234567Z", "0001-01-01T00:00:00Z",
     "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59Z", "9999-12-31T23:59:59-01:00",
     "2026-02-30T00:00:00Z", "yesterday", "", "2026-03-01T10:00:00"]
) | st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat())  # fmt: skip
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True) | TEXT,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(TEXT, inner, max_size=5),
    max_leaves=20,
)  # fmt: skip
REGIONS = (
    st.none()
    | st.fixed_dictionaries(
        {},
        optional={
            "slug": TEXT | JSON,
            "name": TEXT,
            "available": st.booleans() | JSON,
            "features": st.lists(TEXT, max_size=300) | JSON,
            "sizes": st.lists(TEXT, max_size=5),
        },
    )
    | JSON
)
ACTIONS = st.fixed_dictionaries(
    {"id": IDS | JSON},
    optional={
        "status": TEXT | JSON,
        "type": TEXT,
        "started_at": TIMES | JSON,
        "completed_at": TIMES | st.none(),
        "resource_id": IDS | st.none(),
        "resource_type": TEXT,
        "region": REGIONS,
        "region_slug": TEXT | st.none(),
        "brand_new_field": JSON,
    },
)


def check_split(raw: Any) -> tuple[list, list]:
    split = split_page([raw], 7, 1)
    rows, rejected = split.rows, split.rejected
    assert len(rows) + len(rejected) == 1
    for row in rows:
        assert isinstance(row["id"], int)
        assert 0 < row["id"] < 2**63
        assert row["payload"] is raw
        for name in ("started_at", "completed_at"):
            assert row[name] is None or row[name].tzinfo == UTC
    for item in rejected:
        assert item.reason.startswith("page 1 action 1: ")
        assert item.payload is raw
    return rows, rejected


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(raw=JSON)
def test_split_page_never_raises_on_any_json(raw: Any) -> None:
    check_split(raw)


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(raw=ACTIONS)
def test_split_page_never_raises_on_hostile_actions(raw: dict) -> None:
    check_split(raw)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(body=JSON)
def test_page_parsers_never_raise(body: Any) -> None:
    if isinstance(body, dict):
        link, total = next_link(body), parse_total(body)
        assert link is None or isinstance(link, str)
        assert total is None or (isinstance(total, int) and total >= 0)


class OneBodyApi(FakeApi):
    """A fake that answers every authorized GET with ``body``, whatever was asked."""

    def __init__(self) -> None:
        super().__init__(World(), token=TOKEN)
        self.body: Any = None

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, Any]:
        """Return ``body`` as a 200 answer."""
        return 200, self.body


@pytest.fixture
def one_body_api() -> Iterator[OneBodyApi]:
    with OneBodyApi() as fake:
        yield fake


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=JSON | st.fixed_dictionaries({"actions": st.lists(ACTIONS, max_size=3)}, optional={
    "links": JSON, "meta": JSON}))  # fmt: skip
@pytest.mark.slow
def test_pages_over_http_are_pages_or_clear_errors(one_body_api: OneBodyApi, body: Any) -> None:
    api = one_body_api
    api.body = body
    client = ApiClient(base_url=api.url, token=TOKEN, max_attempts=1)
    message = None
    try:
        pages = list(iter_image_action_pages(client, 1, per_page=200))
    except ApiError as exc:  # PaginationError included
        message = str(exc)
    else:
        assert all(isinstance(page.items, list) for page in pages)
    finally:
        client.close()
    assert message is None or message.startswith(("image 1", "GET /v2/images/1/actions"))


def stored_or_rejected(engine: Engine, raw: dict) -> None:
    with engine.begin() as conn:
        conn.execute(delete(image_actions))
    rows, rejected = check_split(raw)
    now = datetime(2026, 11, 27, tzinfo=UTC)
    with engine.begin() as conn:
        upsert_actions(conn, rows, now=now)
    stored = read_rows(engine)
    assert stored == [as_stored(row, now) for row in rows]
    if stored:  # the payload reads back as the very JSON the API sent
        assert json.dumps(stored[0]["payload"], sort_keys=True) == json.dumps(raw, sort_keys=True)
    assert bool(rejected) == (not stored)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=ACTIONS)
def test_hostile_actions_are_stored_exactly_or_rejected(engine: Engine, raw: dict) -> None:
    stored_or_rejected(engine, raw)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param({"id": 2**63 - 1, "type": "x" * 255}, id="max-id-and-longest-type"),
        pytest.param({"id": 5, "type": "😀" * 255, "status": ""}, id="emoji-and-empty"),
        pytest.param({"id": 6, "started_at": "0001-01-01T00:00:00Z"}, id="year-1"),
        pytest.param({"id": 7, "started_at": "9999-12-31T23:59:59.999999Z"}, id="year-9999"),
        pytest.param({"id": 8, "extra": [0] * 20000, "big": 2**80, "f": 1e308}, id="huge-array"),
        pytest.param({"id": 9, "region": {"features": ["f"] * 5000}}, id="huge-features"),
        pytest.param({"id": 10, "note": "\\u0000 is text"}, id="escaped-nul-as-text"),
    ],
)
def test_extreme_values_are_stored_exactly(engine: Engine, raw: dict) -> None:
    stored_or_rejected(engine, raw)

    assert len(read_rows(engine)) == 1


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({"id": 1, "type": "a\x00b"}, "type holds a NUL character"),
        ({"id": 1, "note": "\x00"}, "holds a NUL character, which PostgreSQL cannot store"),
        ({"id": 1, "note": "\ud800"}, "a lone surrogate"),
        ({"id": 1, "note": math.inf}, "NaN or Infinity"),
        ({"id": 1, "started_at": "0001-01-01T00:00:00+01:00"}, "outside the years 1-9999"),
        ({"id": 1, "type": "x" * 256}, "at most 255 fit"),
    ],
)
def test_unstorable_values_are_rejected_with_a_reason(raw: dict, reason: str) -> None:
    _, [rejected] = check_split(raw)

    assert reason in rejected.reason
