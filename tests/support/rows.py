"""Read whole tables back as plain dicts, for whole-value asserts."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Table, select

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
