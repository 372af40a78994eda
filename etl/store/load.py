"""Write rows with each dialect's native upsert; never creates tables."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Connection, select

from etl.errors import DatabaseError
from etl.model import hash_payload
from etl.ready import CONTENT_HASH, ID, IMAGE_ID, Row, owned_by
from etl.store.bulk import bulk_writer, insert_new
from etl.store.database import sqlite_has_json
from etl.store.schema import image_actions
from etl.store.upsert import execute_upsert


@dataclass
class UpsertCounts:
    """How many distinct rows an upsert inserted, updated, or found unchanged."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    elsewhere: int = 0  # of those, listed under another image than the one stored

    def __add__(self, other: UpsertCounts) -> UpsertCounts:
        return UpsertCounts(
            self.inserted + other.inserted,
            self.updated + other.updated,
            self.unchanged + other.unchanged,
            self.elsewhere + other.elsewhere,
        )


def write_rows(conn: Connection, rows: Sequence[Row], *, now: datetime, new: bool = False) -> None:
    """Upsert ``rows`` (distinct ids) as new or changed, stamped ``now``, listed again.

    ``new``: this transaction read that none of them is stored; a bulk writer may then
    insert them without its upsert's staging (it upserts them should one be stored since).
    """
    writer = bulk_writer(conn)
    if writer is not None:
        writer(conn, rows, now, new)
        return
    if rows and isinstance(rows[0], tuple):  # text for the driver, not values to bind
        raise DatabaseError(f"rows ready for a driver reached {conn.dialect.name}'s upsert")
    columns = set(image_actions.columns.keys())
    stamped = {"first_seen_at": now, "changed_at": now, "missing_since": None}
    execute_upsert(
        conn,
        [{**{k: v for k, v in dict(row).items() if k in columns}, **stamped} for row in rows],
        image_actions,
    )


def insert_new_actions(
    conn: Connection, rows: Sequence[Row], *, now: datetime
) -> UpsertCounts | None:
    """Insert rows expected new (a first sync's page) without reading what is stored first.

    Return their counts, each inserted; or None when one of them is stored after all, or
    the database's driver cannot insert so: nothing of them is written then, and the
    caller reads what is stored and upserts them (upsert_actions). Duplicate ids are
    folded as upsert_actions folds them.
    """
    latest = list(_latest(rows).values())
    if not latest:
        return UpsertCounts()
    if not insert_new(conn, latest, now):
        return None
    return UpsertCounts(inserted=len(latest))


def _latest(rows: Sequence[Row]) -> dict[int, Any]:
    """Return the rows by id, the last of each (a page may list an action twice)."""
    every: Sequence[Any] = rows
    key = ID if rows and isinstance(rows[0], tuple) else "id"  # etl.ready's tuples, or dicts
    return {row[key]: row for row in every}


class Stored(NamedTuple):
    """What a page's read finds stored of one action."""

    id: int
    content_hash: str
    image_id: int
    missing: bool  # marked missing_since: listed again, it is rewritten to clear the mark


# The stored rows of a page's actions, read with one parameter holding every id: one
# statement text, and no IN list for SQLAlchemy to render (a quarter of a millisecond for
# 200 ids) or rows to wrap (as much again). SQLite passes a JSON array, PostgreSQL an array
# literal as text (psycopg dumps a list element by element, in Python: 0.35 ms a page of
# 200, against 0.02 ms for the text), pymysql a tuple.
# SQLite also answers with one JSON array: the driver lets go of the GIL at each row it
# steps to, and with the run's other threads busy each retaking can wait out Python's
# switch interval (200 rows beside a busy thread: 0.2-0.4 s a page, against 12 ms so).
_STORED_SQLITE = (
    "SELECT json_group_array(json_array(id, content_hash, image_id, missing_since IS NOT NULL)) "
    "FROM image_actions WHERE id IN (SELECT value FROM json_each(?))"
)
_STORED_POSTGRESQL = (
    "SELECT id, content_hash, image_id, missing_since IS NOT NULL FROM image_actions "
    "WHERE id = ANY(%s::bigint[])"
)
# pymysql spells a tuple parameter as a parenthesised list: IN %s takes the page's ids.
_STORED_PYMYSQL = (
    "SELECT id, content_hash, image_id, missing_since IS NOT NULL FROM image_actions WHERE id IN %s"
)


