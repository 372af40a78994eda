"""upsert_actions on SQLite, PostgreSQL and MariaDB, on databases built by the migrations."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, delete, event, func, inspect, select, text, update
from sqlalchemy.exc import DBAPIError, StatementError

from etl.source.transform import flatten_action
from etl.store import bulk, ledger, load
from etl.store.bulk import bulk_writer
from etl.store.database import open_engine
from etl.store.load import UpsertCounts, upsert_actions, write_rows
from etl.store.migrate import upgrade
from etl.store.schema import NO_LISTED_INDEX, image_actions
from etl.store.upsert import execute_upsert
from tests.support.rows import as_stored, read_rows

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
    assert read_rows(engine) == [as_stored(flatten_action(raw, image_id=7), T0)]


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


def raw_table(engine: Engine) -> list[tuple]:
    """Every image_actions row as the database holds it, JSON columns parsed."""
    json_columns = {"region_features", "region_sizes", "payload"}
    with engine.connect() as conn:
        result = conn.exec_driver_sql("SELECT * FROM image_actions ORDER BY id")
        names = list(result.keys())
        return [
            tuple(
                json.loads(value) if name in json_columns and isinstance(value, str) else value
                for name, value in zip(names, row, strict=True)
            )
            for row in result
        ]


@pytest.mark.parametrize("new", [False, True], ids=["upserted", "new"])
def test_the_bulk_write_stores_what_sqlalchemys_statement_stores(engine: Engine, new: bool) -> None:
    raws = [
        action(1),
        action(2, "in-progress", region=None, region_slug=None),
        action(3, started_at="0001-01-01T00:00:00Z", completed_at="9999-12-31T23:59:59.999999Z"),
        action(4, type="ünïcødé ✓ 😀", region={"slug": "x", "features": [], "available": False}),
    ]
    rows = [flatten_action(raw, image_id=7) for raw in raws]
    stamped = [as_stored(row, T1) for row in rows]
    with engine.begin() as conn:
        execute_upsert(conn, stamped, image_actions)  # SQLAlchemy's statement and binds
    through_sqlalchemy, sql_nulls_before = raw_table(engine), sql_nulls(engine)
    with engine.begin() as conn:
        conn.execute(delete(image_actions))
        write_rows(conn, rows, now=T1, new=new)  # the driver's bulk path

    assert bulk_writer_in_use(engine)
    assert raw_table(engine) == through_sqlalchemy
    assert read_rows(engine) == stamped
    assert sql_nulls(engine) == sql_nulls_before  # a missing list is JSON null, not SQL NULL


def sql_nulls(engine: Engine) -> list[int]:
    """How many rows hold SQL NULL (not JSON null) in each JSON column."""
    with engine.connect() as conn:
        return [
            conn.execute(select(func.count()).where(column.is_(None))).scalar_one()
            for column in (image_actions.c.region_features, image_actions.c.region_sizes)
        ]


def bulk_writer_in_use(engine: Engine) -> bool:
    """Whether the dialect's writes take the driver's path (DuckDB's take SQLAlchemy's)."""
    with engine.connect() as conn:
        return (bulk_writer(conn) is not None) == (engine.dialect.name != "duckdb")


def test_the_bulk_write_leaves_a_row_with_the_same_fingerprint_untouched(engine: Engine) -> None:
    """The statement's own change test, without upsert_actions' read before it."""
    row = flatten_action(action(5), image_id=7)
    with engine.begin() as conn:
        write_rows(conn, [row], now=T0)
    with engine.begin() as conn:
        write_rows(conn, [row], now=T1)  # same fingerprint, not missing: not rewritten
    assert read_rows(engine)[0]["changed_at"] == T0

    changed = flatten_action(action(5, "errored"), image_id=7)
    with engine.begin() as conn:
        write_rows(conn, [changed], now=T1)
    assert [(r["status"], r["first_seen_at"], r["changed_at"]) for r in read_rows(engine)] == [
        ("errored", T0, T1)
    ]


def test_the_bulk_write_clears_missing_since_of_an_unchanged_row(engine: Engine) -> None:
    row = flatten_action(action(6), image_id=7)
    with engine.begin() as conn:
        write_rows(conn, [row], now=T0)
        conn.execute(update(image_actions).values(missing_since=T0))
    with engine.begin() as conn:
        write_rows(conn, [row], now=T1)

    assert [(r["missing_since"], r["changed_at"]) for r in read_rows(engine)] == [(None, T1)]


def test_bulk_writes_in_one_transaction_and_after_a_rollback(engine: Engine) -> None:
    first, changed, other = (
        flatten_action(action(7), image_id=7),
        flatten_action(action(7, "errored"), image_id=7),
        flatten_action(action(8), image_id=7),
    )
    with engine.connect() as conn:
        with conn.begin() as transaction:
            write_rows(conn, [first], now=T0)
            transaction.rollback()  # on PostgreSQL this also undoes the staging table
        with conn.begin():
            write_rows(conn, [first], now=T0)
            write_rows(conn, [changed], now=T1)
            write_rows(conn, [other], now=T1)  # no batch before it is staged again

    assert [(r["id"], r["status"], r["changed_at"]) for r in read_rows(engine)] == [
        (7, "errored", T1),
        (8, "completed", T1),
    ]


def test_new_rows_are_written_without_staging_them(engine: Engine) -> None:
    """PostgreSQL copies rows none of which is stored straight into the table."""
    rows = [flatten_action(action(i), image_id=7) for i in (11, 12)]
    with engine.begin() as conn:
        counts = upsert_actions(conn, rows, now=T0)  # its read finds neither: both new
        staged = staging_table(conn)

    assert counts == UpsertCounts(inserted=2)
    assert read_rows(engine) == [as_stored(row, T0) for row in rows]
    assert staged is None


def staging_table(conn: Connection) -> str | None:
    """The name of PostgreSQL's staging table if this session made it (None elsewhere)."""
    if conn.dialect.name != "postgresql":
        return None
    return conn.execute(text("SELECT to_regclass('pg_temp.image_actions_incoming')")).scalar()


