"""The rows a complete sync must leave, worked out from the fake's raw actions by hand.

Nothing here calls etl.source.transform: a test's expected value never comes from the code
under test. Each column is derived from the API's documented fields directly.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from etl.fake import World


class _Fingerprint:
    """Equal to any content_hash-shaped value: 32 lowercase hex digits.

    Its exact value is an implementation detail; what it must do (change with the payload or
    the image, and only then) has its own tests.
    """

    __hash__ = None  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and re.fullmatch(r"[0-9a-f]{32}", other) is not None

    def __repr__(self) -> str:
        return "<any 32-hex-digit content_hash>"


FINGERPRINT = _Fingerprint()


def utc(stamp: str | None) -> datetime | None:
    """Return an API timestamp as an aware UTC datetime."""
    return None if stamp is None else datetime.fromisoformat(stamp).astimezone(UTC)


def expected_row(image_id: int, raw: dict[str, Any]) -> dict[str, Any]:
    """Return the image_actions row (bookkeeping aside) for one well-formed API action."""
    region = raw.get("region") or {}  # image_destroy actions come with region: null
    return {
        "id": raw["id"],
        "image_id": image_id,
        "status": raw.get("status"),
        "type": raw.get("type"),
        "started_at": utc(raw.get("started_at")),
        "completed_at": utc(raw.get("completed_at")),
        "resource_id": raw.get("resource_id"),
        "resource_type": raw.get("resource_type"),
        "region_slug": region.get("slug", raw.get("region_slug")),
        "region_name": region.get("name"),
        "region_available": region.get("available"),
        "region_features": region.get("features"),
        "region_sizes": region.get("sizes"),
        "payload": raw,
        "content_hash": FINGERPRINT,
        "missing_since": None,
    }


def expected_table(
    world: World, *, also: Sequence[tuple[int, dict[str, Any]]] = ()
) -> list[dict[str, Any]]:
    """Return the rows a complete sync of ``world`` must leave, bookkeeping aside, by id.

    ``also`` adds (image_id, action) pairs stored earlier that the API no longer lists.
    """
    pairs = [*world.all_actions(), *also]
    return sorted((expected_row(image, raw) for image, raw in pairs), key=lambda row: row["id"])
