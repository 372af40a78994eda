"""Summarise the stored actions for auditors: by status, type, region and day; the odd ones."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Date, cast, func, select
from sqlalchemy.sql.elements import ColumnElement

from etl.store.schema import image_actions

ACTION_COLUMNS = ("id", "image_id", "type", "status", "region_slug", "started_at")
NO_REGION = "(none)"  # how the table for people shows a group without a value


@dataclass
class Section:
    """One table of the report: values as stored (None for missing, aware UTC datetimes)."""

    name: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    blank: str = ""  # how the table for people shows a missing value


@dataclass(frozen=True)
class ReportFilter:
    """Which actions every section counts: started in [since, until), of these images, etc."""

    since: datetime | None = None
    until: datetime | None = None
    images: Sequence[int] = field(default_factory=tuple)
    types: Sequence[str] = field(default_factory=tuple)
    statuses: Sequence[str] = field(default_factory=tuple)

    def conditions(self) -> list[ColumnElement[bool]]:
        """Return the WHERE conditions; an action without started_at fails since and until."""
        column = image_actions.c
        wanted: list[ColumnElement[bool]] = []
        if self.since is not None:
            wanted.append(column.started_at >= self.since)
        if self.until is not None:
            wanted.append(column.started_at < self.until)
        if self.images:
            wanted.append(column.image_id.in_(self.images))
        if self.types:
            wanted.append(column.type.in_(self.types))
        if self.statuses:
            wanted.append(column.status.in_(self.statuses))
        return wanted


def _utc_day(conn: Connection) -> ColumnElement[Any]:
    column = image_actions.c.started_at
    if conn.dialect.name in ("postgresql", "duckdb"):
        # timestamptz -> date follows the session's time zone (on DuckDB, the machine's
        # by default); pin it to UTC.
        return cast(func.timezone("UTC", column), Date)
    return func.date(column)  # SQLite and MariaDB store UTC already


def _day(value: Any) -> Any:
    """Return a day as YYYY-MM-DD, whatever type the dialect's date() gave."""
    if isinstance(value, datetime | date):
        return value.isoformat()[:10]
    return value


def _counts(
    conn: Connection,
    name: str,
    key: ColumnElement[Any],
    label: str,
    where: list[ColumnElement[bool]],
) -> Section:
    rows = conn.execute(
        select(key.label(label), func.count().label("actions"))
        .select_from(image_actions)
        .where(*where)
        .group_by(key)
        .order_by(key)
    )
    cleaned = [(_day(value), count) for value, count in rows]
    # Missing first, then by text, on every dialect alike.
    ordered = sorted(cleaned, key=lambda row: (row[0] is not None, str(row[0])))
    return Section(name, (label, "actions"), ordered, blank=NO_REGION)


def _actions(conn: Connection, name: str, *conditions: ColumnElement[bool]) -> Section:
    rows = conn.execute(
        select(*(image_actions.c[column] for column in ACTION_COLUMNS))
        .where(*conditions)
        .order_by(image_actions.c.started_at, image_actions.c.id)
    )
    return Section(name, ACTION_COLUMNS, [tuple(row) for row in rows])


def build_report(
    conn: Connection,
    *,
    now: datetime,
    stuck_after: timedelta,
    only: ReportFilter | None = None,
) -> list[Section]:
    """Return the report's sections, computed by the database, each narrowed by ``only``."""
    where = (only or ReportFilter()).conditions()
    actions = image_actions.c
    return [
        _counts(conn, "by_status", actions.status, "status", where),
        _counts(conn, "by_type", actions.type, "type", where),
        _counts(conn, "by_region", actions.region_slug, "region", where),
        _counts(conn, "by_day", _utc_day(conn), "day", where),
        _actions(conn, "errored", actions.status == "errored", *where),
        _actions(
            conn,
            "stuck_in_progress",
            actions.status == "in-progress",
            actions.started_at < now - stuck_after,
            *where,
        ),
        _actions(conn, "missing", actions.missing_since.is_not(None), *where),
    ]