def test_the_new_rows_of_a_page_are_written_without_staging_them(engine: Engine) -> None:
    """A page of new rows and unchanged ones writes the new ones only: they are all new."""
    upsert(engine, [action(21)], T0)
    rows = [flatten_action(action(i), image_id=7) for i in (21, 22)]
    with engine.begin() as conn:
        counts = upsert_actions(conn, rows, now=T1)
        staged = staging_table(conn)

    assert counts == UpsertCounts(inserted=1, unchanged=1)
    assert [(r["id"], r["changed_at"]) for r in read_rows(engine)] == [(21, T0), (22, T1)]
    assert staged is None


def test_a_transaction_copies_new_rows_in_under_one_savepoint(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Savepoints do not pile up in a transaction that writes more than once."""
    copied: list[bool] = []
    copied_in = bulk._copied_in

    def counted(*args: object) -> bool:
        copied.append(copied_in(*args))  # type: ignore[arg-type]
        return copied[-1]

    monkeypatch.setattr(bulk, "_copied_in", counted)
    with engine.connect() as conn:
        with conn.begin():
            write_rows(conn, [flatten_action(action(31), image_id=7)], now=T0, new=True)
            write_rows(conn, [flatten_action(action(32), image_id=7)], now=T0, new=True)
        with conn.begin():
            write_rows(conn, [flatten_action(action(33), image_id=7)], now=T0, new=True)

    assert [r["id"] for r in read_rows(engine)] == [31, 32, 33]
    # 31 and 33 open their transactions (no savepoint), 32 takes the first one's only one,
    # and a second write after a savepoint would be staged (see test_insert_new).
    assert copied == ([True, True, True] if engine.dialect.name == "postgresql" else [])


def test_rows_taken_for_new_that_one_stored_meanwhile_are_upserted(engine: Engine) -> None:
    """A row stored between a page's read and its write (by hand, say) is not an error.

    On PostgreSQL the copy's unique violation rolls back to its savepoint: what the
    transaction wrote before it stays, and the rows are upserted, the stored one untouched.
    """
    stored = flatten_action(action(13), image_id=7)
    with engine.begin() as conn:
        write_rows(conn, [stored], now=T0)
    versions = row_versions(engine)
    earlier, new = (flatten_action(action(i), image_id=7) for i in (12, 14))
    with engine.begin() as conn:
        write_rows(conn, [earlier], now=T1, new=True)
        write_rows(conn, [stored, new], now=T1, new=True)  # 13 is stored after all

    rows = read_rows(engine)
    assert [(r["id"], r["changed_at"]) for r in rows] == [(12, T1), (13, T0), (14, T1)]
    after = row_versions(engine)
    assert versions is None or (after is not None and after[1] == versions[0])  # not rewritten


@pytest.mark.parametrize("new", [False, True], ids=["upserted", "new"])
def test_a_driver_error_in_the_bulk_write_is_sqlalchemys_error(engine: Engine, new: bool) -> None:
    """The run turns SQLAlchemy's errors into one sentence; COPY's must arrive as one too."""
    row = {**flatten_action(action(9), image_id=7), "content_hash": None}  # NOT NULL

    with pytest.raises(DBAPIError) as raised, engine.begin() as conn:
        write_rows(conn, [row], now=T0, new=new)  # type: ignore[list-item]

    if new and engine.dialect.name == "postgresql":  # the copy's own error, not the upsert's
        assert str(raised.value.statement).startswith("COPY image_actions (")

    assert read_rows(engine) == []


def test_the_bulk_write_refuses_a_naive_time_rather_than_guess_its_zone(engine: Engine) -> None:
    naive = datetime(2026, 11, 1, 12)  # noqa: DTZ001  (the point of the test)
    row = {**flatten_action(action(10), image_id=7), "started_at": naive}

    with pytest.raises((ValueError, StatementError), match="naive"), engine.begin() as conn:
        write_rows(conn, [row], now=T0)  # type: ignore[list-item]


def test_sqlite_splits_a_page_past_its_variable_limit_into_several_statements(
    tmp_path: Path,
) -> None:
    """One multi-row INSERT a page, or as many as SQLite's limit on parameters needs."""
    engine = open_engine(f"sqlite:///{tmp_path / 'limited.db'}")
    upgrade(engine)
    rows = [flatten_action(action(action_id), image_id=7) for action_id in range(1, 8)]
    statements: list[str] = []
    with engine.begin() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        driver.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 3 * 18)  # three rows a statement
        driver.set_trace_callback(statements.append)
        write_rows(conn, rows, now=T0)
        driver.set_trace_callback(None)

    assert [statement.count("), (") + 1 for statement in statements] == [3, 3, 1]
    assert read_rows(engine) == [as_stored(row, T0) for row in rows]
    engine.dispose()


