"""The floor: the cheapest way this machine fetches the same pages and upserts their rows.

Fetch: one requests.Session (not rereading the environment's proxy settings per request, as
requests does by default) GETs every page of every image in order (page 1, then each next
link) and parses each body with orjson.loads; only that is timed.

Upsert: the driver itself, no SQLAlchemy statement and no bind processing, on tuples prepared
before the clock starts (payload and region lists already JSON text from orjson, timestamps
already text, content hash already computed), into the fresh database it is handed:

- SQLite: one sqlite3 executemany of INSERT ... ON CONFLICT (id) DO UPDATE, one commit;
- PostgreSQL: psycopg COPY into a temporary table, one INSERT ... SELECT ... ON CONFLICT
  (id) DO UPDATE, one commit;
- MariaDB/MySQL: one pymysql executemany of INSERT ... ON DUPLICATE KEY UPDATE (which
  pymysql sends as large multi-row INSERTs), one commit.

The upsert's clock runs from connecting to the commit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import requests
from sqlalchemy.engine import URL, make_url

from bench.serve import TOKEN

Row = tuple[Any, ...]
Page = tuple[int, bytes]  # an image id and one page of its actions, as received
# image_actions as the migrations make it; first_seen_at is never overwritten, as in the sync.
COLUMNS = (
    "id", "image_id", "status", "type", "started_at", "completed_at", "resource_id",
    "resource_type", "region_slug", "region_name", "region_available", "region_features",
    "region_sizes", "payload", "content_hash", "first_seen_at", "changed_at", "missing_since",
)  # fmt: skip
UPDATED = tuple(name for name in COLUMNS if name not in ("id", "first_seen_at"))
NAMES = ", ".join(COLUMNS)


def fetch_pages(
    api_url: str, images: Sequence[int], per_page: int, *, keep: bool = True
) -> tuple[list[Page], int, int, float]:
    """GET and parse every page of every image with one session.

    Return the pages (kept only with ``keep``: the fetch-only floor holds none, as a
    --full sync holds none), how many were fetched, their bytes, and the seconds.
    """
    session = requests.Session()
    session.trust_env = False  # no proxy settings reread from the environment per request
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    pages: list[Page] = []  # bytes, not parsed pages: a million live dicts would tax the GC
    fetched = received = 0
    started = time.perf_counter()
    for image in images:
        url: str | None = f"{api_url}/v2/images/{image}/actions?page=1&per_page={per_page}"
        while url:
            answer = session.get(url, timeout=30)
            answer.raise_for_status()
            body = orjson.loads(answer.content)
            fetched, received = fetched + 1, received + len(answer.content)
            if keep:
                pages.append((image, answer.content))
            url = body.get("links", {}).get("pages", {}).get("next")
    seconds = time.perf_counter() - started
    session.close()
    return pages, fetched, received, seconds


def prepare_rows(pages: Sequence[Page], *, now: datetime, zone: bool) -> list[Row]:
    """Return the image_actions rows of every page as tuples in COLUMNS order, ready to bind.

    Timestamps become text: with ``zone`` PostgreSQL's ``2026-01-05 09:00:00.000000+00:00``,
    else the naive UTC ``2026-01-05 09:00:00.000000`` SQLAlchemy stores on SQLite and MariaDB.
    """

    def stamp(moment: datetime) -> str:
        moment = moment.astimezone(UTC)
        return (moment if zone else moment.replace(tzinfo=None)).isoformat(" ", "microseconds")

    def parsed(value: str | None) -> str | None:
        return None if value is None else stamp(datetime.fromisoformat(value))

    def listed(value: list[str] | None) -> str | None:
        return None if value is None else orjson.dumps(value).decode()

    seen = stamp(now)
    rows: list[Row] = []
    for image, content in pages:
        for raw in orjson.loads(content)["actions"]:
            region = raw.get("region") or {}
            canonical = orjson.dumps([image, raw], option=orjson.OPT_SORT_KEYS)
            rows.append((
                raw["id"], image, raw.get("status"), raw.get("type"),
                parsed(raw.get("started_at")), parsed(raw.get("completed_at")),
                raw.get("resource_id"), raw.get("resource_type"),
                region.get("slug", raw.get("region_slug")), region.get("name"),
                region.get("available"), listed(region.get("features")),
                listed(region.get("sizes")), orjson.dumps(raw).decode(),
                hashlib.blake2b(canonical, digest_size=16).hexdigest(), seen, seen, None,
            ))  # fmt: skip
    return rows


def upsert_sqlite(url: URL, rows: Sequence[Row]) -> None:
    """Upsert with one sqlite3 executemany and one commit."""
    conn = sqlite3.connect(url.database or "")
    # The sync's settings: WAL (the file already has it) and synchronous=NORMAL.
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    updates = ", ".join(f"{name} = excluded.{name}" for name in UPDATED)
    marks = ", ".join("?" for _ in COLUMNS)
    conn.executemany(
        f"INSERT INTO image_actions ({NAMES}) VALUES ({marks}) "  # noqa: S608  (our own names)
        f"ON CONFLICT (id) DO UPDATE SET {updates}",
        rows,
    )
    conn.commit()
    conn.close()


def upsert_postgresql(url: URL, rows: Sequence[Row]) -> None:
    """Upsert with COPY into a temporary table and one INSERT ... SELECT ... ON CONFLICT."""
    import psycopg  # only the PostgreSQL floor needs its driver
    from psycopg.conninfo import make_conninfo

    options = {key: value for key, value in url.query.items() if isinstance(value, str)}
    conninfo = make_conninfo(
        host=url.host, port=url.port, user=url.username, password=url.password,
        dbname=url.database, **options,
    )  # fmt: skip
    with psycopg.connect(conninfo) as conn, conn.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE floor_rows (LIKE image_actions) ON COMMIT DROP")
        with cursor.copy(f"COPY floor_rows ({NAMES}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        updates = ", ".join(f"{name} = excluded.{name}" for name in UPDATED)
        cursor.execute(
            f"INSERT INTO image_actions ({NAMES}) SELECT {NAMES} FROM floor_rows "  # noqa: S608
            f"ON CONFLICT (id) DO UPDATE SET {updates}"
        )
        conn.commit()


def upsert_mysql(url: URL, rows: Sequence[Row]) -> None:
    """Upsert with one pymysql executemany of INSERT ... ON DUPLICATE KEY UPDATE."""
    import pymysql  # only the MariaDB floor needs its driver

    conn = pymysql.connect(
        host=url.host or "localhost", port=url.port or 3306, user=url.username or "",
        password=url.password or "", database=url.database, charset="utf8mb4",
    )  # fmt: skip
    updates = ", ".join(f"{name} = VALUES({name})" for name in UPDATED)
    marks = ", ".join("%s" for _ in COLUMNS)
    with conn.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO image_actions ({NAMES}) VALUES ({marks}) "  # noqa: S608
            f"ON DUPLICATE KEY UPDATE {updates}",
            rows,
        )
    conn.commit()
    conn.close()


UPSERTS: dict[str, Callable[[URL, Sequence[Row]], None]] = {
    "sqlite": upsert_sqlite,
    "postgresql": upsert_postgresql,
    "mysql": upsert_mysql,
    "mariadb": upsert_mysql,
}


def main() -> None:
    """Print the floor's timings as JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--per-page", type=int, default=200)
    parser.add_argument("--fetch-only", action="store_true", help="time the fetch alone")
    args = parser.parse_args()
    images = [int(image) for image in args.images.split(",")]
    url = make_url(args.database_url)
    backend = url.get_backend_name()

    pages, requests_made, received, fetched = fetch_pages(
        args.api_url, images, args.per_page, keep=not args.fetch_only
    )
    if args.fetch_only:
        print(json.dumps({"fetch": fetched, "requests": requests_made, "bytes": received}))
        return
    now = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)  # a fixed "now": first_seen_at, changed_at
    rows = prepare_rows(pages, now=now, zone=backend == "postgresql")
    del pages
    started = time.perf_counter()
    UPSERTS[backend](url, rows)
    upserted = time.perf_counter() - started
    print(json.dumps({"fetch": fetched, "upsert": upserted, "requests": requests_made,
                      "bytes": received, "rows": len(rows)}))  # fmt: skip


if __name__ == "__main__":
    main()
