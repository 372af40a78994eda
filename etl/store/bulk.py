"""Write a page of action rows through the driver itself: no per-row bind processing.

The rows' payloads are already JSON text (transform serialised them once), and the
timestamps are formatted here the way SQLAlchemy would store them, so each value reaches
the driver ready. Each dialect gets its cheapest bulk upsert:

- SQLite: one multi-row ``INSERT ... VALUES (...), (...) ON CONFLICT DO UPDATE``: one step
  of the statement, so the GIL is released and retaken once a page, not once a row (with
  the run's HTTP threads busy, each retaking can wait out Python's switch interval);
- PostgreSQL (psycopg): ``COPY`` into a temporary table, then one
  ``INSERT ... SELECT ... ON CONFLICT DO UPDATE``; rows prepared as COPY lines (etl.ready)
  go to COPY in one write. Rows the page's read found none of (a first sync's) are copied
  straight into the table: no staging, no second statement; should one have been stored
  meanwhile, the copy is undone (see _copied_in) and they take the upsert;
- MySQL/MariaDB: ``executemany`` of ``INSERT ... ON DUPLICATE KEY UPDATE``, which the
  driver sends as large multi-row INSERTs.

Every form updates a stored row only when its fingerprint differs or it is marked missing,
so an unchanged row is never rewritten, whoever else writes meanwhile. Other dialects and
drivers (DuckDB, psycopg2) take SQLAlchemy's statement (see load.execute_upsert).

SQLite and PostgreSQL also insert rows expected new without a read before (insert_new): a
plain multi-row INSERT, or the COPY, that writes nothing of them should one be stored after
all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import cache, lru_cache
from itertools import chain
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Dialect,
    Engine,
    MetaData,
    Table,
    delete,
    event,
    insert,
    select,
)
from sqlalchemy.exc import DBAPIError, IntegrityError

from etl.errors import DatabaseError
from etl.ready import LINE, Ready, Row, Stamp, is_line, naive_stamp, ready_values, zoned_stamp
from etl.store.schema import image_actions
from etl.store.upsert import upsert_statement

COLUMNS = tuple(column.name for column in image_actions.columns)
STAMPS = ("started_at", "completed_at")  # the row's own timestamps; the rest are "now"
LISTS = ("region_features", "region_sizes")  # JSON columns besides the payload
INCOMING = "image_actions_incoming"  # PostgreSQL's per-session staging table
STAGED = "image_actions_incoming_created"  # in a connection's info: INCOMING exists there
COPIED_IN = "image_actions_copied_in"  # in a connection's info: its transaction took the savepoint
UNIQUE_VIOLATION = "23505"  # PostgreSQL's SQLSTATE
COPY_FROM_STDIN = "COPY {} ({}) FROM STDIN"  # a table, then its columns: COLUMNS
_COPY_IN = COPY_FROM_STDIN.format("image_actions", ", ".join(COLUMNS))
_SAVEPOINT = "SAVEPOINT image_actions_new"
_ROLLBACK = "ROLLBACK TO SAVEPOINT image_actions_new"
MOST_ROWS_A_STATEMENT = 200  # SQLite: a page of the API's largest, whatever a server sends


def _values(rows: Sequence[Row], now: datetime, stamp: Stamp) -> list[Ready]:
    """Return each row as a tuple in COLUMNS' order, every value ready for the driver.

    A row comes as transform's dict, or ready already (see etl.sync.prepare).
    """
    at = stamp(now)
    # first_seen_at (kept by the update of a stored row), changed_at, and missing_since:
    # a row written is a row listed.
    tail = (at, at, None)
    return [(row if isinstance(row, tuple) else ready_values(row, stamp)) + tail for row in rows]


@cache
def _driver_upsert(dialect: Dialect) -> tuple[str, bool]:
    """Return the dialect's upsert as the driver's SQL, and whether it takes tuples.

    Positional parameters come in COLUMNS' order; named ones carry the column names.
    """
    compiled = upsert_statement(dialect.name).compile(dialect=dialect)
    if compiled.positional and tuple(compiled.positiontup or ()) != COLUMNS:
        raise DatabaseError(f"the {dialect.name} upsert does not take the columns in order")
    return str(compiled), compiled.positional


# PostgreSQL's staging table: a page is copied into it, then upserted from it.
incoming = Table(
    INCOMING, MetaData(), *(Column(column.name, column.type) for column in image_actions.columns)
)


@event.listens_for(Engine, "rollback")
def _staging_rolled_back(conn: Connection) -> None:
    """Forget the staging table and the savepoint of a connection whose transaction rolled back.

    The rollback undid the table if that transaction created it; the next page creates it
    again. (conn.info follows the driver's connection, whichever checkout uses it.) A
    connection invalidated (its server gone) is never asked: that would raise in the
    rollback and hide the error that caused it, and its driver connection is dropped with
    its info anyway.
    """
    if conn.dialect.name == "postgresql" and not conn.invalidated and not conn.closed:
        conn.info.pop(STAGED, None)
        conn.info.pop(COPIED_IN, None)


@event.listens_for(Engine, "commit")
def _committed(conn: Connection) -> None:
    """Let the connection's next transaction copy new rows in under a savepoint of its own."""
    if conn.dialect.name == "postgresql":
        conn.info.pop(COPIED_IN, None)


@cache
def _postgresql_statements(dialect: Dialect) -> tuple[str, str, str]:
    create = (
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {INCOMING} "
        "(LIKE image_actions INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    copy = COPY_FROM_STDIN.format(INCOMING, ", ".join(COLUMNS))
    source = select(*incoming.columns)
    upsert = upsert_statement(dialect.name, image_actions, source).compile(dialect=dialect)
    # Emptied in the same round trip: a second page in one transaction starts clean.
    empty = delete(incoming).compile(dialect=dialect)
    return create, copy, f"{upsert}; {empty}"


# A writer takes a connection, distinct rows, the moment they are stamped with, and whether
# all are new: none of their ids was stored when the transaction read them (see load).
Writer = Callable[[Connection, Sequence[Row], datetime, bool], None]


def _bulk(dialect: Dialect) -> tuple[Writer, str] | None:
    """Return the dialect's bulk upsert and the form it takes rows in (etl.ready.FORMS), or None."""
    if dialect.name == "sqlite" and dialect.driver == "pysqlite":
        return _write_sqlite, "naive"
    if dialect.name == "postgresql" and dialect.driver == "psycopg":
        return _write_postgresql, "copy"
    if dialect.name in ("mysql", "mariadb") and dialect.driver in ("pymysql", "mysqldb"):
        return _write_executemany, "naive"
    return None


def bulk_writer(conn: Connection) -> Writer | None:
    """Return the bulk upsert for ``conn``'s dialect and driver, or None to use SQLAlchemy's."""
    found = _bulk(conn.dialect)
    return None if found is None else found[0]


def bulk_form(dialect: Dialect) -> str | None:
    """Return the form the dialect's bulk upsert takes rows in (etl.ready.FORMS), or None."""
    found = _bulk(dialect)
    return None if found is None else found[1]


def _write_executemany(conn: Connection, rows: Sequence[Row], now: datetime, new: bool) -> None:
    del new  # the upsert inserts them (MariaDB's first sync is well within its target)
    sql, positional = _driver_upsert(conn.dialect)
    values = _values(rows, now, naive_stamp)
    if positional:
        conn.exec_driver_sql(sql, values)
    else:
        conn.exec_driver_sql(sql, [dict(zip(COLUMNS, value, strict=True)) for value in values])


@cache
def _driver_insert(dialect: Dialect) -> str:
    """Return a plain INSERT of one row, the columns in order, as the driver's SQL."""
    compiled = insert(image_actions).compile(dialect=dialect)
    if tuple(compiled.positiontup or ()) != COLUMNS:
        raise DatabaseError(f"the {dialect.name} insert does not take the columns in order")
    return str(compiled)


@lru_cache(maxsize=16)  # a page's size, the last page's, a few others
def _rows_sql(sql: str, rows: int) -> str:
    """Return the single-row INSERT ``sql`` with ``rows`` groups of values."""
    group = f"({', '.join('?' for _ in COLUMNS)})"
    if sql.count(f"VALUES {group}") != 1:
        raise DatabaseError("the SQLite upsert's VALUES clause is not where it was expected")
    return sql.replace(f"VALUES {group}", f"VALUES {', '.join([group] * rows)}")


def _most_sqlite_rows(conn: Connection) -> int:
    """Return how many rows one SQLite statement takes: a page, within its bound variables."""
    limit: int = _driver(conn).getlimit(conn.dialect.loaded_dbapi.SQLITE_LIMIT_VARIABLE_NUMBER)
    return max(1, min(limit // len(COLUMNS), MOST_ROWS_A_STATEMENT))


def _write_sqlite(conn: Connection, rows: Sequence[Row], now: datetime, new: bool) -> None:
    del new  # a plain INSERT measured no faster than the upsert's (a first sync 3.37 s to 3.39)
    sql, _ = _driver_upsert(conn.dialect)
    values = _values(rows, now, naive_stamp)
    most = _most_sqlite_rows(conn)
    for start in range(0, len(values), most):
        chunk = values[start : start + most]
        conn.exec_driver_sql(_rows_sql(sql, len(chunk)), tuple(chain.from_iterable(chunk)))


def _driver(conn: Connection) -> Any:
    driver = conn.connection.driver_connection
    assert driver is not None  # noqa: S101  (an open connection has its driver's)
    return driver


@contextmanager
def _wrapped(conn: Connection, statement: str) -> Iterator[None]:
    """Raise the driver's errors as SQLAlchemy wraps its own: the run's one-sentence error."""
    dbapi = conn.dialect.loaded_dbapi
    try:
        yield
    except dbapi.Error as exc:
        raise DBAPIError.instance(statement, None, exc, dbapi.Error) from exc


def inserts_new(dialect: Dialect) -> bool:
    """Return whether the dialect's driver inserts rows expected new without a read (insert_new)."""
    return (dialect.name, dialect.driver) in (("sqlite", "pysqlite"), ("postgresql", "psycopg"))


def insert_new(conn: Connection, rows: Sequence[Row], now: datetime) -> bool | None:
    """Insert ``rows`` (distinct ids, expected new) stamped ``now``, without reading first.

    Return True when all were inserted; False when one was stored after all, and None when
    the driver has no such insert (see inserts_new): nothing of them is written then, and
    the transaction goes on (the caller reads what is stored and upserts them).
    """
    dialect = conn.dialect
    if not inserts_new(dialect):
        return None
    if dialect.name == "sqlite":
        return _insert_sqlite(conn, rows, now)
    if conn.info.get(COPIED_IN):  # PostgreSQL: one savepoint a transaction (see _copied_in)
        return None
    block, values = _copy_input(conn, rows, now)
    with _driver(conn).cursor() as cursor:
        return _copied_in(conn, cursor, block, values)


def _insert_sqlite(conn: Connection, rows: Sequence[Row], now: datetime) -> bool | None:
    """Insert a page of rows in one plain INSERT; False if it met a stored id.

    SQLite backs out a statement that fails on a constraint and keeps the transaction (its
    ABORT): one statement writes all of them or none. A page larger than one statement
    takes (only a server sending more than it was asked for) is left to the upsert.
    """
    if len(rows) > _most_sqlite_rows(conn):
        return None
    sql = _rows_sql(_driver_insert(conn.dialect), len(rows))
    values = _values(rows, now, naive_stamp)
    try:
        conn.exec_driver_sql(sql, tuple(chain.from_iterable(values)))
    except IntegrityError as exc:
        code = getattr(exc.orig, "sqlite_errorcode", None)
        if code != conn.dialect.loaded_dbapi.SQLITE_CONSTRAINT_PRIMARYKEY:
            raise
        return False
    return True


def _copy_input(conn: Connection, rows: Sequence[Row], now: datetime) -> tuple[bytes, list[Ready]]:
    """Return the COPY block of the rows that come as lines, and the others' values."""
    lines = [row[LINE] for row in rows if is_line(row)]
    values = _values([row for row in rows if not is_line(row)], now, zoned_stamp)
    at = zoned_stamp(now)
    tail = f"\t{at}\t{at}\t\\N\n".encode()  # first_seen_at, changed_at, missing_since
    block = tail.join(lines) + tail if lines else b""
    encoding = _driver(conn).info.encoding  # the lines are UTF-8: COPY reads the client's
    if block and encoding != "utf-8":
        block = block.decode().encode(encoding)  # what it cannot spell raises, as in write_row
    return block, values


def _write_postgresql(conn: Connection, rows: Sequence[Row], now: datetime, new: bool) -> None:
    create, copy, upsert = _postgresql_statements(conn.dialect)
    block, values = _copy_input(conn, rows, now)
    driver = _driver(conn)
    with driver.cursor() as cursor:
        if new and not conn.info.get(COPIED_IN) and _copied_in(conn, cursor, block, values):
            return
        if not conn.info.get(STAGED):  # once a session (see _staging_rolled_back)
            with _wrapped(conn, create):
                cursor.execute(create)
            conn.info[STAGED] = True
        with _wrapped(conn, copy):
            _copy(cursor, copy, block, values)
        with _wrapped(conn, upsert):
            cursor.execute(upsert)


def _copy(cursor: Any, statement: str, block: bytes, values: Sequence[Ready]) -> None:
    """Run a COPY FROM STDIN of a block of lines and rows of values."""
    with cursor.copy(statement) as stream:
        if block:
            stream.write(block)
        for value in values:
            stream.write_row(value)


def _copied_in(conn: Connection, cursor: Any, block: bytes, values: Sequence[Ready]) -> bool:
    """Copy new rows straight into image_actions; return False if one was stored meanwhile.

    None of them was stored when the page was read (or, for a page likely new, none was
    expected), but another session may have stored one since (the sync lock keeps other
    runs out, not a hand's INSERT): its unique violation undoes the copy, and the caller
    upserts them all as ever. A copy that opens its transaction (a run's page of new
    rows, its transaction's first statement) is undone by rolling the transaction back:
    it held nothing else. Any other is undone to a savepoint taken before it, one a
    transaction, never released (a round trip): a transaction that writes more stages the
    rest, so that savepoints do not pile up (past 64, PostgreSQL's snapshots slow down
    for every session). A savepoint costs a round trip and a subtransaction: a first
    sync's COPYs without it measured a tenth less of PostgreSQL's CPU.
    """
    driver = _driver(conn)
    status = driver.info.transaction_status
    opens = not driver.autocommit and status == type(status).IDLE  # nothing sent since commit
    if not opens:
        with _wrapped(conn, _SAVEPOINT):
            cursor.execute(_SAVEPOINT)
        conn.info[COPIED_IN] = True
    try:
        with _wrapped(conn, _COPY_IN):
            _copy(cursor, _COPY_IN, block, values)
    except IntegrityError as exc:
        if getattr(exc.orig, "sqlstate", None) != UNIQUE_VIOLATION:
            raise
        if opens:
            with _wrapped(conn, "ROLLBACK"):
                driver.rollback()  # the next statement opens a new transaction, as the first did
        else:
            with _wrapped(conn, _ROLLBACK):
                cursor.execute(_ROLLBACK)
        return False
    return True