def test_sqlite_reports_a_variable_limit_below_one_row_as_a_database_error(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'tiny.db'}")
    upgrade(engine)
    rows = [flatten_action(action(1), image_id=7)]
    with engine.connect() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        driver.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 10)  # not even one row's 18
        with pytest.raises(DBAPIError, match="too many SQL variables"):
            write_rows(conn, rows, now=T0)
    engine.dispose()


@pytest.mark.parametrize("has_json", [True, False], ids=["json_each", "in-list"])
def test_sqlite_reads_stored_fingerprints_with_or_without_its_json_functions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, has_json: bool
) -> None:
    """SQLite builds before 3.38 may leave the JSON functions out: IN (...) reads the same."""
    monkeypatch.setattr(load, "sqlite_has_json", lambda: has_json)
    engine = open_engine(f"sqlite:///{tmp_path / 'read.db'}")
    upgrade(engine)
    raws = [action(action_id) for action_id in (1, 2, 2**63 - 1)]
    upsert(engine, raws, T0)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))

    counts = upsert(engine, [*raws, action(3)], T1)

    assert counts == UpsertCounts(inserted=1, updated=0, unchanged=3)
    assert any("json_each" in statement for statement in statements) == has_json
    engine.dispose()


def test_a_page_read_of_stored_fingerprints_is_one_statement_whatever_its_size(
    engine: Engine,
) -> None:
    """SQLite and PostgreSQL pass every id as one parameter: one statement text for any page."""
    raws = [action(action_id) for action_id in (1, 2, 2**63 - 1)]
    upsert(engine, raws, T0)
    with engine.begin() as conn:
        conn.execute(update(image_actions).where(image_actions.c.id == 2).values(missing_since=T1))
    statements: list[str] = []
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")  # SQLite's BEGIN, before the statements are counted
        note = lambda *args: statements.append(args[2])  # noqa: E731
        event.listen(conn, "before_cursor_execute", note)
        few = load.read_stored(conn, [1, 2])
        many = load.read_stored(conn, [1, 2, 2**63 - 1, *range(10, 400)])
        event.remove(conn, "before_cursor_execute", note)
        assert load.read_stored(conn, []) == {}

    assert sorted(few) == [1, 2]
    assert sorted(many) == [1, 2, 2**63 - 1]
    assert {found.image_id for found in many.values()} == {7}
    assert [found.missing for found in many.values()] == [action_id == 2 for action_id in many]
    hashes = {found.id: found.content_hash for found in many.values()}
    with engine.connect() as conn:
        assert hashes == dict(
            conn.execute(select(image_actions.c.id, image_actions.c.content_hash)).all()
        )
    assert len(statements) == 2
    if engine.dialect.name in ("sqlite", "postgresql", "mysql", "mariadb"):  # not DuckDB
        assert statements[0] == statements[1]
    if engine.dialect.name == "sqlite":  # one row back, not one GIL handover a row
        assert "json_group_array" in statements[0]


