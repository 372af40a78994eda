"""Keep two syncs from interleaving on one database, with the database's own lock."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.sql.elements import ColumnElement

from etl.errors import LockedOutError
from etl.store.database import describe_failure, duckdb_file_holder
from etl.store.schema import sync_lock
from etl.timeutil import utc_now

logger = logging.getLogger(__name__)

LOCK_NAME = "sync"
# An SQLite lease outlives the longest wait a run can make (max_total_wait) with room to spare;
# it is renewed as pages commit, and a holder whose process is gone is taken over at once.
LEASE = timedelta(minutes=15)
RENEW_EVERY = timedelta(minutes=1)
# PostgreSQL advisory locks are per database and keyed by a 64-bit number.
ADVISORY_KEY = zlib.crc32(b"do-image-actions sync")
# DuckDB's file lock keeps other processes out; within one, runs keep each other out here.
_duckdb_files: dict[str, Holder] = {}
_duckdb_files_guard = threading.Lock()


@dataclass(frozen=True)
class Holder:
    """Who holds the lock."""

    host: str
    pid: int
    acquired_at: datetime

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}, since {self.acquired_at:%Y-%m-%d %H:%M:%S} UTC"


def pid_alive(pid: int) -> bool:
    """Return whether a process with ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


class SyncLock:
    """The sync lock of one database.

    PostgreSQL takes a session advisory lock and MySQL/MariaDB GET_LOCK: the server frees
    them when the holder's connection dies, so a crashed run never blocks the next. DuckDB
    locks the file for the one process that opens it (the engine keeps it open for the run),
    and the operating system frees it when that process ends. SQLite has no such lock, so
    the sync_lock row is a lease: renewed as the run goes, taken over when it expires or
    when its holder's process no longer exists on this host.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        host: str | None = None,
        pid: int | None = None,
        now: Callable[[], datetime] = utc_now,
        alive: Callable[[int], bool] = pid_alive,
    ) -> None:
        self.engine = engine
        self.host = host or socket.gethostname()
        self.pid = os.getpid() if pid is None else pid
        self._now = now
        self._alive = alive
        self._dialect = engine.dialect.name
        self._server_conn: Connection | None = None
        self._duckdb_file: str | None = None
        self._renewed_at: datetime | None = None

    @property
    def _server_lock_name(self) -> str:
        # GET_LOCK is server-wide: name the database so two databases do not block each other.
        return f"do_image_actions.{self.engine.url.database}"[:64]

    def acquire_server_lock(self) -> None:
        """Take the database's own lock (PostgreSQL, MySQL, MariaDB, DuckDB); SQLite has none.

        Raises:
            LockedOutError: another session (on DuckDB, another process or run) holds it.
        """
        if self._dialect == "duckdb":
            self._open_duckdb_file()
            return
        if self._dialect not in ("postgresql", "mysql", "mariadb"):
            return
        conn = self.engine.connect()
        if self._dialect == "postgresql":
            got = conn.execute(select(func.pg_try_advisory_lock(ADVISORY_KEY))).scalar()
        else:
            got = conn.execute(select(func.get_lock(self._server_lock_name, 0))).scalar()
        conn.commit()  # session-level locks outlive the transaction
        if not got:
            conn.close()
            raise self._locked_out()
        self._server_conn = conn

    def _open_duckdb_file(self) -> None:
        path = os.path.realpath(str(self.engine.url.database))  # one key per file, however named
        with _duckdb_files_guard:
            if path in _duckdb_files:
                raise LockedOutError(self._message(_duckdb_files[path]))
            try:
                with self.engine.connect():
                    pass  # the pool keeps this connection, and DuckDB the file's lock, till dispose
            except SQLAlchemyError as exc:
                holder = duckdb_file_holder(exc)
                if holder is None:
                    raise
                raise LockedOutError(
                    f"another process holds the DuckDB file {path} open ({holder}: another sync, "
                    "or a program with the file open, such as a notebook); this run did nothing "
                    "and exits"
                ) from None
            _duckdb_files[path] = Holder(self.host, self.pid, self._now())
        self._duckdb_file = path

    @property
    def _held_by_database(self) -> bool:
        """Whether the database's own lock already keeps every other run out."""
        return self._server_conn is not None or self._duckdb_file is not None

    def claim(self) -> None:
        """Record this process as the holder; on SQLite, take the lease.

        Raises:
            LockedOutError: on SQLite, a live holder's lease has not expired.
        """
        now = self._now()
        mine = {
            "holder_host": self.host,
            "holder_pid": self.pid,
            "acquired_at": now,
            "expires_at": now + LEASE,
        }
        with self.engine.begin() as conn:
            current = self._read_holder(conn)
            if current is None:
                # No other run can race us under the database's lock (and DuckDB has no
                # savepoints); without it, a losing insert must not end the transaction.
                nested = contextlib.nullcontext() if self._held_by_database else conn.begin_nested()
                try:
                    with nested:
                        conn.execute(insert(sync_lock).values(name=LOCK_NAME, **mine))
                except IntegrityError as exc:
                    raise self._locked_out() from exc  # another run claimed it first
                self._renewed_at = now
                return
            expires_at, holder = current
            if not self._held_by_database and not self._stale(expires_at, holder, now):
                raise LockedOutError(self._message(holder))
            # Compare-and-set on what we read, so two takers cannot both win.
            taken = conn.execute(
                update(sync_lock)
                .where(
                    sync_lock.c.name == LOCK_NAME,
                    sync_lock.c.holder_host == holder.host,
                    sync_lock.c.holder_pid == holder.pid,
                    sync_lock.c.acquired_at == holder.acquired_at,
                )
                .values(**mine)
            ).rowcount
            if not taken:
                raise self._locked_out()
            if (holder.host, holder.pid) != (self.host, self.pid) and not self._held_by_database:
                logger.warning("took over the sync lock from %s", holder)
        self._renewed_at = now

    def renew(self) -> None:
        """Extend an SQLite lease; cheap to call after every page.

        Raises:
            LockedOutError: the lease was taken over by another run.
        """
        if self._held_by_database or self._renewed_at is None:
            return
        now = self._now()
        if now - self._renewed_at < RENEW_EVERY:
            return
        with self.engine.begin() as conn:
            kept = conn.execute(
                update(sync_lock).where(*self._mine()).values(expires_at=now + LEASE)
            ).rowcount
        if not kept:
            raise LockedOutError("another run took over the sync lock; stopping this one")
        self._renewed_at = now

    def release(self) -> None:
        """Give the lock up; never raises, so it cannot hide the error that ended a run.

        If the database is gone, the server has freed its lock with the session already,
        and an SQLite lease whose holder is gone is taken over by the next run.
        """
        renewed, self._renewed_at = self._renewed_at, None
        server_conn, self._server_conn = self._server_conn, None
        duckdb_file, self._duckdb_file = self._duckdb_file, None
        try:
            if renewed is not None:
                with self.engine.begin() as conn:
                    conn.execute(delete(sync_lock).where(*self._mine()))
            if server_conn is not None:
                if self._dialect == "postgresql":
                    server_conn.execute(select(func.pg_advisory_unlock(ADVISORY_KEY)))
                else:
                    server_conn.execute(select(func.release_lock(self._server_lock_name)))
                server_conn.commit()
        except SQLAlchemyError as exc:
            logger.warning("could not release the sync lock cleanly (%s)", describe_failure(exc))
            if server_conn is not None:
                server_conn.invalidate()  # dead: discard it rather than reset it into the pool
        finally:
            if server_conn is not None:
                server_conn.close()
            if duckdb_file is not None:
                with _duckdb_files_guard:
                    _duckdb_files.pop(duckdb_file, None)

    def _mine(self) -> tuple[ColumnElement[bool], ...]:
        """Return the conditions that select this process's lock row."""
        return (
            sync_lock.c.name == LOCK_NAME,
            sync_lock.c.holder_host == self.host,
            sync_lock.c.holder_pid == self.pid,
        )

    def _stale(self, expires_at: datetime, holder: Holder, now: datetime) -> bool:
        if expires_at <= now:
            return True
        if holder.host != self.host:
            return False
        return holder.pid == self.pid or not self._alive(holder.pid)

    def _read_holder(self, conn: Connection) -> tuple[datetime, Holder] | None:
        """Return the lease's expiry and its holder, or None when nobody holds it."""
        row = conn.execute(select(sync_lock).where(sync_lock.c.name == LOCK_NAME)).first()
        if row is None:
            return None
        return row.expires_at, Holder(row.holder_host, row.holder_pid, row.acquired_at)

    def _locked_out(self) -> LockedOutError:
        try:
            with self.engine.connect() as conn:
                current = self._read_holder(conn)
        except SQLAlchemyError:  # the table does not exist yet on a first run
            current = None
        return LockedOutError(self._message(current[1] if current else None))

    @staticmethod
    def _message(holder: Holder | None) -> str:
        who = str(holder) if holder else "another process"
        return f"another sync holds the lock ({who}); this run did nothing and exits"
