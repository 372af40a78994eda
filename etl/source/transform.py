"""Pure functions that turn API actions into image_actions rows; no I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import repeat
from typing import Any

from etl.errors import TransformError
from etl.model import ActionRow, encode_payload, hash_payload

MAX_BIGINT = 2**63 - 1
MAX_TEXT = 255  # width of the text columns; longer values are rejected, never cut


def parse_timestamp(value: Any, field: str) -> datetime | None:
    """Return an ISO 8601 timestamp as an aware UTC datetime; a missing offset means UTC."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TransformError(f"{field} must be an ISO 8601 string, not {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise TransformError(f"{field} {value[:40]!r} is not an ISO 8601 timestamp") from exc
    if parsed.tzinfo is UTC:  # "Z" or "+00:00", as the API writes them
        return parsed
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)  # the API documents UTC; a bare time is read as UTC
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:
        raise TransformError(f"{field} {value[:40]!r} falls outside the years 1-9999") from exc


def _bigint(value: Any, field: str, *, nullable: bool) -> int | None:
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TransformError(f"{field} must be a whole number, not {type(value).__name__}")
    if not 0 < value <= MAX_BIGINT:
        raise TransformError(f"{field} {value} is outside 1..2^63-1")
    return value


def _text(value: Any, field: str) -> str | None:
    if value is None or (type(value) is str and len(value) <= MAX_TEXT and "\x00" not in value):
        return value
    if not isinstance(value, str):
        raise TransformError(f"{field} must be a string, not {type(value).__name__}")
    if len(value) > MAX_TEXT:
        raise TransformError(f"{field} is {len(value)} characters long; at most {MAX_TEXT} fit")
    if "\x00" in value:
        raise TransformError(f"{field} holds a NUL character, which PostgreSQL cannot store")
    return value


def _strings(value: Any, field: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(map(isinstance, value, repeat(str))):
        raise TransformError(f"{field} must be a list of strings")
    return value


def flatten_action(
    raw: Any, *, image_id: int, max_depth: int | None = None, encoded: bytes | None = None
) -> ActionRow:
    """Return the image_actions row for one API action, lifting region fields into columns.

    ``max_depth`` bounds the payload's nesting (see encode_payload); ``encoded`` is the
    payload already encoded with it, when the caller has it.

    Raises:
        TransformError: the action has no usable id or a field of the wrong type or form.
    """
    if not isinstance(raw, dict):
        raise TransformError(f"an action must be a JSON object, not {type(raw).__name__}")
    action_id = _bigint(raw.get("id"), "id", nullable=False)
    assert action_id is not None  # noqa: S101  (nullable=False never returns None)
    region = raw.get("region")  # the API sends region: null for some image actions
    if region is not None and not isinstance(region, dict):
        raise TransformError(f"region must be an object or null, not {type(region).__name__}")
    region = region or {}
    available = region.get("available")
    if available is not None and not isinstance(available, bool):
        raise TransformError("region.available must be true, false or null")
    return {
        "id": action_id,
        "image_id": image_id,
        "status": _text(raw.get("status"), "status"),
        "type": _text(raw.get("type"), "type"),
        "started_at": parse_timestamp(raw.get("started_at"), "started_at"),
        "completed_at": parse_timestamp(raw.get("completed_at"), "completed_at"),
        "resource_id": _bigint(raw.get("resource_id"), "resource_id", nullable=True),
        "resource_type": _text(raw.get("resource_type"), "resource_type"),
        "region_slug": _text(region.get("slug", raw.get("region_slug")), "region.slug"),
        "region_name": _text(region.get("name"), "region.name"),
        "region_available": available,
        "region_features": _strings(region.get("features"), "region.features"),
        "region_sizes": _strings(region.get("sizes"), "region.sizes"),
        "payload": raw,
        # After the fields' checks, so their reasons come first.
        "payload_json": (encoded := encoded or encode_payload(raw, max_depth=max_depth)).decode(),
        "content_hash": hash_payload(encoded, image_id),
    }
