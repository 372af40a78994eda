"""Open engines for any SQLAlchemy URL and turn driver failures into one clear sentence."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, QueuePool, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    InvalidatePoolError,
    NoSuchModuleError,
    OperationalError,
    SQLAlchemyError,
)

from etl.database_url import mask_database_url
from etl.errors import ConfigError, DatabaseError
from etl.store import mysql_connect
from etl.store.revision import VERSION_TABLE

DRIVER_EXTRAS = {
    "postgresql": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
    "duckdb": "duckdb",
}
# The driver each extra installs: a URL without +driver asks for psycopg2 or MySQLdb instead.
DRIVER_SCHEMES = {
    "postgresql": "postgresql+psycopg://",
    "mysql": "mysql+pymysql://",
    "mariadb": "mariadb+pymysql://",
}
MYSQL_BAD_DB = 1049  # MySQL/MariaDB's error code for "Unknown database"
EMBEDDED = ("sqlite", "duckdb")  # no server: no connection to go stale
# A pooled connection idle this long is pinged before use (see ping_when_idle).
PING_AFTER_IDLE = 1.0
IDLE_SINCE = "etl_idle_since"  # its key in a pooled connection's info
SQLITE_BUSY_TIMEOUT_MS = 30_000  # wait for a reader's lock instead of failing at once
DUCKDB_TURN_TIMEOUT = 30  # seconds a thread waits its turn for DuckDB's one connection
# DuckDB lets one process at a time open a file; another process's open fails with this.
DUCKDB_FILE_LOCKED = re.compile(r"Could not set lock on file(?:.*\(PID (\d+)\))?")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (see _sqlite_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL lets auditors read while a sync writes; the busy timeout rides out short locks.
    # synchronous=NORMAL under WAL: a crashed process loses nothing, a power cut at worst the
    # last commits, which the next sync fetches again; it spares an fsync per page.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def open_engine(url: str) -> Engine:
    """Return an engine for ``url``; SQLite gets WAL mode and a busy timeout.

    Raises:
        ConfigError: the URL's driver is not installed (nothing has been touched yet).
    """
    parsed = make_url(url)
    options: dict[str, Any] = {}
    if parsed.get_backend_name() == "duckdb":
        # One connection, taken in turn by the run's threads. DuckDB's optimistic
        # concurrency fails a transaction that writes a row another one wrote meanwhile
        # (an action listed under two images, a --full scan marking it missing), where
        # PostgreSQL waits and SQLite queues at BEGIN IMMEDIATE: taking turns is that wait.
        # A page's statements take milliseconds; the HTTP requests still run in parallel.
        # The pool keeps the connection, so the file stays locked until the engine is disposed.
        options.update(
            poolclass=QueuePool, pool_size=1, max_overflow=0, pool_timeout=DUCKDB_TURN_TIMEOUT
        )
    try:
        engine = create_engine(parsed, **options)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        backend = parsed.get_backend_name()
        extra = DRIVER_EXTRAS.get(backend)
        hint = f"pip install 'do-image-actions[{extra}]'" if extra else "install its driver"
        if "+" not in parsed.drivername and backend in DRIVER_SCHEMES:
            hint = f"write {DRIVER_SCHEMES[backend]}... in the URL ({hint})"
        raise ConfigError(f"no driver for {mask_database_url(url)} ({exc}); {hint}") from exc
    if parsed.get_backend_name() not in EMBEDDED:  # no server: no connection to go stale
        ping_when_idle(engine)
    if parsed.get_driver_name() == "pymysql":
        event.listen(engine, "do_connect", mysql_connect.connect)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection that was idle PING_AFTER_IDLE seconds before handing it out.

    On a disconnect the pool starts afresh, as SQLAlchemy's pool_pre_ping does, which pings
    at every checkout: a round trip to the server beside each of a run's reads and page
    writes. One in steady use is handed out as it is: a server that restarts within a
    second of a connection's last use fails the statement that next uses it (the run ends
    with a database error, exit 1) where pool_pre_ping would have connected anew.
    """
    dialect = engine.dialect

    @event.listens_for(engine.pool, "checkin")
    def _idle_from(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine.pool, "checkout")
    def _ping(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop(IDLE_SINCE, None)
        if since is None or time.monotonic() - since < PING_AFTER_IDLE:
            return  # just connected, or in use a moment ago
        try:
            alive = dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_connection, None):
                raise InvalidatePoolError(str(exc)) from exc  # every pooled one goes
            raise
        if not alive:
            raise InvalidatePoolError("the connection did not answer a ping")