@pytest.mark.parametrize("has_json", [True, False], ids=["json", "rows"])
def test_mark_missing_marks_only_the_stored_actions_a_complete_scan_lacks(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, has_json: bool
) -> None:
    """SQLite reads the image's ids as one JSON array where it can; every form marks the same."""
    monkeypatch.setattr(ledger, "sqlite_has_json", lambda: has_json)
    upsert(engine, [action(action_id) for action_id in (1, 2, 3, 2**63 - 1)], T0)
    upsert(engine, [action(4)], T0, image_id=8)  # another image's: never this scan's to mark
    with engine.begin() as conn:
        conn.execute(update(image_actions).where(image_actions.c.id == 3).values(missing_since=T0))

    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))

    with engine.begin() as conn:
        gone = [i for i in ledger.listed_hashes(conn, 7) if i != 1]
        marked = ledger.mark_missing(conn, 7, gone, now=T1)

    one_row = has_json and engine.dialect.name == "sqlite"
    assert any("json_group_array" in statement for statement in statements) == one_row
    assert marked == 2  # 2 and 2^63-1; 3 was marked before, and keeps its mark's time
    with engine.connect() as conn:
        found = conn.execute(select(image_actions.c.id, image_actions.c.missing_since)).all()
    assert dict(found) == {
        1: None, 2: T1, 3: T0, 4: None, 2**63 - 1: T1
    }  # fmt: skip


