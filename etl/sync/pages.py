"""Turn a page of API actions into rows, and the actions that cannot be rows into dead letters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from etl.errors import TransformError
from etl.model import ActionRow
from etl.source.transform import flatten_action
from etl.store.ledger import Rejected


def _usable_id(value: Any) -> int | None:
    """Return ``value`` when it can key a BIGINT column, else None."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63:
        return value
    return None


def split_page(
    items: Sequence[Any], image_id: int, page: int
) -> tuple[list[ActionRow], list[Rejected]]:
    """Transform a page's actions; those that cannot become rows are returned as rejected."""
    rows: list[ActionRow] = []
    rejected: list[Rejected] = []
    for position, raw in enumerate(items):
        try:
            rows.append(flatten_action(raw, image_id=image_id))
        except TransformError as exc:
            rejected.append(
                Rejected(
                    action_id=_usable_id(raw.get("id") if isinstance(raw, dict) else None),
                    reason=f"page {page} action {position + 1}: {exc}",
                    payload=raw,
                )
            )
    return rows, rejected
