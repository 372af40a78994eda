"""Each dialect's own upsert, built once with SQLAlchemy: the statements load and bulk share."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from sqlalchemy import Connection, Insert, Select, Table, case, or_
from sqlalchemy.dialects import mysql, postgresql, sqlite

from etl.errors import DatabaseError
from etl.store.schema import image_actions

# Last in MySQL's SET list: its assignments run in order, and the change test reads both.
CHANGE_COLUMNS = ("missing_since", "content_hash")


@cache
def upsert_statement(
    dialect_name: str, table: Table = image_actions, source: Select[Any] | None = None
) -> Insert:
    """Return the dialect's own upsert for ``table``, keyed on its primary key.

    INSERT ... ON CONFLICT DO UPDATE on SQLite, PostgreSQL and DuckDB (which speaks
    PostgreSQL's form), INSERT ... ON DUPLICATE KEY UPDATE on MySQL/MariaDB. The rows come
    as parameters, or from ``source``, a SELECT of every column in the table's order.

    For image_actions first_seen_at is never overwritten, and a stored row is updated only
    when its fingerprint differs or it is marked missing: an unchanged row stays untouched.

    Raises:
        DatabaseError: the dialect has no native upsert we support.
    """
    keys = [column.name for column in table.primary_key.columns]
    updates = [
        column.name
        for column in table.columns
        if column.name not in keys and column.name != "first_seen_at"
    ]
    guarded = table is image_actions
    if dialect_name in ("sqlite", "postgresql", "duckdb"):
        module: Any = sqlite if dialect_name == "sqlite" else postgresql
        stmt = module.insert(table)
        if source is not None:
            stmt = stmt.from_select([column.name for column in table.columns], source)
        changed = (
            or_(
                table.c.content_hash != stmt.excluded.content_hash,
                table.c.missing_since.is_not(None),
            )
            if guarded
            else None
        )
        return stmt.on_conflict_do_update(  # type: ignore[no-any-return]
            index_elements=keys, set_={name: stmt.excluded[name] for name in updates}, where=changed
        )
    if dialect_name in ("mysql", "mariadb") and source is None:
        my_stmt = mysql.insert(table)
        if not guarded:
            return my_stmt.on_duplicate_key_update(
                {name: my_stmt.inserted[name] for name in updates}
            )
        changed = or_(
            table.c.content_hash != my_stmt.inserted.content_hash,
            table.c.missing_since.is_not(None),
        )
        ordered = [name for name in updates if name not in CHANGE_COLUMNS] + [*CHANGE_COLUMNS]
        return my_stmt.on_duplicate_key_update(
            [
                (name, case((changed, my_stmt.inserted[name]), else_=table.c[name]))
                for name in ordered
            ]
        )
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
