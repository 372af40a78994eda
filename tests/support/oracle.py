"""The rows a complete sync must leave."""

from __future__ import annotations

from typing import Any

from etl.fake import World
from etl.source.transform import flatten_action


def expected_table(world: World) -> list[dict[str, Any]]:
    """The rows a complete sync of ``world`` must leave, bookkeeping aside."""
    rows = [
        {**flatten_action(action, image_id=image), "missing_since": None}
        for image, action in world.all_actions()
    ]
    return sorted(rows, key=lambda row: row["id"])
