"""Record runs, per-image sync state and rejected actions; read back what they say."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, bindparam, func, insert, or_, select, update
from sqlalchemy.sql.elements import BindParameter

from etl import __version__
from etl.errors import DatabaseError
from etl.model import FINAL_STATUSES, storable_json
from etl.store.database import sqlite_has_json
from etl.store.schema import (
    image_actions,
    image_sync_state,
    json_depth_limit,
    rejected_actions,
    sync_runs,
)

MAX_ERROR_TEXT = 2000
NOT_STORED = " (its payload is not stored: no JSON column holds it)"

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
    "unknown_statuses",
    "rows_missing",
    "rows_listed_elsewhere",
    "feed_pages",
    "image_pages",
    "single_actions",
    "image_list_pages",
    "audit_requests",
    "images_audited",
    "feed_misses",
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
    strategy: str = "per-image",
) -> None:
    """Close the run's row with its outcome, tallies and (token-free) error text."""
    with engine.begin() as conn:
        conn.execute(
            update(sync_runs)
            .where(sync_runs.c.id == run_id)
            .values(
                finished_at=now,
                outcome=outcome,
                strategy=strategy,
                error=error[:MAX_ERROR_TEXT] if error else None,
                **counters,
            )
        )


@dataclass(frozen=True)
class ImageState:
    """What a run learned about one image."""

    image_id: int
    ok: bool
    meta_total: int | None
    error: str | None
    gone: bool
    first_page_digest: str | None
    scan_complete: bool = False
    page_digests: str | None = None  # see etl.sync.prints


def save_image_states(
    conn: Connection, states: Sequence[ImageState], *, run_id: int, now: datetime
) -> None:
    """Upsert the sync state of many images in one statement.

    A failed image keeps its last success and, when this run learned none, its last
    meta.total.
    """
    if not states:
        return
    ids = [state.image_id for state in states]
    previous = {
        row.image_id: row
        for row in conn.execute(
            select(
                image_sync_state.c.image_id,
                image_sync_state.c.last_success_at,
                image_sync_state.c.last_meta_total,
            ).where(image_sync_state.c.image_id.in_(ids))
        )
    }
    rows = []
    for state in states:
        before = previous.get(state.image_id)
        rows.append(
            {
                "image_id": state.image_id,
                "last_attempt_at": now,
                "last_success_at": now
                if state.ok
                else (before.last_success_at if before else None),
                "last_meta_total": state.meta_total
                if state.meta_total is not None or before is None
                else before.last_meta_total,
                "last_error": state.error[:MAX_ERROR_TEXT] if state.error else None,
                "gone": state.gone,
                "last_run_id": run_id,
                "first_page_digest": state.first_page_digest,
                "scan_complete": state.scan_complete,
                "page_digests": state.page_digests,
            }
        )
    # Imported here: status reads this module, and needs no upsert (nor the dialects it loads).
    from etl.store.upsert import execute_upsert

    execute_upsert(conn, rows, image_sync_state)


@dataclass(frozen=True)
class KnownState:
    """What the last sync of an image left: whether its scan was complete, its pages' prints."""

    scan_complete: bool = False
    first_page_digest: str | None = None
    meta_total: int | None = None
    page_digests: str | None = None  # see etl.sync.prints


