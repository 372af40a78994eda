"""Record runs, per-image sync state and rejected actions; read back what they say."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update

from etl import __version__
from etl.errors import DatabaseError
from etl.load import upsert_statement
from etl.schema import image_actions, image_sync_state, rejected_actions, sync_runs

MAX_ERROR_TEXT = 2000

COUNTERS = (
    "images_synced",
    "images_failed",
    "pages",
    "requests",
    "retries",
    "rate_limit_wait_seconds",
    "rows_inserted",
    "rows_updated",
    "rows_unchanged",
    "rows_rejected",
    "meta_total_sum",
)


@dataclass(frozen=True)
class Rejected:
    """An action that could not become a row."""

    action_id: int | None
    reason: str
    payload: Any


def start_run(
    engine: Engine,
    *,
    mode: str,
    images_requested: Sequence[int] | str,
    schema_revision: str,
    now: datetime,
    outcome: str = "running",
) -> int:
    """Write the run's row at its start and return its id; a crash leaves it unfinished."""
    values: dict[str, Any] = {
        "started_at": now,
        "outcome": outcome,
        "mode": mode,
        "images_requested": images_requested
        if isinstance(images_requested, str)
        else list(images_requested),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "tool_version": __version__,
        "schema_revision": schema_revision,
        **dict.fromkeys(COUNTERS, 0),
    }
    with engine.begin() as conn:
        key = conn.execute(insert(sync_runs).values(**values)).inserted_primary_key
    if key is None:
        raise DatabaseError("the database did not return the new run's id")
    return int(key[0])


def finish_run(
    engine: Engine,
    run_id: int,
    *,
    outcome: str,
    counters: dict[str, float],
    error: str | None,
    now: datetime,
) -> None:
    """Close the run's row with its outcome, tallies and (token-free) error text."""
    with engine.begin() as conn:
        conn.execute(
            update(sync_runs)
            .where(sync_runs.c.id == run_id)
            .values(
                finished_at=now,
                outcome=outcome,
                error=error[:MAX_ERROR_TEXT] if error else None,
                **counters,
            )
        )


def save_image_state(
    conn: Connection,
    *,
    image_id: int,
    run_id: int,
    now: datetime,
    ok: bool,
    meta_total: int | None,
    error: str | None,
    gone: bool,
) -> None:
    """Upsert an image's sync state after it was synced (or failed)."""
    values: dict[str, Any] = {
        "image_id": image_id,
        "last_attempt_at": now,
        "last_meta_total": meta_total,
        "last_error": error[:MAX_ERROR_TEXT] if error else None,
        "gone": gone,
        "last_run_id": run_id,
    }
    previous = conn.execute(
        select(image_sync_state.c.last_success_at, image_sync_state.c.last_meta_total).where(
            image_sync_state.c.image_id == image_id
        )
    ).first()
    values["last_success_at"] = now if ok else (previous.last_success_at if previous else None)
    if meta_total is None and previous is not None:
        values["last_meta_total"] = previous.last_meta_total
    conn.execute(upsert_statement(conn.dialect.name, image_sync_state), [values])


def save_rejected(
    conn: Connection, rejected: Sequence[Rejected], *, run_id: int, image_id: int, now: datetime
) -> None:
    """Store dead letters with their raw payload and reason."""
    if rejected:
        conn.execute(
            insert(rejected_actions),
            [
                {
                    "run_id": run_id,
                    "image_id": image_id,
                    "action_id": item.action_id,
                    "reason": item.reason[:MAX_ERROR_TEXT],
                    "payload": item.payload,
                    "rejected_at": now,
                }
                for item in rejected
            ],
        )


def stored_count(conn: Connection, image_id: int) -> int:
    """Return how many actions are stored for an image."""
    query = select(func.count()).select_from(image_actions)
    return int(conn.execute(query.where(image_actions.c.image_id == image_id)).scalar_one())


def in_progress_ids(conn: Connection, image_id: int) -> list[int]:
    """Return the ids of an image's actions stored as in-progress."""
    query = select(image_actions.c.id).where(
        image_actions.c.image_id == image_id, image_actions.c.status == "in-progress"
    )
    return list(conn.execute(query.order_by(image_actions.c.id)).scalars())


def last_success_at(conn: Connection) -> datetime | None:
    """Return when the last succeeded run finished."""
    # ORDER BY the column (not MAX()) keeps its type, so SQLite gives an aware datetime too.
    query = (
        select(sync_runs.c.finished_at)
        .where(sync_runs.c.outcome == "succeeded", sync_runs.c.finished_at.is_not(None))
        .order_by(sync_runs.c.finished_at.desc())
        .limit(1)
    )
    value: datetime | None = conn.execute(query).scalar()
    return value
