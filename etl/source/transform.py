"""Pure functions that turn API actions into image_actions rows; no I/O."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

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
    if isinstance(value, list):
        try:  # join refuses any item that is not a string, in C: a third of all(isinstance)
            "".join(value)
        except TypeError:
            pass
        else:
            return value
    raise TransformError(f"{field} must be a list of strings")


# An action's own columns, in image_actions' order: what action_values returns.
FIELDS = (
    "id", "image_id", "status", "type", "started_at", "completed_at", "resource_id",
    "resource_type", "region_slug", "region_name", "region_available", "region_features",
    "region_sizes", "payload_json", "content_hash",
)  # fmt: skip
Stamp = Callable[[Any, str], Any]  # an API timestamp (and its field's name) as a column value


def _as_is(value: list[str] | None) -> list[str] | None:
    return value


def action_values(
    raw: Any,
    *,
    image_id: int,
    max_depth: int | None = None,
    encoded: bytes | None = None,
    stamp: Stamp = parse_timestamp,
    listed: Callable[[list[str] | None], Any] = _as_is,
) -> tuple[Any, ...]:
    """Return an action's own column values in FIELDS' order, checked as flatten_action says.

    ``stamp`` makes each timestamp's value from what the API sent (parse_timestamp makes a
    datetime; etl.ready's stamps make the driver's text), raising TransformError for one
    that is not a timestamp; ``listed`` makes each region list's value from the list (or
    None). The one pass that both flatten_action and the bulk writers' rows take (see
    etl.ready.ready_action), so both check an action alike.

    Raises:
        TransformError: see flatten_action.
    """
    if not isinstance(raw, dict):
        raise TransformError(f"an action must be a JSON object, not {type(raw).__name__}")
    action_id = _bigint(raw.get("id"), "id", nullable=False)
    region = raw.get("region")  # the API sends region: null for some image actions
    if region is not None and not isinstance(region, dict):
        raise TransformError(f"region must be an object or null, not {type(region).__name__}")
    region = region or {}
    available = region.get("available")
    if available is not None and not isinstance(available, bool):
        raise TransformError("region.available must be true, false or null")
    status = _text(raw.get("status"), "status")
    kind = _text(raw.get("type"), "type")
    started_at = stamp(raw.get("started_at"), "started_at")
    completed_at = stamp(raw.get("completed_at"), "completed_at")
    resource_id = _bigint(raw.get("resource_id"), "resource_id", nullable=True)
    resource_type = _text(raw.get("resource_type"), "resource_type")
    slug = _text(region.get("slug", raw.get("region_slug")), "region.slug")
    name = _text(region.get("name"), "region.name")
    features = _strings(region.get("features"), "region.features")
    sizes = _strings(region.get("sizes"), "region.sizes")
    # After the fields' checks, so their reasons come first; before ``listed``, which may
    # take only what the payload's encoding took.
    encoded = encoded or encode_payload(raw, max_depth=max_depth)
    return (
        action_id,
        image_id,
        status,
        kind,
        started_at,
        completed_at,
        resource_id,
        resource_type,
        slug,
        name,
        available,
        listed(features),
        listed(sizes),
        encoded.decode(),
        hash_payload(encoded, image_id),
    )


def flatten_action(
    raw: Any, *, image_id: int, max_depth: int | None = None, encoded: bytes | None = None
) -> ActionRow:
    """Return the image_actions row for one API action, lifting region fields into columns.

    ``max_depth`` bounds the payload's nesting (see encode_payload); ``encoded`` is the
    payload already encoded with it, when the caller has it.

    Raises:
        TransformError: the action has no usable id or a field of the wrong type or form.
    """
    values = action_values(raw, image_id=image_id, max_depth=max_depth, encoded=encoded)
    row = dict(zip(FIELDS, values, strict=True))
    row["payload"] = raw
    return cast(ActionRow, row)
