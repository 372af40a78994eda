"""DuckDB's own ways: one process per file, a driver that is optional."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer

import etl.store.duckdb_alembic  # noqa: F401 (DuckDB's Alembic impl)
from etl.errors import LockedOutError
from etl.fake import FakeApi
from etl.source.transform import flatten_action
from etl.store.database import open_engine
from etl.store.load import UpsertCounts, upsert_actions
from etl.store.lock import SyncLock
from etl.store.schema import sync_runs
from tests.support.cli import overlapping_syncs, run_cli, sync_args
from tests.support.databases import migrated_engine
from tests.support.doubles import TOKEN
from tests.support.oracle import expected_table
from tests.support.rows import read_rows, without_bookkeeping

pytestmark = pytest.mark.slow  # the fast tier stays SQLite only

# A program other than a sync holding the file, as a notebook with a read-write connection does.
HOLDER = (
    "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('open', flush=True); "
    "sys.stdin.read()"
)


@pytest.fixture
def duckdb_url(tmp_path: Path) -> str:
    return f"duckdb:///{tmp_path / 'actions.duckdb'}"


def test_a_second_sync_of_a_held_duckdb_file_exits_4_naming_the_holder(
    api: FakeApi, duckdb_url: str
) -> None:
    first, first_err, second = overlapping_syncs(api, duckdb_url)

    assert first.returncode == 0, first_err
    assert second.returncode == 4, second.stderr
    assert (
        f"holds the DuckDB file {duckdb_url.removeprefix('duckdb:///')} open (PID {first.pid}:"
        in (second.stderr)
    )
    assert "Traceback" not in second.stderr
    assert second.stdout.startswith("total locked_out (incremental): 0 images")
    engine = open_engine(duckdb_url)
    # The second run could not open the file, so only the first one is in the ledger.
    assert [row["outcome"] for row in read_rows(engine, sync_runs)] == ["succeeded"]
    assert without_bookkeeping(read_rows(engine)) == expected_table(api.world)
    engine.dispose()


def test_a_program_holding_the_duckdb_file_locks_out_sync_and_status(
    api: FakeApi, duckdb_url: str
) -> None:
    assert run_cli(*sync_args(api, duckdb_url)).returncode == 0
    path = duckdb_url.removeprefix("duckdb:///")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "open\n"
        locked = run_cli(*sync_args(api, duckdb_url))
        status = run_cli("status", "--database-url", duckdb_url)
    finally:
        holder.communicate(timeout=30)  # closing its stdin lets it end, and the file go
    after = run_cli(*sync_args(api, duckdb_url))

    assert locked.returncode == 4
    assert f"open (PID {holder.pid}: another sync, or a program with the file open" in locked.stderr
    assert status.returncode == 1
    assert f"is open in another process (PID {holder.pid}): DuckDB lets one process" in (
        status.stderr
    )
    assert "Traceback" not in locked.stderr + status.stderr
    assert after.returncode == 0, after.stderr


def test_two_runs_in_one_process_keep_each_other_out_of_a_duckdb_file(duckdb_url: str) -> None:
    folder, name = duckdb_url.rsplit("/", 1)
    same_file = f"{folder}/./{name}"  # the same file, spelled differently
    first_engine, second_engine = open_engine(duckdb_url), open_engine(same_file)
    first = SyncLock(first_engine)
    first.acquire_server_lock()
    with pytest.raises(
        LockedOutError, match=f"another sync holds the lock \\(pid {os.getpid()} on"
    ):
        SyncLock(second_engine).acquire_server_lock()
    first.release()
    second = SyncLock(second_engine)
    second.acquire_server_lock()  # free again once the first let go
    second.release()
    first_engine.dispose()
    second_engine.dispose()


def test_a_missing_duckdb_driver_names_the_extra_to_install(tmp_path: Path) -> None:
    # An interpreter where duckdb-engine cannot be imported, as without the extra.
    code = (
        "import sys; sys.modules['duckdb_engine'] = None; from etl.ops.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    url = f"duckdb:///{tmp_path / 'x.duckdb'}"
    result = subprocess.run(
        [sys.executable, "-c", code, "sync", "--database-url", url, "--image", "1"],
        env={**os.environ, "DIGITALOCEAN_ACCESS_TOKEN": TOKEN},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert "pip install 'do-image-actions[duckdb]'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.duckdb").exists()


def test_two_threads_writing_one_row_take_turns(duckdb_url: str) -> None:
    # DuckDB fails the second of two open transactions that write one row; the run's
    # threads share one connection, so the second waits for the first instead.
    engine = migrated_engine(duckdb_url)
    engine.dispose()
    engine = open_engine(duckdb_url)  # as a run opens it
    now = datetime(2026, 3, 1, tzinfo=UTC)
    first_wrote, second_done = threading.Event(), threading.Event()
    outcomes: dict[str, object] = {}

    def write(status: str) -> UpsertCounts:
        with engine.begin() as conn:
            counts = upsert_actions(conn, [flatten_action(raw(status), image_id=7)], now=now)
            if status == "in-progress":
                first_wrote.set()
                second_done.wait(timeout=0.5)  # the second is blocked until this commits
            return counts

    def second() -> None:
        first_wrote.wait(timeout=10)
        try:
            outcomes["second"] = write("completed")
        except Exception as exc:  # a conflict, if the threads did not take turns
            outcomes["second"] = exc
        second_done.set()

    thread = threading.Thread(target=second)
    thread.start()
    outcomes["first"] = write("in-progress")
    thread.join(timeout=30)

    assert outcomes == {"first": UpsertCounts(inserted=1), "second": UpsertCounts(updated=1)}
    assert [row["status"] for row in read_rows(engine)] == ["completed"]
    engine.dispose()


def raw(status: str) -> dict[str, object]:
    return {
        "id": 1,
        "status": status,
        "type": "transfer",
        "started_at": "2026-03-01T10:00:00Z",
        "completed_at": None,
        "resource_id": 7,
        "resource_type": "image",
        "region": None,
    }


def test_altering_a_table_others_depend_on_keeps_them_whole(duckdb_url: str) -> None:
    # DuckDB refuses this ALTER while an index or a foreign key depends on the table: the
    # Alembic impl lifts them aside and puts them back, rows, index and comment included.
    engine = open_engine(duckdb_url)
    statements = [
        "CREATE TABLE runs (id INTEGER PRIMARY KEY)",
        "CREATE INDEX ix_runs ON runs (id)",
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, run_id INTEGER REFERENCES runs (id), "
        "said VARCHAR DEFAULT 'at :noon')",
        "CREATE INDEX ix_notes_run_id ON notes (run_id)",
        "COMMENT ON TABLE notes IS 'kept :as written'",
        "INSERT INTO runs VALUES (1), (2)",
        "INSERT INTO notes (id, run_id) VALUES (10, 1), (11, 2)",
    ]
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
        Operations(MigrationContext.configure(conn)).add_column(
            "runs", Column("pages", Integer, nullable=False, server_default="0")
        )

    with engine.connect() as conn:
        runs = conn.exec_driver_sql("SELECT id, pages FROM runs ORDER BY id").all()
        notes = conn.exec_driver_sql("SELECT id, run_id, said FROM notes ORDER BY id").all()
        catalog = conn.exec_driver_sql(
            "SELECT (SELECT comment FROM duckdb_tables() WHERE table_name = 'notes'), "
            "(SELECT list(index_name ORDER BY index_name) FROM duckdb_indexes())"
        ).one()
    engine.dispose()
    assert runs == [(1, 0), (2, 0)]
    assert notes == [(10, 1, "at :noon"), (11, 2, "at :noon")]
    assert tuple(catalog) == ("kept :as written", ["ix_notes_run_id", "ix_runs"])