def one_read(engine: Engine) -> Connection:
    """Return a connection for a single read statement.

    On PostgreSQL it runs in autocommit, a statement its own snapshot: no BEGIN and
    ROLLBACK round trips around it (a --full run reads every image's fingerprints so).
    Elsewhere a read-only transaction: SQLite's deferred BEGIN, and MySQL's autocommit
    would cost a round trip to set and one to reset.
    """
    conn = engine.connect()
    try:
        if engine.dialect.name == "postgresql":
            return conn.execution_options(isolation_level="AUTOCOMMIT")
        return conn.execution_options(read_only=True)
    except BaseException:
        conn.close()
        raise


def _sqlite_begin(conn: Any) -> None:
    # Workers write from several threads: a deferred transaction that reads and then
    # writes fails at once when another committed in between; IMMEDIATE waits its turn.
    # A connection marked read_only only reads, and need not queue behind the writers.
    read_only = conn.get_execution_options().get("read_only", False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


@cache
def sqlite_has_json() -> bool:
    """Return whether this process's SQLite has its JSON functions (optional before 3.38)."""
    import sqlite3  # here: a Python built without it still reaches other databases

    with contextlib.closing(sqlite3.connect(":memory:")) as probe:
        try:
            probe.execute("SELECT value FROM json_each('[1]')")
        except sqlite3.OperationalError:
            return False
    return True


def describe_failure(exc: SQLAlchemyError) -> str:
    """Return the driver's own first line for a failure, without SQL or parameters."""
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip().splitlines()[0] if str(original).strip() else ""
    return f"{type(original).__name__}: {text}"[:300]


@contextlib.contextmanager
def translate_errors(url: str) -> Iterator[None]:
    """Re-raise SQLAlchemy failures inside the block as one-sentence DatabaseErrors.

    Raises:
        DatabaseError: any SQLAlchemy error in the block.
    """
    try:
        yield
    except SQLAlchemyError as exc:
        raise database_error(url, exc) from exc


def duckdb_file_holder(exc: BaseException) -> str | None:
    """Return who holds the DuckDB file ``exc`` could not open ('PID 123'), or None.

    None means ``exc`` is not DuckDB refusing a file another process holds.
    """
    found = DUCKDB_FILE_LOCKED.search(str(getattr(exc, "orig", None) or exc))
    if found is None:
        return None
    return f"PID {found.group(1)}" if found.group(1) else "another process"


def database_error(url: str, exc: SQLAlchemyError) -> DatabaseError:
    """Return the one-sentence DatabaseError for a driver failure on the database at ``url``."""
    holder = duckdb_file_holder(exc)
    if holder is not None:
        return DatabaseError(
            f"database {mask_database_url(url)} is open in another process ({holder}): DuckDB "
            "lets one process at a time open a file; run again when it has finished"
        )
    return DatabaseError(
        f"database {mask_database_url(url)} failed ({describe_failure(exc)}); check that it "
        "is reachable and writable, then run again: rows already committed are kept"
    )


def sqlite_file(url: str) -> Path | None:
    """Return the file an SQLite URL names, or None for other databases and URI filenames."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.query.get("uri") or parsed.database.startswith("file:"):
        return None  # sqlite's own URI syntax: let the driver read it
    return Path(parsed.database)


def is_missing_database(exc: SQLAlchemyError, url: str) -> bool:
    """Return whether ``exc`` is the server saying the URL's database does not exist."""
    original = getattr(exc, "orig", None)
    args: tuple[Any, ...] = getattr(original, "args", ())
    if make_url(url).get_backend_name() in ("mysql", "mariadb"):
        return bool(args) and args[0] == MYSQL_BAD_DB
    # libpq reports a failed connection without its SQLSTATE, only the server's sentence.
    return f'database "{make_url(url).database}" does not exist' in str(original)


@contextlib.contextmanager
def connect_synced(url: str) -> Iterator[Connection]:
    """Yield a connection to a database a sync (or migrate) has set up; create nothing.

    Readers (status, report) use it: opening an SQLite path that does not exist would
    create an empty file, and an empty database would only fail later on a missing table.

    Raises:
        DatabaseError: no database is there, it holds no tables of ours, or it failed.
    """
    missing = DatabaseError(
        f"no synced database at {mask_database_url(url)}; check database_url, or run "
        "'do-image-actions sync' (or 'migrate') first"
    )
    path = sqlite_file(url)
    if path is not None and not path.is_file():
        raise missing
    engine = open_engine(url)
    try:
        with translate_errors(url):
            try:
                conn = engine.connect()
            except OperationalError as exc:
                if is_missing_database(exc, url):
                    raise missing from exc
                raise
            with conn:
                if not inspect(conn).has_table(VERSION_TABLE):
                    raise missing
                yield conn
    finally:
        engine.dispose()
