"""A row's values as the database drivers take them: timestamps and JSON already text.

SQLAlchemy would format each value per row as it binds it; the bulk writers (see
etl.store.bulk) hand the driver these instead. Pure and light: the page helper process
(etl.sync.prepare) makes them beside the run.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from etl.model import ActionRow

STAMP = "%04d-%02d-%02d %02d:%02d:%02d.%06d"  # as isoformat(" ", "microseconds") writes it
MAX_LISTS_KEPT = 1024  # distinct region lists remembered as JSON text; the API has a few dozen
# The row's own columns, in image_actions' order; the writer adds first_seen_at, changed_at
# and missing_since. Where a ready row keeps what load needs of it:
ID, IMAGE_ID, PAYLOAD_JSON, CONTENT_HASH = 0, 1, 13, 14

Ready = tuple[Any, ...]  # ready_values' tuple
Row = ActionRow | Ready  # what the writers take
Stamp = Callable[[datetime | None], str | None]


def _utc(value: datetime) -> datetime:
    """Return ``value`` in UTC; a naive one is refused, as UtcDateTime refuses it."""
    if value.tzinfo is UTC:  # transform's are
        return value
    if value.tzinfo is None:
        raise ValueError("a naive datetime has no zone to store it in; attach one")
    return value.astimezone(UTC)


def naive_stamp(value: datetime | None) -> str | None:
    """Return UTC as SQLAlchemy stores it on SQLite and MySQL: 'YYYY-MM-DD HH:MM:SS.ffffff'."""
    if value is None:
        return None
    at = _utc(value)  # formatted from its fields: a third cheaper than an aware isoformat
    return STAMP % (at.year, at.month, at.day, at.hour, at.minute, at.second, at.microsecond)


def zoned_stamp(value: datetime | None) -> str | None:
    """Return an instant as PostgreSQL's text input reads it, zone included."""
    return None if value is None else f"{naive_stamp(value)}+00:00"


STAMPS: dict[str, Stamp] = {"naive": naive_stamp, "zoned": zoned_stamp}

_listed: dict[tuple[str, ...], str] = {}  # a region list's JSON text, by its items


def json_list(value: list[str] | None) -> str:
    """Return a region list as JSON text; no list is JSON null, as SQLAlchemy's JSON writes it."""
    if value is None:
        return "null"
    key = tuple(value)  # a region's lists repeat on every action listed in it
    text = _listed.get(key)
    if text is None:
        text = orjson.dumps(value).decode()
        if len(_listed) < MAX_LISTS_KEPT:
            _listed[key] = text
    return text


def ready_values(row: ActionRow, stamp: Stamp) -> Ready:
    """Return a row's own columns in image_actions' order, each value ready for the driver."""
    return (
        row["id"],
        row["image_id"],
        row["status"],
        row["type"],
        stamp(row["started_at"]),
        stamp(row["completed_at"]),
        row["resource_id"],
        row["resource_type"],
        row["region_slug"],
        row["region_name"],
        row["region_available"],
        json_list(row["region_features"]),
        json_list(row["region_sizes"]),
        row["payload_json"],
        row["content_hash"],
    )
