"""Read the run ledger and per-image state, and judge whether syncing is healthy."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select

from etl.store.ledger import last_success_at
from etl.store.schema import image_sync_state, sync_runs

RUN_COLUMNS = (
    "id",
    "started_at",
    "finished_at",
    "outcome",
    "mode",
    "images_synced",
    "images_failed",
    "rows_inserted",
    "rows_updated",
    "rows_unchanged",
    "rows_rejected",
    "requests",
    "error",
)
IMAGE_COLUMNS = ("image_id", "last_success_at", "last_meta_total", "gone", "last_error")


@dataclass
class Status:
    """Recent runs, newest first, and every image's sync state."""

    runs: list[dict[str, Any]]
    images: list[dict[str, Any]]
    last_success: datetime | None

    def health(self, *, now: datetime, max_age: timedelta | None) -> tuple[bool, str]:
        """Return whether syncing is healthy, and why (not)."""
        finished = [run for run in self.runs if run["finished_at"] is not None]
        if not finished:
            return False, "no finished run is recorded yet"
        last = finished[0]
        if last["outcome"] == "failed":
            return False, f"the last run (id {last['id']}) failed: {last['error']}"
        if max_age is not None:
            if self.last_success is None:
                return False, "no run has succeeded yet"
            age = now - self.last_success
            if age > max_age:
                return False, f"the last success was {_ago(age)} ago, more than {_ago(max_age)}"
        return True, f"the last run (id {last['id']}) {last['outcome']}"


def _ago(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def read_status(conn: Connection, *, runs: int = 10) -> Status:
    """Return the ``runs`` newest runs and every image's state."""
    # Read each result whole before the next query: duckdb-engine gives a connection one
    # cursor, so a second query would overwrite rows not yet fetched.
    run_rows = conn.execute(
        select(*(sync_runs.c[name] for name in RUN_COLUMNS))
        .order_by(sync_runs.c.id.desc())
        .limit(runs)
    ).all()
    image_rows = conn.execute(
        select(*(image_sync_state.c[name] for name in IMAGE_COLUMNS)).order_by(
            image_sync_state.c.image_id
        )
    )
    return Status(
        runs=[dict(row._mapping) for row in run_rows],
        images=[dict(row._mapping) for row in image_rows],
        last_success=last_success_at(conn),
    )