def read_stored(conn: Connection, ids: Iterable[int]) -> dict[int, Stored]:
    """Return the stored id, fingerprint, image and missing mark of the actions ``ids``."""
    name = conn.dialect.name
    found: Sequence[Sequence[Any]]
    if name == "sqlite" and sqlite_has_json():
        listed = orjson.dumps(list(ids)).decode()
        found = orjson.loads(conn.exec_driver_sql(_STORED_SQLITE, (listed,)).scalar_one())
    elif name == "postgresql" and conn.dialect.driver == "psycopg":
        listed = "{" + ",".join(map(str, ids)) + "}"  # the ids are ints: see usable_id
        found = conn.exec_driver_sql(_STORED_POSTGRESQL, (listed,)).fetchall()
    elif name in ("mysql", "mariadb") and conn.dialect.driver == "pymysql":
        listed_ids = tuple(ids)
        if not listed_ids:  # IN () is not SQL
            return {}
        found = conn.exec_driver_sql(_STORED_PYMYSQL, (listed_ids,)).fetchall()
    else:
        columns = image_actions.c
        missing = columns.missing_since.is_not(None)
        query = select(columns.id, columns.content_hash, columns.image_id, missing)
        found = conn.execute(query.where(columns.id.in_(list(ids)))).fetchall()
    return {row[0]: Stored(row[0], row[1], row[2], bool(row[3])) for row in found}


def upsert_actions(
    conn: Connection,
    rows: Sequence[Row],
    *,
    now: datetime,
    write: bool = True,
    elsewhere_ids: set[int] | None = None,
    stored: Mapping[int, Stored] | None = None,
) -> UpsertCounts:
    """Insert new actions and rewrite changed ones; leave unchanged rows untouched.

    One read of the stored fingerprints and one batched upsert per call. Duplicate ids in
    ``rows`` (pages shift while data changes) are folded: the last occurrence wins. A row
    marked missing that is listed again is rewritten, which clears the mark. An action
    listed under another image than the one it is stored under keeps its stored image:
    the first image that listed it owns it, so ``image_id`` never flips between runs
    (counted in ``elsewhere``, their ids added to ``elsewhere_ids``). With ``write=False``
    (a dry run) only the counts are computed. ``stored`` is what read_stored returned
    for these ids in the same transaction, when the caller read it already. Rows are
    transform's dicts, or all ready for a bulk writer (etl.ready's tuples or COPY lines).
    """
    ready = bool(rows) and isinstance(rows[0], tuple)  # etl.ready's tuples, or dicts
    image, fingerprint = (IMAGE_ID, CONTENT_HASH) if ready else ("image_id", "content_hash")
    latest = _latest(rows)
    if not latest:
        return UpsertCounts()
    if stored is None:
        stored = read_stored(conn, latest)
    if not stored:  # none stored yet (a first sync's pages): each row is new
        if write:
            write_rows(conn, list(latest.values()), now=now, new=True)
        return UpsertCounts(inserted=len(latest))
    writes: list[Any] = []
    inserted = elsewhere = 0
    for action_id, row in latest.items():
        known = stored.get(action_id)
        if known is not None and known.image_id != row[image]:
            elsewhere += 1
            if elsewhere_ids is not None:
                elsewhere_ids.add(action_id)
            owner = known.image_id
            if ready:
                row = owned_by(row, owner)
            else:
                owned = hash_payload(row["payload_json"].encode(), owner)
                row = {**row, "image_id": owner, "content_hash": owned}
        unchanged = known is not None and known.content_hash == row[fingerprint]
        if unchanged and not known.missing:  # type: ignore[union-attr]
            continue
        inserted += known is None
        writes.append(row)
    if writes and write:
        write_rows(conn, writes, now=now, new=inserted == len(writes))
    updated = len(writes) - inserted
    return UpsertCounts(inserted, updated, len(latest) - len(writes), elsewhere)
