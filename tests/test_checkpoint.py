"""SQLite's log is copied into the database beside the writer, which goes on when it cannot be."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, text

from etl.fake import FakeApi, World
from etl.store.checkpoint import FALLBACK_PAGES, Checkpointer
from etl.store.database import open_engine
from etl.sync.writer import GroupWriter, PageWrite
from tests.support.oracle import expected_table
from tests.support.rows import read_rows, without_bookkeeping
from tests.support.runs import sync

ROWS_A_PAGE = 50
BODY = "x" * 2000  # a page's rows fill some hundred database pages of log


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[Engine]:
    engine = open_engine(f"sqlite:///{tmp_path / 'log.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)"))
    yield engine
    engine.dispose()


class Recorded:
    """The checkpointer's connection, noting each statement it runs, the thread and the answer."""

    def __init__(self, engine: Engine, fail: bool = False) -> None:
        self.raw = engine.raw_connection()
        self.driver_connection = self
        self.fail = fail
        self.ran: list[tuple[str, str, list[Any]]] = []

    def execute(self, statement: str) -> Any:
        if self.fail:
            raise sqlite3.OperationalError("disk I/O error")
        answer = self.raw.driver_connection.execute(statement).fetchall()
        self.ran.append((threading.current_thread().name, statement, answer))
        return _Rows(answer)

    def close(self) -> None:
        self.raw.close()


class _Rows:
    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    def fetchall(self) -> list[Any]:
        return self.rows


def page(engine: Engine, number: int, seen: list[int]) -> PageWrite[int, int]:
    """A page of ROWS_A_PAGE rows; its write notes its connection's wal_autocheckpoint."""
    ids = range(number * ROWS_A_PAGE, (number + 1) * ROWS_A_PAGE)

    def write(conn: Connection) -> int:
        seen.append(conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one())
        conn.execute(
            text("INSERT INTO t VALUES (:id, :body)"), [{"id": i, "body": BODY} for i in ids]
        )
        return number

    def alone() -> int:
        with engine.begin() as conn:
            return write(conn)

    return PageWrite(
        image=number,
        ids=frozenset(ids),
        hold=contextlib.nullcontext,
        write=write,
        done=lambda written: written,
        alone=alone,
    )


def until(done: Any) -> None:
    """Wait up to 5 s for ``done()``, the checkpointer's thread's doing."""
    for _ in range(100):
        if done():
            return
        threading.Event().wait(0.05)
    pytest.fail("the checkpointer's thread did not get there")


