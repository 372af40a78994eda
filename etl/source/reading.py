"""Read a page's JSON: parse its bytes, find its next link and its meta.total.

Pure functions on bytes and parsed bodies, importing nothing heavier than orjson: the page
helper process (etl.sync.prepare) runs them beside the run.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

MAX_TOTAL = 2**63 - 1  # a count past BIGINT is no count
# Digits become "0", all else a space: a run of 19 zeros then marks a number that may not
# fit in 64 bits (a C-speed scan, several times faster than a regular expression).
DIGITS_ONLY = bytes(byte if byte in b"0123456789" else 32 for byte in range(256)).translate(
    bytes.maketrans(b"123456789", b"000000000")
)
WIDE_NUMBER = b"0" * 19
# What a page's bytes held, as a reader that parses them elsewhere reports it (see
# etl.sync.prepare): not JSON, JSON but no object, or a JSON object.
NOT_JSON, NOT_OBJECT, OBJECT = 0, 1, 2


def parse_json(content: bytes) -> Any:
    """Return the JSON value of UTF-8 ``content``, or None when it is not valid JSON.

    RFC 8259 JSON is UTF-8: invalid bytes make invalid JSON, never U+FFFD. Nesting deeper
    than Python's parser goes is refused the same way, not raised as RecursionError.

    orjson parses; what it refuses or could read inexactly goes to the standard library,
    whose reading is the rule: numbers of 19 digits or more (orjson turns integers past
    64 bits into floats), NaN and Infinity (kept, then refused per action), lone surrogates.
    """
    if WIDE_NUMBER not in content.translate(DIGITS_ONLY):
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(content.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None


def shape_of(body: Any) -> int:
    """Return what parse_json's value is: NOT_JSON (None), NOT_OBJECT or OBJECT."""
    return NOT_JSON if body is None else OBJECT if isinstance(body, dict) else NOT_OBJECT


def next_link(body: dict[str, Any]) -> str | None:
    """Return the next-page URL, or None for every documented last-page shape.

    ``links`` absent or ``{}``, ``pages`` absent or ``{}``, or only ``first``/``prev``
    all mean there are no more pages.
    """
    links = body.get("links")
    pages = links.get("pages") if isinstance(links, dict) else None
    link = pages.get("next") if isinstance(pages, dict) else None
    return link if isinstance(link, str) and link else None


def parse_total(body: dict[str, Any]) -> int | None:
    """Return ``meta.total`` when it is a non-negative whole number, else None."""
    meta = body.get("meta")
    total = meta.get("total") if isinstance(meta, dict) else None
    if isinstance(total, bool) or not isinstance(total, int) or not 0 <= total <= MAX_TOTAL:
        return None
    return total
