"""The row both sides share: what an image action becomes, and what decides "changed".

The API side (transform) produces these rows and the database side (load) stores them;
neither imports the other, both import this.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypedDict

import orjson

from etl.errors import TransformError

# The statuses the API documents; only completed and errored are final.
KNOWN_STATUSES = frozenset({"in-progress", "completed", "errored"})
FINAL_STATUSES = ("completed", "errored")
# json.dumps writes NUL as \u0000; an escaped backslash before it would make it plain text.
NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
PLAIN_SCALARS = frozenset({str, int, bool, type(None)})


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
    payload_json: str  # the payload as stored: encode_payload's text
    content_hash: str


def encode_payload(raw: Any, *, max_depth: int | None = None) -> bytes:
    """Return what the API said about an action as canonical JSON: sorted keys, compact, UTF-8.

    These bytes are stored as the action's payload and hashed as its fingerprint, so a
    payload is serialised once. orjson writes them; where it cannot (integers past 64
    bits, lone surrogates, deep nesting) or where it would write null for a non-finite
    number, the standard library decides, which writes the same bytes or refuses.

    ``max_depth`` bounds the nesting, for a database whose JSON columns refuse deeper values.

    Raises:
        TransformError: the payload holds what no database here can store exactly: a NUL
            character, a lone surrogate, a non-finite number, or absurd nesting; or it
            nests deeper than ``max_depth``.
    """
    try:
        encoded = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # orjson.JSONEncodeError is one
        encoded = _encode_with_json(raw)
    else:
        # find, not `in`: bytes' `in` tries its operand as an integer first, and makes and
        # clears a TypeError with its message each time (3% of preparing an action).
        if encoded.find(b"null") >= 0 and _holds_non_finite(raw):
            _encode_with_json(raw)  # raises, with the reason
    if encoded.find(b"\\u0000") >= 0 and NUL_ESCAPE.search(encoded):
        raise TransformError("the action holds a NUL character, which PostgreSQL cannot store")
    brackets = encoded.count(b"[") + encoded.count(b"{") if max_depth is not None else 0
    if max_depth is not None and brackets > max_depth and _depth(raw, max_depth) > max_depth:
        # (brackets inside strings count too: _depth decides)
        raise TransformError(
            f"the action nests deeper than {max_depth} levels, which this database's "
            "JSON columns refuse"
        )
    return encoded


def encode_or_none(raw: Any, *, max_depth: int | None = None) -> bytes | None:
    """Return encode_payload's bytes, or None where it refuses (the transform says why).

    (A function, not contextlib.suppress: a context manager an action cost 3-4% of
    preparing it.)
    """
    try:
        return encode_payload(raw, max_depth=max_depth)
    except TransformError:
        return None


def _encode_with_json(raw: Any) -> bytes:
    try:
        return json.dumps(
            raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
    except ValueError as exc:  # NaN or Infinity (UnicodeEncodeError is a ValueError too)
        reason = "a lone surrogate" if isinstance(exc, UnicodeEncodeError) else "NaN or Infinity"
        raise TransformError(f"the action holds {reason}, which JSON columns cannot store") from exc
    except TypeError as exc:  # keys of mixed types cannot be sorted
        raise TransformError("the action's keys cannot be ordered; it is not plain JSON") from exc
    except RecursionError as exc:
        raise TransformError("the action is nested too deeply to store") from exc


def _holds_non_finite(value: Any) -> bool:
    """Return whether ``value`` holds NaN or an infinity anywhere (orjson writes them as null)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if type(item) in PLAIN_SCALARS:  # most of a payload: skip the isinstance tests
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def storable_json(value: Any, *, max_depth: int | None = None) -> bool:
    """Return whether ``value`` is plain JSON the database stores as it is (see encode_payload)."""
    try:
        encode_payload(value, max_depth=max_depth)
    except TransformError:
        return False
    return True


def _depth(value: Any, limit: int) -> int:
    """Return how deep ``value`` nests (a scalar is 0), counting no further than past ``limit``."""
    if limit < 0 or not isinstance(value, (dict, list)):
        return 0
    items = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(item, limit - 1) for item in items), default=0)


def hash_payload(encoded: bytes, image_id: int) -> str:
    """Return the fingerprint of an encoded payload listed under ``image_id``.

    It hashes the JSON text of ``[image_id, payload]``, as earlier versions did, so rows
    stored by them keep their fingerprints (but for floats the two spell differently,
    such as 1e-07 against 1e-7, rewritten once).
    """
    digest = hashlib.blake2b(b"[%d," % image_id, digest_size=16)
    digest.update(encoded)  # fed in parts: no copy of the payload (a tenth of the hash's time)
    digest.update(b"]")
    return digest.hexdigest()


def content_hash(raw: Mapping[str, Any], image_id: int) -> str:
    """Return a fingerprint of what the API said about an action under an image.

    Raises:
        TransformError: see encode_payload.
    """
    return hash_payload(encode_payload(raw), image_id)
