"""The account feed's watermark, and what the feed strategy asks of per-image state."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select

from etl.store.schema import feed_state, image_sync_state
from etl.store.upsert import upsert_statement

FEED = "actions"  # feed_state's one row: GET /v2/actions


@dataclass(frozen=True)
class Watermark:
    """The newest feed action a complete run processed, and the feed's meta.total then."""

    action_id: int
    meta_total: int


def load_watermark(conn: Connection) -> Watermark | None:
    """Return the stored watermark, or None before the first complete run."""
    row = conn.execute(
        select(feed_state.c.watermark_id, feed_state.c.meta_total).where(feed_state.c.name == FEED)
    ).first()
    return Watermark(row.watermark_id, row.meta_total) if row else None


def save_watermark(conn: Connection, mark: Watermark, *, run_id: int, now: datetime) -> None:
    """Store the watermark a complete run reached."""
    conn.execute(
        upsert_statement(conn.dialect.name, feed_state),
        [
            {
                "name": FEED,
                "watermark_id": mark.action_id,
                "meta_total": mark.meta_total,
                "run_id": run_id,
                "updated_at": now,
            }
        ],
    )


@dataclass(frozen=True)
class Checked:
    """When an image was last scanned, and what that scan left."""

    at: datetime
    gone: bool  # the API said the image is gone
    complete: bool  # the stored actions were the image's whole listing when it ended


def last_checked(conn: Connection, image_ids: Sequence[int]) -> dict[int, Checked]:
    """Return when each image was last scanned; images never scanned are absent."""
    found: dict[int, Checked] = {}
    state = image_sync_state.c
    for start in range(0, len(image_ids), 1000):
        chunk = list(image_ids[start : start + 1000])
        query = select(state.image_id, state.last_attempt_at, state.gone, state.scan_complete)
        for row in conn.execute(query.where(state.image_id.in_(chunk))):
            found[row.image_id] = Checked(row.last_attempt_at, row.gone, row.scan_complete)
    return found
