"""Image actions written out by hand, for tests that need a few known ones."""

from __future__ import annotations


def action(action_id: int, status: str, kind: str, started: str, region: str | None) -> dict:
    """Return an action as the API sends it, started but not completed."""
    return {
        "id": action_id,
        "status": status,
        "type": kind,
        "started_at": started,
        "completed_at": None,
        "resource_id": 1,
        "resource_type": "image",
        "region": {"slug": region, "name": region, "sizes": [], "features": [], "available": True}
        if region
        else None,
    }
