"""The run ledger and per-image state for every outcome; the lock; deferral; all images."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import pytest
from sqlalchemy import Engine

from etl import __version__
from etl.errors import LockedOutError
from etl.fake import FakeApi, World
from etl.store.database import open_engine
from etl.store.lock import SyncLock
from etl.store.migrate import head_revision
from etl.store.schema import image_sync_state, sync_runs
from etl.sync.run import run_sync
from tests.support.cli import overlapping_syncs, run_cli, sync_args
from tests.support.databases import DIALECT_PARAMS
from tests.support.doubles import TOKEN
from tests.support.oracle import expected_table
from tests.support.rows import read_rows, without_bookkeeping
from tests.support.runs import settings_for, sync
from tests.support.scripted import ScriptedApi

VOLATILE = ("id", "started_at", "finished_at", "rate_limit_wait_seconds")


class Crash(BaseException):
    """Stands in for a process dying: nothing of ours catches it."""


def ledger(engine: Engine) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in row.items() if k not in VOLATILE} for row in read_rows(engine, sync_runs)
    ]


def expected_run(**changes: Any) -> dict[str, Any]:
    return {
        "outcome": "succeeded",
        "mode": "incremental",
        "images_requested": [62137902, 62138915, 62139928],
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "tool_version": __version__,
        "schema_revision": head_revision(),
        "images_synced": 3,
        "images_failed": 0,
        "pages": 9,
        "requests": 9,
        "retries": 0,
        "rows_inserted": 135,
        "rows_updated": 0,
        "rows_unchanged": 0,
        "rows_rejected": 0,
        "meta_total_sum": 135,
        "error": None,
        "unknown_statuses": 0,
        "rows_missing": 0,
        "rows_listed_elsewhere": 0,
        "strategy": "per-image",
        "feed_pages": 0,
        "image_pages": 9,
        "single_actions": 0,
        "image_list_pages": 0,
        "audit_requests": 0,
        "images_audited": 0,
        "feed_misses": 0,
        **changes,
    }


def test_ledger_records_a_succeeded_run(api: FakeApi, engine: Engine, database_url: str) -> None:
    run = sync(api, database_url)

    assert ledger(engine) == [expected_run()]
    [row] = read_rows(engine, sync_runs)
    assert row["id"] == run.run_id
    assert row["started_at"] <= row["finished_at"]
    states = read_rows(engine, image_sync_state)
    assert [(s["image_id"], s["last_meta_total"], s["gone"], s["last_error"]) for s in states] == [
        (image_id, 45, False, None) for image_id in api.world.actions
    ]
    # Saved in one batch after the images finished and before the run closed.
    assert [s["last_success_at"] for s in states] == [s["last_attempt_at"] for s in states]
    assert all(row["started_at"] <= s["last_success_at"] <= row["finished_at"] for s in states)
    assert len({s["last_success_at"] for s in states}) == 1


def test_ledger_records_a_partial_run_and_a_gone_image(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    images = tuple(api.world.actions)
    sync(api, database_url)
    gone = images[0]
    del api.world.actions[gone]

    sync(api, database_url, images=images)

    runs = ledger(engine)
    assert runs[1]["outcome"] == "partial"
    assert (runs[1]["images_synced"], runs[1]["images_failed"]) == (2, 1)
    state = {s["image_id"]: s for s in read_rows(engine, image_sync_state)}
    assert state[gone]["gone"] is True
    assert "was not found (404)" in state[gone]["last_error"]
    assert state[gone]["last_success_at"] is not None  # kept from the first run
    assert state[gone]["last_meta_total"] == 45
    assert len(read_rows(engine)) == 135  # its actions stay for the audit trail


def test_ledger_records_a_failed_run_without_the_token(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    run = sync(api, database_url, token="wrong-" + TOKEN)

    [row] = ledger(engine)
    assert row["outcome"] == "failed"
    assert "refused the token" in row["error"]
    assert TOKEN not in str(read_rows(engine, sync_runs))
    assert run.outcome == "failed"


def test_ledger_records_a_deferred_run_when_the_budget_is_nearly_spent(
    world: World, engine: Engine, database_url: str
) -> None:
    with ScriptedApi(world, token=TOKEN, hourly_limit=10) as api:
        run = sync(api, database_url, min_ratelimit_remaining=5)

        served = len(api.served)
        assert run.outcome == "deferred"
        # Requests in flight count as spent, and answers to concurrent requests arrive in
        # any order, so the run may stop a request or two early; never late, never a 429.
        assert 4 <= served <= 6
        assert all(entry.status == 200 for entry in api.served)
    [row] = ledger(engine)
    assert (row["outcome"], row["requests"]) == ("deferred", served)
    assert "is below min_ratelimit_remaining 5" in row["error"]


@pytest.mark.slow
def test_cli_deferred_run_exits_5_and_the_next_run_carries_on(
    world: World, engine: Engine, database_url: str
) -> None:
    with ScriptedApi(world, token=TOKEN, hourly_limit=10) as api:
        env = {"DO_IMAGE_ACTIONS_MIN_RATELIMIT_REMAINING": "5"}
        deferred = run_cli(*sync_args(api, database_url), env=env)
        api.hourly_limit = 5000

        carried_on = run_cli(*sync_args(api, database_url), env=env)

    assert deferred.returncode == 5, deferred.stderr
    assert "next run carries on" in deferred.stderr
    assert carried_on.returncode == 0, carried_on.stderr
    assert without_bookkeeping(read_rows(engine)) == expected_table(world)


def test_ledger_finishes_a_run_that_an_unexpected_error_ended_as_failed(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    def crash(_image: object) -> None:
        raise Crash("the bug's own words")

    with pytest.raises(Crash):
        run_sync(settings_for(api, database_url), on_page=crash, sleep=lambda s: None)

    [row] = read_rows(engine, sync_runs)
    assert row["outcome"] == "failed"
    assert row["finished_at"] is not None
    assert row["error"] == "unexpected error (Crash: the bug's own words)"
    assert sync(api, database_url).outcome == "succeeded"  # the lock was not left behind


def test_ledger_records_a_locked_out_run(api: FakeApi, engine: Engine, database_url: str) -> None:
    holder = SyncLock(engine, host="other-host", pid=424242)
    holder.acquire_server_lock()
    holder.claim()
    try:
        run = sync(api, database_url)
    finally:
        holder.release()

    assert run.outcome == "locked_out"
    assert "pid 424242 on other-host" in (run.error or "")
    assert [row["outcome"] for row in ledger(engine)] == ["locked_out"]
    assert api.served == []


HOLD_LOCK = """
import sys, time
from etl.store.database import open_engine
from etl.store.lock import SyncLock
lock = SyncLock(open_engine(sys.argv[1]))
lock.acquire_server_lock()
lock.claim()
print("held", flush=True)
time.sleep(60)
"""


def wait_until_the_server_lock_is_free(engine: Engine, seconds: float = 30) -> None:
    """Return once PostgreSQL or MariaDB has freed a killed session's lock (SQLite has none).

    The server frees it only when it notices the closed socket: poll, with a deadline.
    """
    probe = SyncLock(engine, host="probe", pid=0)
    deadline = time.monotonic() + seconds
    while True:
        try:
            probe.acquire_server_lock()
        except LockedOutError:
            if time.monotonic() > deadline:
                pytest.fail(f"the server still held the dead session's lock after {seconds} s")
            time.sleep(0.01)
        else:
            probe.release()
            return


@pytest.mark.slow
def test_a_lock_left_by_a_killed_process_is_taken_over(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, database_url], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    assert sync(api, database_url).outcome == "locked_out"

    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    holder.stdout.close()
    wait_until_the_server_lock_is_free(engine)

    assert sync(api, database_url).outcome == "succeeded"


def test_sqlite_lease_expired_or_dead_holder_is_taken_over(tmp_path: Any) -> None:
    from datetime import timedelta

    from etl.store.database import open_engine
    from etl.store.migrate import upgrade
    from etl.timeutil import utc_now

    engine = open_engine(f"sqlite:///{tmp_path / 'lease.db'}")
    upgrade(engine)
    live_elsewhere = SyncLock(engine, host="elsewhere", pid=1)
    live_elsewhere.claim()

    with pytest.raises(LockedOutError, match="pid 1 on elsewhere"):
        SyncLock(engine, host="here", pid=2).claim()
    later = SyncLock(engine, host="here", pid=2, now=lambda: utc_now() + timedelta(minutes=16))
    later.claim()  # the lease expired

    dead = SyncLock(engine, host="here", pid=3, alive=lambda pid: pid != 2)
    dead.claim()  # pid 2 holds it on this host but is gone
    with pytest.raises(LockedOutError):
        SyncLock(engine, host="here", pid=4, alive=lambda pid: True).claim()
    engine.dispose()


@pytest.mark.slow
# DuckDB keeps the second process out of the file, ledger and all: tests/test_duckdb.py.
@pytest.mark.parametrize("database_url", DIALECT_PARAMS[:3], indirect=True)
def test_two_concurrent_syncs_exactly_one_runs(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    first, first_err, second = overlapping_syncs(api, database_url)

    assert first.returncode == 0, first_err
    assert second.returncode == 4
    assert (
        f"another sync holds the lock (pid {first.pid} on {socket.gethostname()}" in second.stderr
    )
    assert sorted(row["outcome"] for row in ledger(engine)) == ["locked_out", "succeeded"]
    assert without_bookkeeping(read_rows(engine)) == expected_table(api.world)


def test_all_images_pages_through_the_account(
    world: World, engine: Engine, database_url: str
) -> None:
    world = World.generate(images=7, actions_per_image=4, seed=3)
    world.images[99] = {**next(iter(world.images.values())), "id": 99}  # listed, then 404s
    with ScriptedApi(world, token=TOKEN) as api:
        run = sync(api, database_url, images=(), all_images=True, per_page=3)

        image_pages = [
            e.query.get("page") for e in api.requests_to("/v2/images") if e.path == "/v2/images"
        ]
    assert image_pages == ["1", "2", "3"]
    assert [image.image_id for image in run.images] == [*sorted(world.actions), 99]
    assert run.outcome == "partial"
    assert run.images[-1].gone
    assert without_bookkeeping(read_rows(engine)) == expected_table(world)
    [row] = ledger(engine)
    assert row["images_requested"] == "all"


@pytest.mark.slow
def test_max_rejected_turns_a_flood_of_bad_rows_into_a_failure(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    image_id = next(iter(api.world.actions))
    for action in api.world.actions[image_id][:30]:
        action["started_at"] = "not a time"

    result = run_cli(*sync_args(api, database_url, "--max-rejected", "25"))

    assert result.returncode == 1
    assert "actions were rejected, more than max_rejected=25; see the rejected_actions" in (
        result.stderr
    )
    [row] = ledger(engine)
    assert row["outcome"] == "failed"
    assert row["rows_rejected"] == 30  # the page that crossed the limit was stored first
    assert row["pages"] >= 2  # other workers' images may have committed pages meanwhile


def test_a_run_stopped_mid_scan_counts_each_written_page_once(tmp_path: Any) -> None:
    """The page that crosses max_rejected is written and counted once, not again on the way
    out; so is a page already handed to the writer, and no page after it."""
    database_url = f"sqlite:///{tmp_path / 'stop.db'}"
    world = World.generate(images=1, actions_per_image=80, seed=3)
    [image_id] = world.actions
    for action in world.actions[image_id][20:25]:  # newest first: page 2 of 4
        action["started_at"] = "not a time"
    with FakeApi(world, token=TOKEN) as api:
        result = sync(api, database_url, per_page=20, workers=1, max_rejected=3)

    engine = open_engine(database_url)
    try:
        [row] = ledger(engine)
        with engine.connect() as conn:
            stored = conn.exec_driver_sql("SELECT count(*) FROM image_actions").scalar()
            dead = conn.exec_driver_sql("SELECT count(*) FROM rejected_actions").scalar()
    finally:
        engine.dispose()
    assert result.outcome == "failed"
    # SQLite's writer took page 3 before page 2 was answered: written, it is counted too.
    assert (stored, dead) == (55, 5)
    assert (row["pages"], row["rows_inserted"], row["rows_rejected"]) == (3, 55, 5)
