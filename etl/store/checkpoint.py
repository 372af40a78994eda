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
ADOPTED = "etl_checkpointed_beside"  # in a connection's info: its own wal_autocheckpoint
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
        """``connect``: return the thread's connection, as engine.raw_connection (its default)."""
        self._connect = connect or engine.raw_connection
        self._every = every
        self._changed = threading.Condition()
        self._pending = 0  # pages committed since the last checkpoint was asked for
        self._asked = False
        self._closing = False
        self._thread: threading.Thread | None = None
        self.checkpoints = 0  # run so far
        self.failed: str | None = None  # why it stopped, if it did

    def adopt(self, conn: Connection) -> bool:
        """Leave ``conn``'s checkpoints to this checkpointer; the writer asks at each transaction.

        Return whether it took them: only a database in WAL mode has a log to copy (not an
        in-memory one). Its thread starts with the first connection it takes; once it has
        stopped, a connection it took gets its own checkpoints back.
        """
        own = conn.info.get(ADOPTED)
        try:
            if own is not None and self.failed is None:
                return True
            if own is not None:
                conn.exec_driver_sql(f"PRAGMA wal_autocheckpoint={int(own)}")
                del conn.info[ADOPTED]
                return False
            if self.failed is not None or self._closing:
                return False
            if str(conn.exec_driver_sql("PRAGMA journal_mode").scalar()).lower() != "wal":
                return False
            own = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
            conn.exec_driver_sql(f"PRAGMA wal_autocheckpoint={FALLBACK_PAGES}")
        except SQLAlchemyError as exc:  # the writer's transaction is SQLite's own to fail
            self._stop(exc)
            return False
        conn.info[ADOPTED] = own
        with self._changed:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="checkpoint", daemon=True)
                self._thread.start()
        return True

    def committed(self, pages: int) -> None:
        """Note ``pages`` committed by the writer; ask for a checkpoint every ``every``."""
        with self._changed:
            self._pending += pages
            if self._pending >= self._every:
                self._pending = 0
                self._asked = True
                self._changed.notify()

    def close(self, *, wait: bool = True) -> None:
        """Run a last checkpoint of what the writer committed, then end the thread.

        ``wait``: until it has ended. The connections it took keep their fallback until
        the engine is disposed (a run disposes of its own), which checkpoints what is left
        as it closes the last of them.
        """
        with self._changed:
            self._closing = True
            self._asked = self._asked or self._pending > 0
            self._changed.notify()
            thread = self._thread
        if thread is not None and wait:
            thread.join()

    def _run(self) -> None:
        try:
            raw = self._connect()
        except Exception as exc:  # the writer's own checkpoints go on
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
                    driver.execute(_CHECKPOINT).fetchall()
                    self.checkpoints += 1
                    logger.debug("checkpoint %d beside the writer", self.checkpoints)
                if closing:
                    return
        except Exception as exc:
            self._stop(exc)
        finally:
            raw.close()

    def _stop(self, exc: Exception) -> None:
        self.failed = f"{type(exc).__name__}: {exc}"[:300]
        logger.info("checkpoints are left to the writer (%s)", self.failed)
