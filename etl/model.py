"""The row both sides share: what an image action becomes, and what decides "changed".

The API side (transform) produces these rows and the database side (load) stores them;
neither imports the other, both import this.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypedDict

from etl.errors import TransformError

# The statuses the API documents; only completed and errored are final.
KNOWN_STATUSES = frozenset({"in-progress", "completed", "errored"})
FINAL_STATUSES = ("completed", "errored")
# json.dumps writes NUL as \u0000; an escaped backslash before it would make it plain text.
NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


class ActionRow(TypedDict):
    """One row of the image_actions table, as transform produces it."""

    id: int
    image_id: int
    status: str | None
    type: str | None
    started_at: datetime | None
    completed_at: datetime | None
    resource_id: int | None
    resource_type: str | None
    region_slug: str | None
    region_name: str | None
    region_available: bool | None
    region_features: list[str] | None
    region_sizes: list[str] | None
    payload: dict[str, Any]
    content_hash: str


def content_hash(raw: Mapping[str, Any], image_id: int) -> str:
    """Return a fingerprint of what the API said about an action under an image.

    The same encoding proves the payload can be stored as JSON on every database.

    Raises:
        TransformError: the payload holds what no database here can store exactly: a NUL
            character, a lone surrogate, a non-finite number, or absurd nesting.
    """
    try:
        canonical = json.dumps(
            [image_id, raw],
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        ).encode()
    except ValueError as exc:  # NaN or Infinity (UnicodeEncodeError is a ValueError too)
        reason = "a lone surrogate" if isinstance(exc, UnicodeEncodeError) else "NaN or Infinity"
        raise TransformError(f"the action holds {reason}, which JSON columns cannot store") from exc
    except TypeError as exc:  # keys of mixed types cannot be sorted
        raise TransformError("the action's keys cannot be ordered; it is not plain JSON") from exc
    except RecursionError as exc:
        raise TransformError("the action is nested too deeply to store") from exc
    if b"\\u0000" in canonical and NUL_ESCAPE.search(canonical):
        raise TransformError("the action holds a NUL character, which PostgreSQL cannot store")
    return hashlib.blake2b(canonical, digest_size=16).hexdigest()
