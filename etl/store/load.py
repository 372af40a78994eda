"""Write rows with each dialect's native upsert; never creates tables."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, Insert, Table, select
from sqlalchemy.dialects import mysql, postgresql, sqlite

from etl.errors import DatabaseError
from etl.model import ActionRow, content_hash
from etl.store.schema import image_actions


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


@cache
def upsert_statement(dialect_name: str, table: Table = image_actions) -> Insert:
    """Return the dialect's own upsert for ``table``, keyed on its primary key.

    INSERT ... ON CONFLICT DO UPDATE on SQLite, PostgreSQL and DuckDB (which speaks
    PostgreSQL's form), INSERT ... ON DUPLICATE KEY UPDATE on MySQL/MariaDB. For
    image_actions first_seen_at is never overwritten.

    Raises:
        DatabaseError: the dialect has no native upsert we support.
    """
    keys = [column.name for column in table.primary_key.columns]
    updates = [
        column.name
        for column in table.columns
        if column.name not in keys and column.name != "first_seen_at"
    ]
    if dialect_name in ("sqlite", "postgresql", "duckdb"):
        module: Any = sqlite if dialect_name == "sqlite" else postgresql
        stmt = module.insert(table)
        return stmt.on_conflict_do_update(  # type: ignore[no-any-return]
            index_elements=keys, set_={name: stmt.excluded[name] for name in updates}
        )
    if dialect_name in ("mysql", "mariadb"):
        my_stmt = mysql.insert(table)
        return my_stmt.on_duplicate_key_update({name: my_stmt.inserted[name] for name in updates})
    raise DatabaseError(
        f"database dialect {dialect_name!r} is not supported; use SQLite, PostgreSQL, "
        "MySQL, MariaDB or DuckDB"
    )


def execute_upsert(conn: Connection, rows: Sequence[dict[str, Any]], table: Table) -> None:
    """Upsert ``rows`` into ``table`` with the dialect's native statement, as one batch.

    DuckDB runs an executemany as one statement per row (about 2 ms each), so it gets one
    multi-row VALUES statement instead, which may not name a key twice: the last row wins,
    as it would row by row.
    """
    stmt = upsert_statement(conn.dialect.name, table)
    if conn.dialect.name != "duckdb":
        conn.execute(stmt, rows)
        return
    keys = [column.name for column in table.primary_key.columns]
    latest = {tuple(row[key] for key in keys): row for row in rows}
    conn.execute(stmt.values(list(latest.values())))


def upsert_actions(
    conn: Connection,
    rows: Sequence[ActionRow],
    *,
    now: datetime,
    write: bool = True,
    elsewhere_ids: set[int] | None = None,
) -> UpsertCounts:
    """Insert new actions and rewrite changed ones; leave unchanged rows untouched.

    One read of the stored fingerprints and one batched upsert per call. Duplicate ids in
    ``rows`` (pages shift while data changes) are folded: the last occurrence wins. A row
    marked missing that is listed again is rewritten, which clears the mark. An action
    listed under another image than the one it is stored under keeps its stored image:
    the first image that listed it owns it, so ``image_id`` never flips between runs
    (counted in ``elsewhere``, their ids added to ``elsewhere_ids``). With ``write=False``
    (a dry run) only the counts are computed.
    """
    latest = {row["id"]: row for row in rows}
    if not latest:
        return UpsertCounts()
    query = select(
        image_actions.c.id,
        image_actions.c.content_hash,
        image_actions.c.image_id,
        image_actions.c.missing_since,
    ).where(image_actions.c.id.in_(latest))
    stored = {found.id: found for found in conn.execute(query)}
    writes: list[dict[str, Any]] = []
    inserted = elsewhere = 0
    for action_id, row in latest.items():
        known = stored.get(action_id)
        if known is not None and known.image_id != row["image_id"]:
            elsewhere += 1
            if elsewhere_ids is not None:
                elsewhere_ids.add(action_id)
            owner = known.image_id
            row = {**row, "image_id": owner, "content_hash": content_hash(row["payload"], owner)}
        unchanged = known is not None and known.content_hash == row["content_hash"]
        if unchanged and known.missing_since is None:  # type: ignore[union-attr]
            continue
        inserted += known is None
        writes.append({**row, "first_seen_at": now, "changed_at": now, "missing_since": None})
    if writes and write:
        execute_upsert(conn, writes, image_actions)
    updated = len(writes) - inserted
    return UpsertCounts(inserted, updated, len(latest) - len(writes), elsewhere)
