"""Summarise the stored actions for auditors: by status, type, region and day; the odd ones."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Date, cast, func, select
from sqlalchemy.sql.elements import ColumnElement

from etl.ops.tables import format_table
from etl.store.schema import image_actions

ACTION_COLUMNS = ("id", "image_id", "type", "status", "region_slug", "started_at")
NO_REGION = "(none)"


@dataclass
class Section:
    """One table of the report."""

    name: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


def _utc_day(conn: Connection) -> ColumnElement[Any]:
    column = image_actions.c.started_at
    if conn.dialect.name in ("postgresql", "duckdb"):
        # timestamptz -> date follows the session's time zone (on DuckDB, the machine's
        # by default); pin it to UTC.
        return cast(func.timezone("UTC", column), Date)
    return func.date(column)  # SQLite and MariaDB store UTC already


def _counts(conn: Connection, name: str, key: ColumnElement[Any], label: str) -> Section:
    rows = conn.execute(
        select(key.label(label), func.count().label("actions"))
        .select_from(image_actions)
        .group_by(key)
        .order_by(key)
    )
    cleaned = [(NO_REGION if value is None else _plain(value), count) for value, count in rows]
    return Section(name, (label, "actions"), sorted(cleaned, key=lambda row: str(row[0])))


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()[:10]
    return value


def _actions(conn: Connection, name: str, *conditions: ColumnElement[bool]) -> Section:
    rows = conn.execute(
        select(*(image_actions.c[column] for column in ACTION_COLUMNS))
        .where(*conditions)
        .order_by(image_actions.c.started_at, image_actions.c.id)
    )
    return Section(
        name,
        ACTION_COLUMNS,
        [tuple(v.isoformat() if isinstance(v, datetime) else v for v in row) for row in rows],
    )


def build_report(conn: Connection, *, now: datetime, stuck_after: timedelta) -> list[Section]:
    """Return the report's sections, computed by the database."""
    return [
        _counts(conn, "by_status", image_actions.c.status, "status"),
        _counts(conn, "by_type", image_actions.c.type, "type"),
        _counts(conn, "by_region", image_actions.c.region_slug, "region"),
        _counts(conn, "by_day", _utc_day(conn), "day"),
        _actions(conn, "errored", image_actions.c.status == "errored"),
        _actions(
            conn,
            "stuck_in_progress",
            image_actions.c.status == "in-progress",
            image_actions.c.started_at < now - stuck_after,
        ),
        _actions(conn, "missing", image_actions.c.missing_since.is_not(None)),
    ]


def render_table(sections: list[Section]) -> str:
    """Return the sections as aligned plain-text tables."""
    blocks = [
        f"{section.name}:\n{format_table(section.rows, section.columns)}"
        + ("" if section.rows else "\n(none)")
        for section in sections
    ]
    return "\n\n".join(blocks) + "\n"


def render_csv(sections: list[Section]) -> str:
    """Return the sections as CSV tables, each led by a header whose first column is section."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for index, section in enumerate(sections):
        if index:
            out.write("\n")
        writer.writerow(("section", *section.columns))
        writer.writerows((section.name, *row) for row in section.rows)
    return out.getvalue()


def render_json(sections: list[Section]) -> str:
    """Return the sections as one JSON object of lists of records."""
    return (
        json.dumps(
            {s.name: [dict(zip(s.columns, row, strict=True)) for row in s.rows] for s in sections},
            indent=2,
        )
        + "\n"
    )
