"""upsert_actions on SQLite, PostgreSQL and MariaDB, on databases built by the migrations."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, text

from etl.source.transform import flatten_action
from etl.store.load import UpsertCounts, upsert_actions
from tests.support.rows import read_rows

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 1, 12, 5, 30, 250000, tzinfo=UTC)


def action(action_id: int, status: str = "completed", **extra: object) -> dict:
    return {
        "id": action_id,
        "status": status,
        "type": "transfer",
        "started_at": "2026-10-31T23:59:59.123456Z",
        "completed_at": None if status == "in-progress" else "2026-11-01T00:10:00Z",
        "resource_id": 2**40 + 1,
        "resource_type": "image",
        "region": {
            "name": "Amsterdam 3",
            "slug": "ams3",
            "sizes": ["s-1vcpu-1gb"],
            "features": ["ipv6"],
            "available": True,
        },
        "region_slug": "ams3",
        **extra,
    }


def upsert(engine: Engine, raws: list[dict], now: datetime, image_id: int = 7) -> UpsertCounts:
    rows = [flatten_action(raw, image_id=image_id) for raw in raws]
    with engine.begin() as conn:
        return upsert_actions(conn, rows, now=now)


def test_upsert_actions_inserts_whole_rows(engine: Engine) -> None:
    raw = action(3169590176)

    counts = upsert(engine, [raw], T0)

    assert counts == UpsertCounts(inserted=1, updated=0, unchanged=0)
    assert read_rows(engine) == [
        {
            **flatten_action(raw, image_id=7),
            "first_seen_at": T0,
            "changed_at": T0,
            "missing_since": None,
        }
    ]


def test_upsert_actions_keeps_fractions_and_utc(engine: Engine) -> None:
    upsert(engine, [action(1)], T1)

    [row] = read_rows(engine)

    assert row["started_at"] == datetime(2026, 10, 31, 23, 59, 59, 123456, tzinfo=UTC)
    assert row["changed_at"] == T1
    assert row["changed_at"].tzinfo == UTC


def test_upsert_actions_updates_a_status_change(engine: Engine) -> None:
    upsert(engine, [action(1, "in-progress"), action(2)], T0)

    counts = upsert(engine, [action(1, "completed"), action(2)], T1)

    assert counts == UpsertCounts(inserted=0, updated=1, unchanged=1)
    first, second = read_rows(engine)
    assert (first["status"], first["first_seen_at"], first["changed_at"]) == ("completed", T0, T1)
    assert first["payload"] == action(1, "completed")
    assert (second["first_seen_at"], second["changed_at"]) == (T0, T0)


def test_upsert_actions_leaves_unchanged_rows_untouched(engine: Engine) -> None:
    upsert(engine, [action(1), action(2)], T0)
    before = read_rows(engine)
    versions = row_versions(engine)

    counts = upsert(engine, [action(1), action(2)], T1)

    assert counts == UpsertCounts(inserted=0, updated=0, unchanged=2)
    assert read_rows(engine) == before
    assert row_versions(engine) == versions


def row_versions(engine: Engine) -> list[str] | None:
    """PostgreSQL's xmin changes whenever a row is rewritten, even to the same values."""
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:
        return [str(v) for v in conn.execute(text("SELECT xmin FROM image_actions ORDER BY id"))]


def test_upsert_actions_folds_duplicate_ids_in_one_batch(engine: Engine) -> None:
    counts = upsert(engine, [action(1, "in-progress"), action(2), action(1, "completed")], T0)

    assert counts == UpsertCounts(inserted=2, updated=0, unchanged=0)
    assert [row["status"] for row in read_rows(engine)] == ["completed", "completed"]


def test_upsert_actions_stores_ids_past_32_and_up_to_63_bits(engine: Engine) -> None:
    ids = [2**31 + 1, 3169590176, 2**63 - 1]

    upsert(engine, [action(i) for i in ids], T0, image_id=2**62)

    rows = read_rows(engine)
    assert [row["id"] for row in rows] == ids
    assert {row["image_id"] for row in rows} == {2**62}
    assert {row["resource_id"] for row in rows} == {2**40 + 1}


def test_upsert_actions_keeps_an_action_under_the_image_that_listed_it_first(
    engine: Engine,
) -> None:
    upsert(engine, [action(1)], T0, image_id=7)

    again = upsert(engine, [action(1)], T1, image_id=8)
    changed = upsert(engine, [action(1, status="errored")], T1, image_id=8)

    assert again == UpsertCounts(inserted=0, updated=0, unchanged=1, elsewhere=1)
    assert changed == UpsertCounts(inserted=0, updated=1, unchanged=0, elsewhere=1)
    [row] = read_rows(engine)
    assert (row["image_id"], row["status"]) == (7, "errored")
    assert (
        row["content_hash"]
        == flatten_action(action(1, status="errored"), image_id=7)["content_hash"]
    )


def test_upsert_actions_stores_null_region_and_unicode(engine: Engine) -> None:
    raw = action(1, region=None, region_slug=None, type="transfer-ü-✓", note="ünïcødé ✓")

    upsert(engine, [raw], T0)

    [row] = read_rows(engine)
    assert (row["region_slug"], row["region_features"], row["type"]) == (None, None, "transfer-ü-✓")
    assert row["payload"] == raw


def test_upsert_actions_with_no_rows_does_nothing(engine: Engine) -> None:
    assert upsert(engine, [], T0) == UpsertCounts()
    assert read_rows(engine) == []
