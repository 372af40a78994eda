"""Copy SQLite's write-ahead log into the database file beside the writer, not in its way.

Under WAL each commit appends the pages it changed to the log. Once the log passes
``wal_autocheckpoint`` pages (1,000 by default), the commit that passed it copies the log
into the database file and syncs both to disk: a checkpoint, on the committing thread.
During a first sync that is every ten pages of actions or so, and the run's one writer
(etl.sync.writer), which the whole run waits for, spent a quarter of its time in its
commits (1.1 s of 4.5 s in one run; 0.4 s with this module), most of it waiting for the
disk's syncs.

A Checkpointer takes that work to a thread and a connection of its own. The writer tells
it how many pages it committed; every PAGES_A_CHECKPOINT pages it runs a PASSIVE checkpoint,
which waits for no one and stops no one (readers and the writer go on), and which sqlite3
runs without Python's GIL: the copying and the syncs overlap the writer's next pages. The
writer's own connections then checkpoint only past FALLBACK_PAGES of log (``adopt``), should
the thread fall behind: the log starts over from its beginning only at a write that finds it
copied whole, so a writer that never pauses would otherwise let it grow.

A checkpoint moves no data in or out of the database, only from one of its files to the
other: should one fail, the checkpointer stops, and the writer's connections get their own
checkpoints back at their next transaction; what is committed is in the log either way.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

logger = logging.getLogger(__name__)

PAGES_A_CHECKPOINT = 8  # pages of actions: about the 1,000 pages of log SQLite would wait for
FALLBACK_PAGES = 10_000  # the writer's own wal_autocheckpoint meanwhile: about 40 MB of log
# In a connection's info: (the checkpointer that took it, its own wal_autocheckpoint).
ADOPTED = "etl_checkpointed_beside"
_CHECKPOINT = "PRAGMA wal_checkpoint(PASSIVE)"


class Checkpointer:
    """Runs an SQLite engine's checkpoints on a thread of its own while one writer commits."""

    def __init__(
        self,
        engine: Engine,
        *,
        every: int = PAGES_A_CHECKPOINT,
        connect: Callable[[], Any] | None = None,
    ) -> None:
        """``connect``: return the thread's connection, as engine.raw_connection (its default).

        The thread holds one of the engine's pooled connections while it runs.
        """
        self._connect = connect or engine.raw_connection
        self._every = every
        self._changed = threading.Condition()
        self._pending = 0  # pages committed since the last checkpoint was asked for
        self._asked = False
        self._closing = False
        self._unlogged = False  # the database keeps no write-ahead log: nothing to do
        self._thread: threading.Thread | None = None
        self.checkpoints = 0  # run so far
        self.failed: str | None = None  # why it stopped, if it did

    def adopt(self, conn: Connection) -> bool:
        """Leave ``conn``'s checkpoints to this checkpointer; the writer asks at each transaction.

        Return whether it took them: only SQLite in WAL mode has a log to copy (not an
        in-memory database). Its thread starts with the first connection it takes. Should
        it fail, a connection it took gets its own checkpoints back here; once it is
        closed, the connections keep the fallback (see close).
        """
        mark: tuple[Checkpointer, int] | None = conn.info.get(ADOPTED)
        try:
            if mark is not None and mark[0] is self and self.failed is None:
                return True
            if self._takes(conn):
                # Another checkpointer's mark (the engine served an earlier writer) kept
                # the connection's own setting: it is still the one to give back.
                own = mark[1] if mark is not None else _autocheckpoint(conn)
                conn.exec_driver_sql(f"PRAGMA wal_autocheckpoint={FALLBACK_PAGES}")
                conn.info[ADOPTED] = (self, own)
                return True
            if mark is not None:  # taken by one that failed since: its own back
                conn.exec_driver_sql(f"PRAGMA wal_autocheckpoint={mark[1]}")
                del conn.info[ADOPTED]
        except SQLAlchemyError as exc:  # a failed PRAGMA leaves the transaction usable
            self._stop(exc)
        return False

    def _takes(self, conn: Connection) -> bool:
        """Return whether the thread runs (started now if need be) for ``conn``'s database."""
        if self.failed is not None or self._closing or self._unlogged:
            return False
        if conn.dialect.name != "sqlite" or not _logged(conn):
            self._unlogged = True
            return False
        return self._started()

    def committed(self, pages: int) -> None:
        """Note ``pages`` committed by the writer; ask for a checkpoint every ``every``."""
        with self._changed:
            self._pending += pages
            if self._pending >= self._every:
                self._pending = 0
                self._asked = True
                self._changed.notify()

    def close(self) -> None:
        """Run a last checkpoint of what the writer committed, and wait for the thread's end.

        Called by the writer once it has committed its last page. The connections it took
        keep their fallback until the engine is disposed (a run disposes of its own);
        closing the database's last connection checkpoints what is left of the log and
        removes it.
        """
        with self._changed:
            self._closing = True
            self._asked = self._asked or self._pending > 0
            self._changed.notify()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _started(self) -> bool:
        """Start the thread, once; return False (and stop) if it cannot start."""
        with self._changed:
            if self._thread is not None:
                return True
            thread = threading.Thread(target=self._run, name="checkpoint", daemon=True)
            try:
                thread.start()
            except RuntimeError as exc:  # no thread to be had: the writer checkpoints
                failure: Exception = exc
            else:
                self._thread = thread
                return True
        self._stop(failure)
        return False

    def _run(self) -> None:
        try:
            raw = self._connect()
        except Exception as exc:  # the writer's own checkpoints come back
            self._stop(exc)
            return
        try:
            driver: Any = raw.driver_connection
            while True:
                with self._changed:
                    self._changed.wait_for(lambda: self._asked or self._closing)
                    asked, closing = self._asked, self._closing
                    self._asked = False
                if asked:
                    busy, log, copied = driver.execute(_CHECKPOINT).fetchall()[0]
                    self.checkpoints += 1
                    logger.debug(
                        "checkpoint %d beside the writer: %s of %s pages of log copied%s",
                        self.checkpoints,
                        copied,
                        log,
                        " (some still read)" if busy else "",
                    )
                if closing:
                    return
        except Exception as exc:
            self._stop(exc)
        finally:
            raw.close()

    def _stop(self, exc: Exception) -> None:
        with self._changed:
            self.failed = f"{type(exc).__name__}: {exc}"[:300]
            self._closing = True  # the thread, if it runs, ends
            self._changed.notify()
        logger.warning("checkpoints are left to the writer (%s)", self.failed)


def _logged(conn: Connection) -> bool:
    """Return whether the connection's database keeps a write-ahead log."""
    return str(conn.exec_driver_sql("PRAGMA journal_mode").scalar()).lower() == "wal"


def _autocheckpoint(conn: Connection) -> int:
    return int(conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one())