# The statements a scan runs once per image, built once: building one costs more than
# running it (a third of a millisecond against a tenth, on SQLite).
_IMAGE: BindParameter[Any] = bindparam("image")
_KNOWN_STATE = select(
    image_sync_state.c.scan_complete,
    image_sync_state.c.first_page_digest,
    image_sync_state.c.last_meta_total,
    image_sync_state.c.page_digests,
).where(image_sync_state.c.image_id == _IMAGE)
_KNOWN_STATES = select(image_sync_state.c.image_id, *_KNOWN_STATE.selected_columns)
_SCAN_STARTED = (
    update(image_sync_state)
    .where(image_sync_state.c.image_id == _IMAGE)
    .values(scan_complete=False, first_page_digest=None, page_digests=None)
)
_PRINTS_CLEARED = (
    update(image_sync_state).where(image_sync_state.c.image_id == _IMAGE).values(page_digests=None)
)
# An image's stored actions that are not marked missing: those its last scans listed.
_LISTED_ROWS = (image_actions.c.image_id == _IMAGE, image_actions.c.missing_since.is_(None))
_STORED_COUNT = select(func.count()).select_from(image_actions).where(*_LISTED_ROWS)
_LISTED = select(image_actions.c.id, image_actions.c.content_hash).where(*_LISTED_ROWS)
_LISTED_SQLITE = (
    "SELECT json_group_array(json_array(id, content_hash)) FROM image_actions "
    "WHERE image_id = ? AND missing_since IS NULL"
)
# psycopg and pymysql take the statement as text, compiled once (a --full run reads every
# stored row this way, an image at a time).
_LISTED_FORMAT = (
    "SELECT id, content_hash FROM image_actions WHERE image_id = %s AND missing_since IS NULL"
)
# pymysql reads each row in Python (4 us a row: 0.8 s for 100,000): one string instead,
# and the count of the rows. MariaDB runs the rows together as JSON pairs with
# GROUP_CONCAT ([id,"fingerprint"],...: half the server's work of JSON_ARRAYAGG), and
# counts the fingerprints holding a quote or a backslash (written by hand: they would
# bend the pairs; then the rows are read). MySQL, whose group_concat_max_len is 1024 by
# default, gets one JSON array (not bounded by it). A string or an array the limit cut
# short fails the count, or JSON: then the rows are read.
_LISTED_MARIADB = (
    "SELECT COUNT(*), SUM(LOCATE('\"', content_hash) + LOCATE(CHAR(92), content_hash)), "
    "GROUP_CONCAT('[', id, ',\"', content_hash, '\"]') "
    "FROM image_actions WHERE image_id = %s AND missing_since IS NULL"
)
_LISTED_MYSQL = (
    "SELECT COUNT(*), 0, JSON_ARRAYAGG(JSON_ARRAY(id, content_hash)) FROM image_actions "
    "WHERE image_id = %s AND missing_since IS NULL"
)
# PostgreSQL and MariaDB compute whole_print themselves: one row comes back instead of
# each of the rows (MariaDB's GROUP_CONCAT, cut at 1 MiB by default, is let run).
_LISTED_PRINT_POSTGRESQL = (
    "SELECT count(*), encode(sha256(convert_to(coalesce(string_agg("
    "id::text || ':' || content_hash, ',' ORDER BY id), ''), 'UTF8')), 'hex') "
    "FROM image_actions WHERE image_id = %s AND missing_since IS NULL"
)
_LISTED_PRINT_MARIADB = (
    "SET STATEMENT group_concat_max_len = 4294967295 FOR "
    "SELECT COUNT(*), SHA2(COALESCE(GROUP_CONCAT(id, ':', content_hash ORDER BY id "
    "SEPARATOR ','), ''), 256) "
    "FROM image_actions WHERE image_id = %s AND missing_since IS NULL"
)
_UNFINISHED = (
    select(image_actions.c.id)
    .where(
        image_actions.c.image_id == _IMAGE,
        or_(image_actions.c.status.is_(None), image_actions.c.status.not_in(FINAL_STATUSES)),
    )
    .order_by(image_actions.c.id)
)


def known_state(conn: Connection, image_id: int) -> KnownState:
    """Return what the last sync of an image left (nothing known for a new image)."""
    return _known(conn.execute(_KNOWN_STATE, {"image": image_id}).first())


def _known(row: Any) -> KnownState:
    """Return what an image_sync_state row says the next scan may rely on."""
    if row is None or not row.scan_complete:
        return KnownState()
    return KnownState(True, row.first_page_digest, row.last_meta_total, row.page_digests)


def known_states(conn: Connection, image_ids: Sequence[int]) -> dict[int, KnownState]:
    """Return the known_state of each image in ``image_ids``, reading 1,000 images at once."""
    found = dict.fromkeys(image_ids, KnownState())
    for start in range(0, len(image_ids), 1000):
        chunk = list(image_ids[start : start + 1000])
        for row in conn.execute(_KNOWN_STATES.where(image_sync_state.c.image_id.in_(chunk))):
            found[row.image_id] = _known(row)
    return found


def mark_scan_started(conn: Connection, image_id: int) -> None:
    """Record that an image's stored actions are changing: until its sync ends, not complete."""
    conn.execute(_SCAN_STARTED, {"image": image_id})


def clear_page_digests(conn: Connection, image_id: int) -> None:
    """Forget the prints of an image's pages: its stored actions changed apart from a scan."""
    conn.execute(_PRINTS_CLEARED, {"image": image_id})


def listed_hashes(conn: Connection, image_id: int) -> dict[int, str]:
    """Return the fingerprints of an image's stored actions not marked missing, by id."""
    if conn.dialect.name == "sqlite" and sqlite_has_json():  # one row: see load.read_stored
        found = conn.exec_driver_sql(_LISTED_SQLITE, (image_id,)).scalar_one()
        return dict(orjson.loads(found))
    if conn.dialect.driver == "pymysql":
        mariadb = bool(getattr(conn.dialect, "is_mariadb", False))
        sql = _LISTED_MARIADB if mariadb else _LISTED_MYSQL
        count, bent, found = conn.exec_driver_sql(sql, (image_id,)).one()
        listed = None if bent else _pairs(found, count, run_together=mariadb)
        if listed is not None:
            return listed
    if conn.dialect.driver in ("psycopg", "pymysql"):  # statement text built once
        return dict(conn.exec_driver_sql(_LISTED_FORMAT, (image_id,)).fetchall())
    return dict(conn.execute(_LISTED, {"image": image_id}).fetchall())


