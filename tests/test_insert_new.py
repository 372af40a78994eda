"""Pages likely new are inserted without a read first, and never at the cost of a wrong row."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

from etl.fake import FakeApi, World
from etl.source.transform import flatten_action
from etl.store.load import UpsertCounts, insert_new_actions, upsert_actions
from etl.store.schema import image_actions
from etl.sync import image_scan
from tests.support.databases import DIALECT_PARAMS
from tests.support.oracle import expected_row, expected_table
from tests.support.rows import read_rows, without_bookkeeping
from tests.support.runs import sync
from tests.test_load import action

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 1, 12, 5, 30, 250000, tzinfo=UTC)
INSERTS_NEW = ("sqlite", "postgresql")  # the drivers that insert without a read


def rows_of(*ids: int, image_id: int = 7) -> list[Any]:
    return [flatten_action(action(i), image_id=image_id) for i in ids]


def stored_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(image_actions)).scalar_one()


def test_new_rows_are_inserted_as_the_upsert_writes_them(engine: Engine) -> None:
    with engine.begin() as conn:
        counts = insert_new_actions(conn, rows_of(1, 2, 3), now=T1)

    if engine.dialect.name not in INSERTS_NEW:
        assert counts is None
        assert stored_count(engine) == 0
        return
    assert counts == UpsertCounts(inserted=3)
    inserted = read_rows(engine)
    with engine.begin() as conn:
        conn.execute(image_actions.delete())
        upsert_actions(conn, rows_of(1, 2, 3), now=T1)
    assert inserted == read_rows(engine)
    assert {row["first_seen_at"] for row in inserted} == {T1}
    assert {row["missing_since"] for row in inserted} == {None}


def test_a_page_listing_an_action_twice_inserts_it_once(engine: Engine) -> None:
    with engine.begin() as conn:
        counts = insert_new_actions(conn, rows_of(1, 2, 1), now=T1)

    if engine.dialect.name in INSERTS_NEW:
        assert counts == UpsertCounts(inserted=2)
        assert [row["id"] for row in read_rows(engine)] == [1, 2]


@pytest.mark.parametrize("before", [True, False], ids=["after-a-write", "first-write"])
def test_a_stored_id_among_new_rows_writes_none_of_them(engine: Engine, before: bool) -> None:
    """The rows are then compared as ever, and the transaction goes on: the stored one stays.

    After a write, PostgreSQL's copy rolls back to its savepoint; as the transaction's first
    write, the whole transaction, which held nothing else.
    """
    with engine.begin() as conn:
        upsert_actions(conn, rows_of(13), now=T0)
    with engine.begin() as conn:
        if before:
            upsert_actions(conn, rows_of(11), now=T1)  # written before, in the same transaction
        assert insert_new_actions(conn, rows_of(12, 13, 14), now=T1) is None
        stored = conn.execute(select(func.count()).select_from(image_actions)).scalar_one()
        assert stored == (2 if before else 1)
        counts = upsert_actions(conn, rows_of(12, 13, 14), now=T1)
        upsert_actions(conn, rows_of(15), now=T1)

    assert counts == UpsertCounts(inserted=2, unchanged=1)
    rows = read_rows(engine)
    assert [(row["id"], row["changed_at"]) for row in rows] == [
        *([(11, T1)] if before else []),
        (12, T1),
        (13, T0),
        (14, T1),
        (15, T1),
    ]


@pytest.mark.parametrize("database_url", DIALECT_PARAMS[1:2], indirect=True)  # PostgreSQL
def test_new_rows_that_open_their_transaction_are_copied_in_without_a_savepoint(
    engine: Engine,
) -> None:
    """A savepoint is taken only when the transaction holds something a rollback would undo.

    A row written under a savepoint carries its subtransaction's id (xmin), not the
    transaction's own.
    """
    with engine.begin() as conn:
        insert_new_actions(conn, rows_of(1), now=T1)  # its first statement
        insert_new_actions(conn, rows_of(2), now=T1)  # after a write: under a savepoint
        own = conn.execute(text("SELECT txid_current() % 4294967296")).scalar_one()
        xmin = dict(conn.execute(text("SELECT id, xmin::text::bigint FROM image_actions")).all())

    assert xmin[1] == own
    assert xmin[2] != own
    assert stored_count(engine) == 2


def test_a_page_larger_than_one_sqlite_statement_is_left_to_the_upsert(engine: Engine) -> None:
    with engine.begin() as conn:
        counts = insert_new_actions(conn, rows_of(*range(1, 202)), now=T1)

    if engine.dialect.name == "postgresql":  # COPY takes any number
        assert counts == UpsertCounts(inserted=201)
        assert stored_count(engine) == 201
    else:
        assert counts is None
        assert stored_count(engine) == 0


@pytest.mark.parametrize("database_url", DIALECT_PARAMS[:2], indirect=True)  # INSERTS_NEW
def test_an_error_that_is_no_stored_id_is_raised(engine: Engine) -> None:
    """Only a stored id sends the page back to be read; any other error is the run's."""
    row = {**rows_of(9)[0], "content_hash": None}  # NOT NULL

    with pytest.raises(Exception, match=r"(?i)null"), engine.begin() as conn:
        insert_new_actions(conn, [row], now=T0)

    assert stored_count(engine) == 0


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The ids of each page the scans read the stored rows of."""
    calls: list[list[int]] = []
    real = image_scan.read_stored

    def counted(conn: Any, ids: Any) -> Any:
        calls.append(list(ids))
        return real(conn, ids)

    monkeypatch.setattr(image_scan, "read_stored", counted)
    return calls


def test_a_first_sync_reads_none_of_its_pages_stored_rows(
    api: FakeApi, world: World, database_url: str, engine: Engine, reads: list[list[int]]
) -> None:
    run = sync(api, database_url)

    assert run.outcome == "succeeded"
    assert without_bookkeeping(read_rows(engine)) == expected_table(world)
    assert run.counts == UpsertCounts(inserted=len(expected_table(world)))
    assert sum(image.pages for image in run.images) == 9
    assert len(reads) == (0 if engine.dialect.name in INSERTS_NEW else 9)
    reads.clear()
    world.add_actions(next(iter(world.actions)), 2)
    again = sync(api, database_url)
    assert (again.counts.inserted, again.counts.updated) == (2, 0)
    assert len(reads) == 1  # a page of an image synced complete is read first


def test_a_new_page_holding_an_action_stored_under_another_image_is_compared(
    api: FakeApi, world: World, database_url: str, engine: Engine, reads: list[list[int]]
) -> None:
    """The page's insert meets the stored id: nothing of it is written, and the page is
    read and compared as ever: the action keeps its owner, counted once; so is the next
    page of that image, whose insert would be likely to meet one too."""
    first, second = list(world.actions)[:2]
    shared = dict(world.actions[first][0])
    world.actions[second].insert(25, dict(shared))  # on the second's page 2 of 3

    run = sync(api, database_url, workers=1)  # the first image is stored first

    assert run.outcome == "succeeded"
    distinct = {a["id"] for actions in world.actions.values() for a in actions}
    rows = read_rows(engine)
    assert [row["id"] for row in rows] == sorted(distinct)
    assert next(row["image_id"] for row in rows if row["id"] == shared["id"]) == first
    assert run.counts.inserted == len(distinct)
    assert run.counters()["rows_listed_elsewhere"] == 1
    if engine.dialect.name in INSERTS_NEW:  # the second image's page 2, then its page 3
        assert len(reads) == 2
        assert shared["id"] in reads[0]
    expected = {row["id"]: row for row in expected_table(world)}
    expected[shared["id"]] = expected_row(first, shared)
    assert without_bookkeeping(rows) == [expected[i] for i in sorted(distinct)]


def test_an_action_stored_by_hand_before_a_first_sync_is_compared(
    api: FakeApi, world: World, database_url: str, engine: Engine
) -> None:
    image = next(iter(world.actions))
    listed = world.actions[image][3]
    changed = {**listed, "status": "errored"}
    with engine.begin() as conn:
        upsert_actions(conn, [flatten_action(changed, image_id=image)], now=T0)

    run = sync(api, database_url)

    assert run.outcome == "succeeded"
    assert run.counts.inserted == len(expected_table(world)) - 1
    assert run.counts.updated == 1
    assert without_bookkeeping(read_rows(engine)) == expected_table(world)
