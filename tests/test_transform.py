"""flatten_action: whole rows for typical, null-region, in-progress and minimal actions."""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from etl.errors import TransformError
from etl.model import content_hash
from etl.source.transform import flatten_action, parse_timestamp
from tests.support import spec

REGION = {
    "name": "New York 3",
    "slug": "nyc3",
    "sizes": ["s-1vcpu-1gb", "s-1vcpu-2gb"],
    "features": ["private_networking", "image_transfer"],
    "available": True,
}
TYPICAL = {
    "id": 3169590176,
    "status": "completed",
    "type": "transfer",
    "started_at": "2026-03-01T10:00:00Z",
    "completed_at": "2026-03-01T10:04:30Z",
    "resource_id": 7555620,
    "resource_type": "image",
    "region": REGION,
    "region_slug": "nyc3",
}


def canonical(value: object) -> str:
    """The JSON text earlier versions hashed: the standard library's, keys sorted, compact."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def test_flatten_action_lifts_region_into_columns() -> None:
    row = flatten_action(TYPICAL, image_id=7555620)

    assert row == {
        "id": 3169590176,
        "image_id": 7555620,
        "status": "completed",
        "type": "transfer",
        "started_at": datetime(2026, 3, 1, 10, 0, tzinfo=UTC),
        "completed_at": datetime(2026, 3, 1, 10, 4, 30, tzinfo=UTC),
        "resource_id": 7555620,
        "resource_type": "image",
        "region_slug": "nyc3",
        "region_name": "New York 3",
        "region_available": True,
        "region_features": ["private_networking", "image_transfer"],
        "region_sizes": ["s-1vcpu-1gb", "s-1vcpu-2gb"],
        "payload": TYPICAL,
        "payload_json": canonical(TYPICAL),
        "content_hash": content_hash(TYPICAL, 7555620),
    }


def test_flatten_action_with_null_region_gives_null_region_columns() -> None:
    raw = {**TYPICAL, "type": "image_destroy", "region": None, "region_slug": None}

    row = flatten_action(raw, image_id=1)

    assert {k: v for k, v in row.items() if k.startswith("region")} == {
        "region_slug": None,
        "region_name": None,
        "region_available": None,
        "region_features": None,
        "region_sizes": None,
    }
    assert row["payload"] is raw


def test_flatten_action_keeps_region_slug_when_region_is_null() -> None:
    raw = {**TYPICAL, "region": None, "region_slug": "ams3"}

    assert flatten_action(raw, image_id=1)["region_slug"] == "ams3"


def test_flatten_action_in_progress_has_no_completed_at() -> None:
    raw = {**TYPICAL, "status": "in-progress", "completed_at": None}

    row = flatten_action(raw, image_id=1)

    assert (row["status"], row["completed_at"]) == ("in-progress", None)


def test_flatten_action_minimal_action_gives_nulls() -> None:
    row = flatten_action({"id": 5}, image_id=9)

    assert row == {
        "id": 5,
        "image_id": 9,
        "status": None,
        "type": None,
        "started_at": None,
        "completed_at": None,
        "resource_id": None,
        "resource_type": None,
        "region_slug": None,
        "region_name": None,
        "region_available": None,
        "region_features": None,
        "region_sizes": None,
        "payload": {"id": 5},
        "payload_json": '{"id":5}',
        "content_hash": content_hash({"id": 5}, 9),
    }


def test_flatten_action_keeps_unknown_fields_in_payload() -> None:
    raw = {**TYPICAL, "brand_new_field": {"nested": [1, 2]}}

    assert flatten_action(raw, image_id=1)["payload"]["brand_new_field"] == {"nested": [1, 2]}


def test_content_hash_is_the_one_earlier_versions_stored() -> None:
    earlier = hashlib.blake2b(canonical([7555620, TYPICAL]).encode(), digest_size=16).hexdigest()

    assert content_hash(TYPICAL, 7555620) == earlier


def test_content_hash_changes_with_status_and_image_but_not_key_order() -> None:
    flipped = {**TYPICAL, "status": "errored"}
    reordered = dict(reversed(list(TYPICAL.items())))
    region_changed = {**TYPICAL, "region": {**REGION, "available": False}}
    field_added = {**TYPICAL, "brand_new_field": None}

    assert content_hash(TYPICAL, 1) != content_hash(flipped, 1)
    assert content_hash(TYPICAL, 1) != content_hash(TYPICAL, 2)
    assert content_hash(TYPICAL, 1) == content_hash(reordered, 1)
    assert content_hash(TYPICAL, 1) != content_hash(region_changed, 1)  # nested fields count
    assert content_hash(TYPICAL, 1) != content_hash(field_added, 1)  # so do unknown ones
    assert content_hash(TYPICAL, 1) == content_hash(copy.deepcopy(TYPICAL), 1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("2014-07-25T15:04:21Z", datetime(2014, 7, 25, 15, 4, 21, tzinfo=UTC), id="Z"),
        pytest.param(
            "2020-11-14 16:29:21+00:00", datetime(2020, 11, 14, 16, 29, 21, tzinfo=UTC), id="space"
        ),
        pytest.param(
            "2026-03-01T12:00:00+02:00", datetime(2026, 3, 1, 10, tzinfo=UTC), id="offset"
        ),
        pytest.param(
            "2026-03-01T10:00:00.123456Z",
            datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=UTC),
            id="fraction",
        ),
        pytest.param(
            "2026-03-01T10:00:00", datetime(2026, 3, 1, 10, tzinfo=UTC), id="naive-is-utc"
        ),
        pytest.param(None, None, id="null"),
    ],
)
def test_parse_timestamp_returns_aware_utc(text: str | None, expected: datetime | None) -> None:
    parsed = parse_timestamp(text, "started_at")

    assert parsed == expected
    assert parsed is None or parsed.utcoffset() == timedelta(0)


def test_parse_timestamp_result_is_utc_not_just_equal() -> None:
    parsed = parse_timestamp("2026-03-01T12:00:00+02:00", "t")

    assert parsed is not None
    assert parsed.tzinfo == UTC
    assert parsed.tzinfo != timezone(timedelta(hours=2))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param({"status": "completed"}, "id must be a whole number", id="no-id"),
        pytest.param({"id": "12"}, "id must be a whole number, not str", id="string-id"),
        pytest.param({"id": True}, "id must be a whole number", id="bool-id"),
        pytest.param({"id": 2**63}, r"outside 1..2\^63-1", id="id-too-big"),
        pytest.param({"id": -1}, r"outside 1..2\^63-1", id="negative-id"),
        pytest.param({"id": 1, "started_at": "yesterday"}, "not an ISO 8601", id="bad-time"),
        pytest.param({"id": 1, "started_at": 1700000000}, "ISO 8601 string", id="epoch-time"),
        pytest.param({"id": 1, "status": 3}, "status must be a string", id="int-status"),
        pytest.param({"id": 1, "type": "x" * 256}, "at most 255", id="long-type"),
        pytest.param({"id": 1, "region": "nyc3"}, "region must be an object", id="str-region"),
        pytest.param({"id": 1, "region": {"sizes": "s"}}, "list of strings", id="sizes-str"),
        pytest.param(
            {"id": 1, "region": {"sizes": ["s-1vcpu-1gb", 2]}}, "list of strings", id="sizes-int"
        ),
        pytest.param(
            {"id": 1, "region": {"features": [None]}}, "features must be", id="features-null"
        ),
        pytest.param(
            {"id": 1, "region": {"features": ["ipv6", ["nested"]]}}, "features", id="features-list"
        ),
        pytest.param({"id": 1, "region": {"available": "y"}}, "available must be", id="avail-str"),
        pytest.param({"id": 1, "resource_id": 1.5}, "resource_id must be", id="float-resource"),
        pytest.param([1, 2], "must be a JSON object", id="not-object"),
    ],
)
def test_flatten_action_rejects_bad_input_with_a_reason(raw: object, reason: str) -> None:
    with pytest.raises(TransformError, match=reason):
        flatten_action(raw, image_id=1)


@pytest.mark.parametrize(
    ("where", "action"), [pytest.param(w, a, id=w) for w, a in spec.action_examples()]
)
def test_flatten_action_accepts_every_spec_example(where: str, action: dict) -> None:
    row = flatten_action(action, image_id=7555620)

    assert row["id"] == action["id"]
    assert row["region_slug"] == action["region"]["slug"]
    assert row["started_at"] == datetime.fromisoformat(action["started_at"])


def test_spec_has_the_action_examples_we_expect() -> None:
    wheres = [where for where, _ in spec.action_examples()]

    assert len(wheres) >= 3
    assert any("GET /v2/images/{image_id}/actions 200" in where for where in wheres)


def test_flatten_action_accepts_the_spec_property_examples() -> None:
    action = spec.action_from_property_examples()

    row = flatten_action(action, image_id=1)

    assert row["started_at"] == datetime(2020, 11, 14, 16, 29, 21, tzinfo=UTC)
    assert row["region_sizes"] == action["region"]["sizes"]
