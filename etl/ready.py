"""A row's values as the database drivers take them: timestamps and JSON already text.

SQLAlchemy would format each value per row as it binds it; the bulk writers (see
etl.store.bulk) hand the driver these instead. Pure and light: the page helper process
(etl.sync.prepare) makes them beside the run.

A row comes in one of three forms (FORMS): a tuple of its values with timestamps as SQLite
and MySQL store them (``naive``) or with their zone (``zoned``), or, for PostgreSQL's COPY,
one line of COPY's text format with the few values load reads of it (``copy``): the run's
process then hands COPY a page's lines in one call, with no Python per row or value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeGuard

import orjson

from etl.model import ActionRow, hash_payload
from etl.source.transform import action_values, parse_timestamp

STAMP = "%04d-%02d-%02d %02d:%02d:%02d.%06d"  # as isoformat(" ", "microseconds") writes it
MAX_LISTS_KEPT = 1024  # distinct region lists remembered as JSON text; the API has a few dozen
# The row's own columns, in image_actions' order; the writer adds first_seen_at, changed_at
# and missing_since. Where a ready row, and a COPY line (see copy_line), keep what load needs:
ID, IMAGE_ID, STATUS, PAYLOAD_JSON, CONTENT_HASH = 0, 1, 2, 13, -1
LINE = 2  # a COPY line's text

Ready = tuple[Any, ...]  # ready_values' tuple, or copy_line's
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


def naive_text(value: Any, field: str) -> str | None:
    """Return an API timestamp as naive_stamp writes it, read as parse_timestamp reads it.

    The API's own form, 'YYYY-MM-DDTHH:MM:SSZ', is already those fields: checked in range,
    it is cut and joined, not formatted from a datetime. Any other goes the long way.

    Raises:
        TransformError: as parse_timestamp.
    """
    if (
        type(value) is str
        and len(value) == 20
        and value[19] == "Z"
        and value[10] == "T"
        and value[4] == value[7] == "-"
        and value[13] == value[16] == ":"
        and value[11:13] < "24"  # a Python that reads 24:00 reads it as the next day's
    ):
        try:
            datetime.fromisoformat(value)  # the fields are in range, and all digits
        except ValueError:
            pass  # parse_timestamp says why
        else:
            return f"{value[:10]} {value[11:19]}.000000"
    return naive_stamp(parse_timestamp(value, field))


def zoned_text(value: Any, field: str) -> str | None:
    """Return an API timestamp as zoned_stamp writes it (see naive_text)."""
    text = naive_text(value, field)
    return None if text is None else f"{text}+00:00"


TEXTS: dict[str, Callable[[Any, str], str | None]] = {
    "naive": naive_text, "zoned": zoned_text, "copy": zoned_text
}  # fmt: skip

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


# COPY's text format: tab between values, \N for NULL; these characters are escaped in a
# value (as psycopg escapes them), so a line holds no tab or newline but its separators.
_COPY_ESCAPES = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\v": "\\v", "\f": "\\f", "\r": "\\r",
                 "\\": "\\\\"}  # fmt: skip
_COPY_SPECIAL = re.compile("[\b\t\n\v\f\r\\\\]")
_COPY_ESCAPED = re.compile(r"\\(.)")
_COPY_UNESCAPES = {escaped[1]: character for character, escaped in _COPY_ESCAPES.items()}


def _copy_text(value: Any) -> str:
    """Return one value as COPY's text format spells it; raise TypeError for another type."""
    if value is None:
        return "\\N"
    if value is True or value is False:
        return "t" if value else "f"
    if type(value) is int:
        return str(value)
    if type(value) is str:
        if _COPY_SPECIAL.search(value) is None:
            return value
        return _COPY_SPECIAL.sub(lambda found: _COPY_ESCAPES[found[0]], value)
    raise TypeError(f"no COPY text for a {type(value).__name__}")


def copy_line(ready: Ready) -> Ready:
    """Return a ready row as (id, image_id, its values as one line of COPY text, fingerprint).

    The line holds the row's own columns; the writer adds the last three and the newline.

    Raises:
        TypeError: a value is of no type a ready row holds.
        UnicodeEncodeError: a text holds a lone surrogate, which no UTF-8 line can.
    """
    # _copy_text without its escaping, inlined (a call a value would double the cost);
    # the check below sends any row that needs escaping through _copy_text itself.
    texts = [
        value
        if type(value) is str
        else "\\N"
        if value is None
        else ("t" if value else "f")
        if type(value) is bool
        else str(value)
        if type(value) is int
        else _copy_text(value)  # raises
        for value in ready
    ]
    line = "\t".join(texts)
    # Most rows hold nothing to escape: no tab but the separators, no backslash but NULLs'.
    if (
        line.count("\t") != len(texts) - 1
        or line.count("\\") != ready.count(None)
        or "\n" in line  # each `in` a scan in C: a regex would take 20 times as long
        or "\r" in line
        or "\b" in line
        or "\v" in line
        or "\f" in line
    ):
        line = "\t".join([_copy_text(value) for value in ready])
    return (ready[ID], ready[IMAGE_ID], line.encode(), ready[CONTENT_HASH])


def _copy_value(text: bytes) -> str:
    """Return the text value a COPY line spells as ``text`` (not NULL)."""
    return _COPY_ESCAPED.sub(lambda found: _COPY_UNESCAPES[found[1]], text.decode())


FORMS = ("naive", "zoned", "copy")  # see the module's docstring


def _line_if_spelt(ready: Ready) -> Ready:
    """Return copy_line's line, or the row as it is when COPY text cannot spell it."""
    try:
        return copy_line(ready)
    except (TypeError, UnicodeEncodeError):  # the driver says what it makes of it
        return ready


def ready_action(
    raw: Any, *, image_id: int, form: str, max_depth: int | None, encoded: bytes | None = None
) -> tuple[str | None, Ready]:
    """Return an action's status and its row in ``form``, from the action as the API sent it.

    One pass, with transform's checks (action_values): the same row as ready_values of
    flatten_action's (as copy_line's line for ``copy``), for a sixth less of the helper's
    work an action.

    Raises:
        TransformError: as flatten_action.
    """
    values = action_values(
        raw,
        image_id=image_id,
        max_depth=max_depth,
        encoded=encoded,
        stamp=TEXTS[form],
        listed=json_list,
    )
    return values[STATUS], values if form != "copy" else _line_if_spelt(values)


def is_line(row: Row) -> TypeGuard[Ready]:
    """Return whether ``row`` is copy_line's."""
    return type(row) is tuple and type(row[LINE]) is bytes


def owned_by(row: Ready, owner: int) -> Ready:
    """Return a ready row (or COPY line) stored under image ``owner``, fingerprinted so."""
    if not is_line(row):
        owned = hash_payload(row[PAYLOAD_JSON].encode(), owner)
        return (*row[:IMAGE_ID], owner, *row[IMAGE_ID + 1 : CONTENT_HASH], owned)
    values = row[LINE].split(b"\t")  # a value's own tabs are escaped
    owned = hash_payload(_copy_value(values[PAYLOAD_JSON]).encode(), owner)
    values[IMAGE_ID], values[CONTENT_HASH] = str(owner).encode(), owned.encode()
    return (row[ID], owner, b"\t".join(values), owned)