def whole_print(rows: Mapping[int, str]) -> str:
    """Return the fingerprint of an image's rows: each id and its row's fingerprint, by id."""
    spelled = ",".join([f"{action_id}:{rows[action_id]}" for action_id in sorted(rows)])
    return hashlib.sha256(spelled.encode()).hexdigest()


def listed_print(conn: Connection, image_id: int) -> tuple[int, str]:
    """Return how many actions of an image are stored, not marked missing, and whole_print's."""
    dialect = conn.dialect
    version = dialect.server_version_info or ()
    sql = None
    if dialect.name == "postgresql" and version >= (11,):  # sha256() came in 11
        sql = _LISTED_PRINT_POSTGRESQL
    elif dialect.driver == "pymysql" and getattr(dialect, "is_mariadb", False):
        sql = _LISTED_PRINT_MARIADB
    if sql is not None:
        count, printed = conn.exec_driver_sql(sql, (image_id,)).one()
        return int(count), str(printed)
    rows = listed_hashes(conn, image_id)
    return len(rows), whole_print(rows)


def _pairs(found: str | bytes | None, count: int, *, run_together: bool) -> dict[int, str] | None:
    """Return [id, fingerprint] pairs as a dict, given ``run_together`` or as a JSON array.

    None unless whole: ``count`` pairs, no id twice. (A fingerprint holding a quote or a
    backslash could bend pairs run together; the caller asked the server for those.)
    """
    if found is None:  # no rows
        return {} if count == 0 else None
    text = found.encode() if isinstance(found, str) else found
    try:
        pairs = orjson.loads(b"[" + text + b"]" if run_together else text)
        listed = dict(pairs)
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return None
    return listed if len(pairs) == count == len(listed) else None


def mark_missing(conn: Connection, image_id: int, gone: Sequence[int], *, now: datetime) -> int:
    """Mark the image's stored actions ``gone`` (see listed_hashes); return how many.

    Rows are never deleted: ``missing_since`` says since when the API stopped listing them.
    """
    for start in range(0, len(gone), 1000):
        conn.execute(
            update(image_actions)
            .where(
                image_actions.c.image_id == image_id,
                image_actions.c.id.in_(gone[start : start + 1000]),
            )
            .values(missing_since=now)
        )
    return len(gone)


def save_rejected(
    conn: Connection, rejected: Sequence[Rejected], *, run_id: int, image_id: int, now: datetime
) -> None:
    """Store dead letters with their raw payload and reason.

    A payload the database cannot hold as JSON (NaN, a lone surrogate, a NUL character,
    nesting too deep for the parser or for MariaDB's JSON check) is left out, and the
    reason says so: a dead letter never fails the run it explains.
    """
    if not rejected:
        return
    nesting = json_depth_limit(conn.dialect.name)
    rows = []
    for item in rejected:
        payload, reason = item.payload, item.reason[: MAX_ERROR_TEXT - len(NOT_STORED)]
        if not storable_json(payload, max_depth=nesting):
            payload, reason = None, reason + NOT_STORED
        rows.append(
            {
                "run_id": run_id,
                "image_id": image_id,
                "action_id": item.action_id,
                "reason": reason,
                "payload": payload,
                "rejected_at": now,
            }
        )
    conn.execute(insert(rejected_actions), rows)


def stored_count(conn: Connection, image_id: int) -> int:
    """Return how many actions are stored for an image, leaving out those marked missing.

    meta.total does not count an action the API stopped listing. One listed again is
    rewritten (counted updated, never new), so a scan that finds it cannot account for
    meta.total's growth with new actions alone, and reads to the last page.
    """
    return int(conn.execute(_STORED_COUNT, {"image": image_id}).scalar_one())


def unfinished_ids(conn: Connection, image_id: int) -> list[int]:
    """Return the ids of an image's actions whose stored status is not final.

    Only ``completed`` and ``errored`` are final: ``in-progress``, a missing status and any
    status the API does not document are refreshed until they become one of them.
    """
    return list(conn.execute(_UNFINISHED, {"image": image_id}).scalars())


def unfinished_by_image(conn: Connection) -> dict[int, list[int]]:
    """Return every image's stored actions whose status is not final, by image."""
    query = select(image_actions.c.image_id, image_actions.c.id).where(
        or_(image_actions.c.status.is_(None), image_actions.c.status.not_in(FINAL_STATUSES))
    )
    found: dict[int, list[int]] = {}
    for row in conn.execute(query.order_by(image_actions.c.id)):
        found.setdefault(row.image_id, []).append(row.id)
    return found


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
