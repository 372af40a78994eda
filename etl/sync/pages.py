"""Turn a page of API actions into rows, and the actions that cannot be rows into dead letters."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from etl.errors import TransformError
from etl.model import encode_or_none, hash_payload
from etl.ready import CONTENT_HASH, ID, Ready, Row
from etl.source.transform import flatten_action
from etl.store.ledger import Rejected
from etl.sync.prepare import ROW, STATUS, Prepared, page_ids, usable_id

__all__ = ["Split", "page_ids", "split_page", "split_prepared", "usable_id"]


@dataclass
class Split:
    """A page split into rows to store, rows known unchanged, and dead letters."""

    rows: list[Row] = field(default_factory=list)  # new or changed: to compare and write
    ids: list[int] = field(default_factory=list)  # every valid action's id, in page order
    statuses: list[Any] = field(default_factory=list)  # every valid action's status
    unchanged: int = 0  # actions whose fingerprint matched the stored one: not transformed
    rejected: list[Rejected] = field(default_factory=list)
    hashes: dict[int, str] = field(default_factory=dict)  # each valid action's fingerprint


def split_page(
    items: Sequence[Any],
    image_id: int,
    page: int,
    known: Mapping[int, str] | None = None,
    *,
    max_depth: int | None = None,
) -> Split:
    """Transform a page's actions; those that cannot become rows are returned as rejected.

    An action listed once on the page whose fingerprint equals ``known[id]`` (stored
    under this image, not marked missing) is counted unchanged without being transformed:
    it was checked when it was stored, and nothing of it has changed since. ``max_depth``
    bounds a payload's nesting, for databases whose JSON columns refuse deeper values.
    """
    split = Split()
    twice: set[int] = set()
    if known:
        ids = page_ids(items)
        if len(set(ids)) < len(ids):
            twice = {i for i, n in Counter(ids).items() if n > 1}
    for position, raw in enumerate(items):
        action_id = raw.get("id") if known and type(raw) is dict else None
        stored = known.get(action_id) if known and type(action_id) is int else None
        encoded = None
        if stored is not None and action_id not in twice:
            encoded = encode_or_none(raw, max_depth=max_depth)  # None: transformed below
            if encoded is not None and hash_payload(encoded, image_id) == stored:
                split.ids.append(raw["id"])  # a stored id: a whole number in 1..2^63-1
                split.statuses.append(raw.get("status"))
                split.hashes[raw["id"]] = stored
                split.unchanged += 1
                continue
        try:
            row = flatten_action(raw, image_id=image_id, max_depth=max_depth, encoded=encoded)
        except TransformError as exc:
            split.rejected.append(
                Rejected(
                    action_id=usable_id(raw.get("id") if isinstance(raw, dict) else None),
                    reason=f"page {page} action {position + 1}: {exc}",
                    payload=raw,
                )
            )
            continue
        split.rows.append(row)
        split.hashes[row["id"]] = row["content_hash"]
        split.ids.append(row["id"])
        split.statuses.append(row["status"])
    return split


def split_prepared(
    actions: Sequence[Prepared], ids: Sequence[int], page: int, known: Mapping[int, str]
) -> Split:
    """Split a page prepared by prepare_items as split_page splits its actions.

    ``ids`` are the page's usable ids (page_ids). The same actions are counted unchanged,
    stored or rejected, for the same reasons, and the rows come ready for the driver.
    """
    split = Split()
    rows = [action[ROW] for action in actions] if not known else None
    if rows is not None and None not in rows:
        # Nothing stored and nothing rejected (a first sync's pages): each action is a row.
        ready = cast("list[Ready]", rows)
        split.rows = list(ready)
        split.ids = [row[ID] for row in ready]
        split.statuses = [action[STATUS] for action in actions]
        split.hashes = {row[ID]: row[CONTENT_HASH] for row in ready}
        return split
    twice: set[int] = set()
    if known and len(set(ids)) < len(ids):
        twice = {i for i, n in Counter(ids).items() if n > 1}
    for position, (raw_id, status, fingerprint, row, reason, raw) in enumerate(actions):
        if known and type(raw_id) is int and raw_id not in twice:
            stored = known.get(raw_id)
            if stored is not None and fingerprint == stored:
                split.ids.append(raw_id)
                split.statuses.append(status)
                split.hashes[raw_id] = stored
                split.unchanged += 1
                continue
        if row is None:
            split.rejected.append(
                Rejected(
                    action_id=usable_id(raw_id),
                    reason=f"page {page} action {position + 1}: {reason}",
                    payload=raw,
                )
            )
            continue
        split.rows.append(row)
        split.hashes[row[ID]] = row[CONTENT_HASH]
        split.ids.append(row[ID])
        split.statuses.append(status)
    return split
