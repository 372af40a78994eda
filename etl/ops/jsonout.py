"""One spelling of values in machine output (JSON, NDJSON, CSV), the same for every command."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def json_default(value: Any) -> str:
    """Return how machine output spells a value JSON has no type for.

    A timestamp is ISO 8601 in UTC as ``status --json`` has always printed it:
    ``2026-03-01 23:30:00+00:00`` (RFC 3339's space between date and time), with
    microseconds when it has them. Anything else is its ``str``.
    """
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return str(value)
