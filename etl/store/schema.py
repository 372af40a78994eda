"""The only table definitions; migrations/env.py and load.py import them from here."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeDecorator, TypeEngine

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)
ZONE_AWARE = ("postgresql", "duckdb")  # dialects whose timestamps carry a zone
# Dialects without ix_image_actions_listed (see image_actions).
NO_LISTED_INDEX = ("duckdb", "postgresql")
MYSQL_JSON_DEPTH = 32  # MariaDB's JSON_VALID check refuses values nested deeper


def json_depth_limit(dialect_name: str) -> int | None:
    """Return how deep a JSON column of this dialect nests, or None for no limit of ours."""
    return MYSQL_JSON_DEPTH if dialect_name in ("mysql", "mariadb") else None


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC on every dialect and read back timezone-aware.

    SQLite and MariaDB have no zone-aware type, so they store naive UTC; MariaDB also
    needs DATETIME(6) to keep fractions of a second. PostgreSQL and DuckDB store an instant.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """Pick DATETIME(6) on MySQL/MariaDB, the zone-aware DateTime elsewhere."""
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert to UTC; naive values are refused because their zone is unknown."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("UtcDateTime refuses naive datetimes; attach a timezone")
        value = value.astimezone(UTC)
        # PostgreSQL and DuckDB store an instant: a naive value would be read in the
        # session's time zone (DuckDB's is the machine's), so they get it zone-aware.
        return value if dialect.name in ZONE_AWARE else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return an aware UTC datetime."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


image_actions = Table(
    "image_actions",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("image_id", BigInteger, nullable=False),
    Column("status", String(255)),
    Column("type", String(255)),
    Column("started_at", UtcDateTime),
    Column("completed_at", UtcDateTime),
    Column("resource_id", BigInteger),
    Column("resource_type", String(255)),
    Column("region_slug", String(255)),
    Column("region_name", String(255)),
    Column("region_available", Boolean),
    Column("region_features", JSON),
    Column("region_sizes", JSON),
    Column("payload", JSON, nullable=False),
    Column("content_hash", String(32), nullable=False),
    Column("first_seen_at", UtcDateTime, nullable=False),
    Column("changed_at", UtcDateTime, nullable=False),
    # Set when a complete --full scan of its image no longer lists it; cleared when it is
    # listed again. Rows are never deleted.
    Column("missing_since", UtcDateTime),
    Index(None, "image_id", "status"),
    # An image's listed actions and their fingerprints, read from the index alone (a
    # --full scan's check and missing marks, an incremental scan's count). Not on
    # DuckDB, whose planner scans the table all the same, nor on PostgreSQL, which reads
    # an index alone only where VACUUM has marked the table's pages visible: a run's
    # writes would pay for it and its reads gain nothing measurable.
    Index("ix_image_actions_listed", "image_id", "missing_since", "id", "content_hash").ddl_if(
        callable_=lambda *_, dialect, **__: dialect.name not in NO_LISTED_INDEX
    ),
    comment="One row per DigitalOcean image action, keyed on the API's action id.",
    mysql_charset="utf8mb4",  # emoji and all of Unicode on MySQL/MariaDB
)

sync_runs = Table(
    "sync_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("started_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),  # NULL: still running, or it crashed
    Column("outcome", String(16), nullable=False),
    Column("mode", String(16), nullable=False),
    Column("images_requested", JSON, nullable=False),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("tool_version", String(32), nullable=False),
    Column("schema_revision", String(32), nullable=False),
    Column("images_synced", Integer, nullable=False),
    Column("images_failed", Integer, nullable=False),
    Column("pages", Integer, nullable=False),
    Column("requests", Integer, nullable=False),
    Column("retries", Integer, nullable=False),
    Column("rate_limit_wait_seconds", Float, nullable=False),
    Column("rows_inserted", Integer, nullable=False),
    Column("rows_updated", Integer, nullable=False),
    Column("rows_unchanged", Integer, nullable=False),
    Column("rows_rejected", Integer, nullable=False),
    Column("meta_total_sum", BigInteger, nullable=False),
    Column("error", Text),
    Column("unknown_statuses", Integer, nullable=False, server_default="0"),
    Column("rows_missing", Integer, nullable=False, server_default="0"),
    Column("rows_listed_elsewhere", Integer, nullable=False, server_default="0"),
    Column("strategy", String(16), nullable=False, server_default="per-image"),
    *(
        Column(name, Integer, nullable=False, server_default="0")
        for name in (
            "feed_pages",
            "image_pages",
            "single_actions",
            "image_list_pages",
            "audit_requests",
            "images_audited",
            "feed_misses",
        )
    ),
    Index(None, "started_at"),
    comment="One row per sync run, written at its start and finished at its end.",
    mysql_charset="utf8mb4",  # emoji and all of Unicode on MySQL/MariaDB
)

image_sync_state = Table(
    "image_sync_state",
    metadata,
    Column("image_id", BigInteger, primary_key=True, autoincrement=False),
    Column("last_attempt_at", UtcDateTime, nullable=False),
    Column("last_success_at", UtcDateTime),
    Column("last_meta_total", BigInteger),
    Column("last_error", Text),
    Column("gone", Boolean, nullable=False),  # the API answered 404 for the image
    Column("last_run_id", Integer, ForeignKey("sync_runs.id"), nullable=False),
    # Fingerprint of the first page's bytes after a clean sync: the same bytes again,
    # with meta.total equal to what is stored, mean there is nothing new to read.
    Column("first_page_digest", String(32)),
    # The stored actions were the image's whole listing when its last sync ended: only
    # then may an incremental run stop before the last page. Cleared by the first write
    # of a sync that does not finish.
    Column("scan_complete", Boolean, nullable=False, server_default=false()),
    # The fingerprints of the pages of the last complete scan, comma-separated, empty for
    # a page whose actions were not all stored as listed (see etl.sync.prints). Cleared
    # with scan_complete.
    Column("page_digests", Text),
    comment="Per-image sync state: last success, last meta.total, last error.",
    mysql_charset="utf8mb4",  # emoji and all of Unicode on MySQL/MariaDB
)

rejected_actions = Table(
    "rejected_actions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("sync_runs.id"), nullable=False),
    Column("image_id", BigInteger, nullable=False),
    Column("action_id", BigInteger),  # NULL when the id itself is what is wrong
    Column("reason", Text, nullable=False),
    Column("payload", JSON),
    Column("rejected_at", UtcDateTime, nullable=False),
    Index(None, "image_id"),
    comment="Dead letters: actions that could not become rows, as received, with the reason.",
    mysql_charset="utf8mb4",  # emoji and all of Unicode on MySQL/MariaDB
)

feed_state = Table(
    "feed_state",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("watermark_id", BigInteger, nullable=False),
    Column("meta_total", BigInteger, nullable=False),
    Column("run_id", Integer, ForeignKey("sync_runs.id"), nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    comment="The account feed's watermark: the newest action a complete run processed.",
    mysql_charset="utf8mb4",  # emoji and all of Unicode on MySQL/MariaDB
)

sync_lock = Table(
    "sync_lock",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder_host", String(255), nullable=False),
    Column("holder_pid", Integer, nullable=False),
    Column("acquired_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    comment="Who holds the sync lock; on SQLite this row is the lock (a lease).",
    mysql_charset="utf8mb4",  # emoji and all of Unicode on MySQL/MariaDB
)
