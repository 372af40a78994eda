"""Prepare a page of actions for its write: parse, transform, make each row ready.

A full sync is bound to one core by Python's GIL: reading the JSON, transforming each
action and formatting its values for the driver is about half of its work. These pure
functions do that work from a page's bytes, so a helper process (etl.sync.preparer) can
do it beside the run while the run's threads fetch and write. What comes back is what the
writer needs and no more (a page's prepared actions pickle in about a tenth of the time
parsing the page takes): the rows as the driver takes them (etl.ready), each action's
fingerprint, and the actions that cannot be rows, whole, for the dead letters.

Light on purpose: the helper imports this module, and nothing of SQLAlchemy or requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from etl.errors import TransformError
from etl.model import encode_or_none, hash_payload
from etl.ready import CONTENT_HASH, FORMS, Ready, ready_action
from etl.source.reading import OBJECT, next_link, parse_json, parse_total, shape_of

# One action of a page, prepared: a plain tuple, which unpickles three times as fast as a
# NamedTuple. Its "id" and "status" as sent; the fingerprint of its payload under the image
# (hash_payload; None when it cannot be encoded); its row ready for the driver, or None
# and the reason it cannot be one, with the action as sent, whole: a dead letter.
Prepared = tuple[Any, Any, str | None, Ready | None, str | None, Any]
RAW_ID, STATUS, FINGERPRINT, ROW, REASON, RAW = range(6)


class PreparedPage(NamedTuple):
    """What a page's bytes held, read and prepared (``actions`` None: only read)."""

    shape: int  # NOT_JSON, NOT_OBJECT or OBJECT; the rest is empty unless OBJECT
    listed: bool  # the body holds a list under the collection's key
    total: int | None  # meta.total, when usable (see parse_total)
    next_link: str | None
    size: int  # items on the page
    ids: list[int]  # the usable ids of its actions, in page order (see page_ids)
    actions: list[Prepared] | None


def usable_id(value: Any) -> int | None:
    """Return ``value`` when it can key a BIGINT column, else None."""
    if type(value) is int and 0 < value < 2**63:  # not a bool; JSON gives no other int type
        return value
    return None


def page_ids(items: Sequence[Any]) -> list[int]:
    """Return the usable ids of a page's actions (as usable_id, inlined: it runs per action)."""
    return [
        action_id
        for raw in items
        if isinstance(raw, dict)
        and type(action_id := raw.get("id")) is int  # not a bool
        and 0 < action_id < 2**63
    ]


def prepare_items(
    items: Sequence[Any], image_id: int, *, form: str, max_depth: int | None
) -> list[Prepared]:
    """Transform every action of a page, each into a row ready for the driver or a reason.

    ``form`` names the driver's form of a row (etl.ready.FORMS); ``max_depth`` bounds a
    payload's nesting, as split_page's. Every action is fingerprinted as split_page would
    fingerprint it to compare it with the stored one: by its encoded payload, whether or
    not it transforms.
    """
    if form not in FORMS:
        raise ValueError(f"no row form {form!r}")
    prepared: list[Prepared] = []
    for raw in items:
        is_dict = type(raw) is dict
        encoded = encode_or_none(raw, max_depth=max_depth) if is_dict else None
        raw_id = raw.get("id") if is_dict else None
        try:
            status, ready = ready_action(
                raw, image_id=image_id, form=form, max_depth=max_depth, encoded=encoded
            )
        except TransformError as exc:
            status = raw.get("status") if is_dict else None
            fingerprint = None if encoded is None else hash_payload(encoded, image_id)
            prepared.append((raw_id, status, fingerprint, None, str(exc), raw))
            continue
        # Its content_hash is hash_payload(encoded, image_id).
        prepared.append((raw_id, status, ready[CONTENT_HASH], ready, None, None))
    return prepared


def prepare_page(
    content: bytes,
    image_id: int,
    *,
    key: str = "actions",
    form: str,
    max_depth: int | None,
    read_only: bool = False,
) -> PreparedPage:
    """Read a page's bytes as read_answer and iter_pages read them, and prepare its actions.

    ``read_only``: only read it (its ids, total and next link), for a page that is likely to
    be taken by its print (see etl.sync.prints). Never raises for what the bytes hold: the
    shape says, and the caller raises read_answer's and iter_pages' errors.
    """
    body = parse_json(content)
    shape = shape_of(body)
    if shape != OBJECT:
        return PreparedPage(shape, False, None, None, 0, [], None)
    items = body.get(key)
    if not isinstance(items, list):
        return PreparedPage(OBJECT, False, parse_total(body), next_link(body), 0, [], None)
    actions = None if read_only else prepare_items(items, image_id, form=form, max_depth=max_depth)
    return PreparedPage(
        OBJECT, True, parse_total(body), next_link(body), len(items), page_ids(items), actions
    )
