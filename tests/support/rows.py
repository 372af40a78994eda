"""Read whole tables back as plain dicts, for whole-value asserts; rows made ready the long way."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Table, select

from etl.model import ActionRow
from etl.ready import Ready, copy_line, naive_stamp, ready_values, zoned_stamp
from etl.store.schema import image_actions


def read_rows(engine: Engine, table: Table = image_actions) -> list[dict[str, Any]]:
    """Return every row of ``table`` as a dict, ordered by primary key."""
    with engine.connect() as conn:
        result = conn.execute(select(table).order_by(*table.primary_key.columns))
        return [dict(row._mapping) for row in result]


def as_stored(row: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """Return the image_actions row a transformed ``row`` becomes when written at ``now``."""
    columns = image_actions.columns.keys()
    stamps = {"first_seen_at": now, "changed_at": now, "missing_since": None}
    return {**{k: v for k, v in row.items() if k in columns}, **stamps}


def without_bookkeeping(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return rows without first_seen_at and changed_at, which differ run to run."""
    return [
        {k: v for k, v in row.items() if k not in ("first_seen_at", "changed_at")} for row in rows
    ]


def ready_row(row: ActionRow, form: str) -> Ready:
    """Return transform's row in the driver's ``form`` the long way, value by value.

    The reference etl.ready.ready_action is held to; a row COPY text cannot spell stays a
    tuple, as there.
    """
    if form == "naive":
        return ready_values(row, naive_stamp)
    ready = ready_values(row, zoned_stamp)
    if form == "zoned":
        return ready
    try:
        return copy_line(ready)
    except (TypeError, UnicodeEncodeError):
        return ready