def stored(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM t")).scalar_one())


def test_the_log_is_checkpointed_beside_the_writer_every_few_pages(sqlite: Engine) -> None:
    recorded = Recorded(sqlite)
    checkpointer = Checkpointer(sqlite, every=4, connect=lambda: recorded)
    seen: list[int] = []
    with GroupWriter(sqlite, checkpointer=checkpointer) as writer:
        for number in range(10):  # one by one: each its own transaction
            writer.submit_page(page(sqlite, number, seen)).result(timeout=10)
            expected = (number + 1) // 4
            until(lambda: checkpointer.checkpoints == expected)  # noqa: B023  (awaited here)

    assert stored(sqlite) == 10 * ROWS_A_PAGE
    # The writer's connection leaves them to the checkpointer, but past FALLBACK_PAGES.
    assert seen == [FALLBACK_PAGES] * 10
    # At 4 and 8 pages, then the last two at the end: each on the checkpointer's thread.
    assert checkpointer.checkpoints == 3
    assert {(thread, statement) for thread, statement, _ in recorded.ran} == {
        ("checkpoint", "PRAGMA wal_checkpoint(PASSIVE)")
    }
    # (busy, pages of log, pages copied): the last one left nothing in the log uncopied.
    busy, log, copied = recorded.ran[-1][2][0]
    assert (busy, log) == (0, copied)
    assert log > 0


def connect_failing(engine: Engine, where: str) -> Any:
    """A connect for the checkpointer that fails ``where``: at "connect" or at "checkpoint"."""
    if where == "connect":

        def refused() -> Any:
            raise sqlite3.OperationalError("disk I/O error")

        return refused
    recorded = Recorded(engine, fail=True)
    return lambda: recorded


@pytest.mark.parametrize("where", ["connect", "checkpoint"])
def test_a_failing_checkpointer_gives_the_writer_its_own_checkpoints_back(
    sqlite: Engine, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    checkpointer = Checkpointer(sqlite, every=1, connect=connect_failing(sqlite, where))
    seen: list[int] = []
    with (
        caplog.at_level("INFO", logger="etl.store.checkpoint"),
        GroupWriter(sqlite, checkpointer=checkpointer) as writer,
    ):
        for number in range(4):
            writer.submit_page(page(sqlite, number, seen)).result(timeout=10)
            until(lambda: checkpointer.failed is not None)  # at its thread's start, or first

    assert checkpointer.failed == "OperationalError: disk I/O error"
    assert "checkpoints are left to the writer (OperationalError: disk I/O error)" in caplog.text
    assert stored(sqlite) == 4 * ROWS_A_PAGE  # nothing lost: the commits never needed it
    assert seen[0] == FALLBACK_PAGES
    assert seen[1:] == [1000, 1000, 1000]  # SQLite's default, the connection's own again
    assert not any(thread.name == "checkpoint" for thread in threading.enumerate())


def test_a_connection_that_cannot_be_taken_stops_the_checkpointer(sqlite: Engine) -> None:
    def refuse(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement == f"PRAGMA wal_autocheckpoint={FALLBACK_PAGES}":
            raise sqlite3.OperationalError("disk I/O error")

    checkpointer = Checkpointer(sqlite, connect=lambda: Recorded(sqlite))
    event.listen(sqlite, "before_cursor_execute", refuse)
    with sqlite.begin() as conn:
        assert not checkpointer.adopt(conn)
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one() == 1000

    assert checkpointer.failed is not None
    assert "disk I/O error" in checkpointer.failed
    until(lambda: not any(thread.name == "checkpoint" for thread in threading.enumerate()))


def test_a_writer_shut_down_without_waiting_checkpoints_its_last_pages(sqlite: Engine) -> None:
    recorded = Recorded(sqlite)
    checkpointer = Checkpointer(sqlite, every=100, connect=lambda: recorded)
    writer = GroupWriter(sqlite, checkpointer=checkpointer)
    writes = [writer.submit_page(page(sqlite, number, [])) for number in range(6)]
    writer.shutdown(wait=False)  # the writer still holds its pages

    assert [write.result(timeout=10) for write in writes] == list(range(6))
    until(lambda: not any(thread.name == "checkpoint" for thread in threading.enumerate()))
    assert checkpointer.checkpoints == 1  # the last, once the writer was done
    busy, log, copied = recorded.ran[-1][2][0]
    assert (busy, log) == (0, copied)
    assert log > 0


def test_a_connection_an_earlier_checkpointer_took_is_taken_over_and_given_back(
    sqlite: Engine,
) -> None:
    with sqlite.connect() as conn:  # one connection, as a reused engine's writers find it
        first = Checkpointer(sqlite, connect=lambda: Recorded(sqlite))
        assert first.adopt(conn)
        first.close()

        second = Checkpointer(sqlite, connect=lambda: Recorded(sqlite))
        assert second.adopt(conn)  # its thread starts, though the connection bears a mark
        second.committed(1)
        second.close()
        assert second.checkpoints == 1

        third = Checkpointer(sqlite, connect=connect_failing(sqlite, "connect"))
        assert third.adopt(conn)
        until(lambda: third.failed is not None)
        assert not third.adopt(conn)  # gives back the connection's own, not a fallback
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one() == 1000
        conn.commit()


def test_a_database_without_a_log_starts_no_checkpointer() -> None:
    engine = open_engine("sqlite://")  # in memory: its journal is not WAL
    connects: list[int] = []
    checkpointer = Checkpointer(engine, connect=lambda: connects.append(1))
    asked: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: asked.append(args[2]))
    with engine.begin() as conn:
        assert not checkpointer.adopt(conn)
        assert not checkpointer.adopt(conn)
        assert asked == ["BEGIN IMMEDIATE", "PRAGMA journal_mode"]  # asked once
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one() == 1000
    checkpointer.committed(100)
    checkpointer.close()
    assert checkpointer.checkpoints == 0
    assert connects == []
    engine.dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_first_sync_on_sqlite_checkpoints_beside_its_writer(
    api: FakeApi,
    world: World,
    database_url: str,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("DEBUG", logger="etl.store.checkpoint"):
        run = sync(api, database_url, per_page=5)  # 27 pages: 3 checkpoints and the last

    assert run.outcome == "succeeded"
    assert without_bookkeeping(read_rows(engine)) == expected_table(world)
    checkpoints = [r for r in caplog.records if r.getMessage().startswith("checkpoint ")]
    assert len(checkpoints) >= 2  # a request may join one not yet taken up
    assert {record.threadName for record in checkpoints} == {"checkpoint"}
