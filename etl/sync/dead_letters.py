"""Which of an image's rejected actions a run has saved as dead letters, across its scans.

An image is read more than once in a run when its listing moved while it was read, or
when an audit found what the feed did not show (see etl.sync.image_scan): its rejected
actions come again, maybe on other pages. Each is saved once a run: a scan saves only
those it finds more often than any scan before it saved them. The same action, reason and
payload is the same dead letter, wherever it was listed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from typing import NamedTuple

import orjson

from etl.store.ledger import Rejected


def letter_key(item: Rejected) -> Hashable:
    """Return what makes a dead letter the same one: its id, reason and payload.

    The reason's place on the page ("page 2 action 5: ") is left out. A payload that
    cannot be encoded (a lone surrogate, nesting past orjson's limit) gets a key of its
    own, the same as no other: it is always saved.
    """
    _place, _, reason = item.reason.partition(": ")
    try:
        payload: Hashable = orjson.dumps(item.payload)
    except (TypeError, orjson.JSONEncodeError):
        payload = object()
    return item.action_id, reason, payload


class PageLetters(NamedTuple):
    """A page's rejected actions: those to save, each with its key, and every key found."""

    fresh: list[tuple[Rejected, Hashable]]
    found: Counter[Hashable]

    @property
    def rejected(self) -> list[Rejected]:
        """Return the rejected actions to save."""
        return [item for item, _ in self.fresh]


NO_LETTERS = PageLetters([], Counter())


class DeadLetters:
    """The dead letters one image's scans have saved in a run (its scans run one at a time)."""

    def __init__(self) -> None:
        self._saved: Counter[Hashable] = Counter()  # across the run's scans of the image
        self._seen: Counter[Hashable] = Counter()  # in the current scan, pages committed

    def new_scan(self) -> None:
        """Start counting a new scan of the image."""
        self._seen = Counter()

    def unsaved(self, rejected: Sequence[Rejected]) -> PageLetters:
        """Return a page's rejected actions, those not yet saved among them.

        Nothing is counted until ``saved`` is given them, once their page is committed.
        """
        found: Counter[Hashable] = Counter()
        fresh = []
        for item in rejected:
            key = letter_key(item)
            found[key] += 1
            if self._seen[key] + found[key] > self._saved[key]:
                fresh.append((item, key))
        return PageLetters(fresh, found)

    def saved(self, letters: PageLetters) -> None:
        """Count a page's rejected actions as found, and its fresh ones as saved."""
        self._seen.update(letters.found)
        self._saved.update(key for _, key in letters.fresh)