def test_an_images_listed_actions_are_read_from_an_index_alone(engine: Engine) -> None:
    """No table row is read per action: a --full run reads every image's this way.

    PostgreSQL (whose planner reads an index alone only once VACUUM has marked the
    table's pages visible) and DuckDB (whose planner scans the table) have no such index.
    """
    dialect = engine.dialect.name
    indexes = {index["name"] for index in inspect(engine).get_indexes("image_actions")}
    assert ("ix_image_actions_listed" in indexes) == (dialect not in NO_LISTED_INDEX)
    upsert(engine, [action(action_id) for action_id in range(10, 40)], T0)
    with engine.connect() as conn:
        if dialect == "sqlite":
            plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + ledger._LISTED_SQLITE, (7,))
            assert "COVERING INDEX ix_image_actions_listed" in str(plan.all())
        elif dialect in ("mysql", "mariadb"):
            row = conn.exec_driver_sql("EXPLAIN " + ledger._LISTED_MARIADB, (7,)).mappings().one()
            assert row["key"] == "ix_image_actions_listed"
            assert "Using index" in row["Extra"]  # the index alone


@pytest.mark.parametrize(
    "written",
    [
        {10: 'x"],[11,"y', 11: "a", 12: "b"},  # one pair more, an id twice
        {10: 'x",1', 11: 'a"],[12', 12: "b"},
        {10: "x\\", 11: "a", 12: "b"},
        {10: '"', 11: "", 12: "],["},
        {10: "x\\", 11: '],[12,"z', 13: "ok"},  # 11 swallowed, 12 made up: the count holds
        {10: "x\\", 11: '],[11,"z'},  # the ids hold, the fingerprints do not
    ],
    ids=["an-id-twice", "a-number", "a-backslash", "brackets", "a-made-up-id", "bent"],
)
def test_fingerprints_written_by_hand_are_read_as_stored(
    engine: Engine, written: dict[int, str]
) -> None:
    """Quotes, brackets and backslashes in a fingerprint never bend what is read."""
    upsert(engine, [action(action_id) for action_id in written], T0)
    with engine.begin() as conn:
        for action_id, fingerprint in written.items():
            conn.execute(
                update(image_actions)
                .where(image_actions.c.id == action_id)
                .values(content_hash=fingerprint)
            )

    with engine.connect() as conn:
        assert ledger.listed_hashes(conn, 7) == written


def test_an_images_stored_fingerprints_are_read_whole_however_they_come(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MariaDB answers with the rows as JSON pairs run together, MySQL with one JSON array
    (its form, run here on MariaDB too); group_concat_max_len can cut either short: after
    a whole pair (valid JSON that lacks rows), or within one (none). Either way the rows
    are read again.
    """
    upsert(engine, [action(action_id) for action_id in range(10, 40)], T0)
    upsert(engine, [action(100)], T0, image_id=8)
    with engine.connect() as conn:
        stored = conn.execute(
            select(image_actions.c.id, image_actions.c.content_hash).where(
                image_actions.c.image_id == 7
            )
        ).all()
    assert len(stored) == 30
    mysql = engine.dialect.name in ("mysql", "mariadb")
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))

    for server in ("mariadb", "mysql") if mysql else ("",):
        if mysql:
            monkeypatch.setattr(engine.dialect, "is_mariadb", server == "mariadb")
        form = ledger._LISTED_MARIADB if server == "mariadb" else ledger._LISTED_MYSQL
        short_but_valid = 0
        with engine.connect() as conn:
            if mysql:  # the pooled session may keep the last loop's limit
                conn.exec_driver_sql("SET SESSION group_concat_max_len = DEFAULT")
            statements.clear()
            assert ledger.listed_hashes(conn, 7) == dict(stored)
            for limit in range(200, 400) if mysql else ():
                conn.exec_driver_sql(f"SET SESSION group_concat_max_len = {limit}")
                assert ledger.listed_hashes(conn, 7) == dict(stored), (server, limit)
                cut = conn.exec_driver_sql(form, (7,)).one()[2]
                text = f"[{cut}]" if server == "mariadb" else cut
                with contextlib.suppress(ValueError):
                    short_but_valid += 0 < len(json.loads(text)) < len(stored)
        if mysql:
            assert ("GROUP_CONCAT" if server == "mariadb" else "JSON_ARRAYAGG") in statements[0]
            assert len(statements) == 1 + 200 * 4  # the rows read again after each cut
            assert short_but_valid > 0, server  # strings that lack rows and say nothing
