"""The incremental rule: may a scan of an image stop before its last page?

A small pure object fed each page's ids and counts; no HTTP, no database. The most
important rule in the program, so it is tested exhaustively on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import gt


def newest_first(ids: Sequence[int], before: int | None) -> bool:
    """Return whether ``ids`` continue a strictly descending sequence that ended at ``before``."""
    chain = [before, *ids] if before is not None else list(ids)
    return all(map(gt, chain, chain[1:]))  # each pair in C: a page has hundreds


@dataclass
class ScanState:
    """One scan of an image's listing, page by page.

    ``may_stop`` is whether stopping early is allowed at all: an incremental run, on an
    image whose stored actions were its whole listing when its last sync ended. Then a
    page may end the scan once every page so far ran newest first and the page held an
    action already stored: new actions come first in a newest-first listing, so past a
    stored one every action is older, and stored. Two checks stand beside the order:
    ``meta.total`` is not below ``stored`` (actions are never deleted), and the actions
    the stored table lacked account for every action ``meta.total`` counts beyond
    ``stored``. (``stored`` leaves out actions marked missing: meta.total does not count
    them.)
    """

    stored: int  # actions stored for the image before the scan, but those marked missing
    may_stop: bool
    seen: set[int] = field(default_factory=set)
    nameless: int = 0  # rejected actions without a usable id count once each
    unread: int = 0  # actions counted by the listing's print, its pages taken unread
    accounted: int = 0  # new rows plus rejects: actions the stored table did not hold
    ordered: bool = True
    last_id: int | None = None
    total: int | None = None  # meta.total of the last page

    def add_page(
        self,
        ids: Sequence[int],
        rejected_ids: Sequence[int | None],
        *,
        inserted: int,
        known: int,
        total: int | None,
    ) -> bool:
        """Take one page and return whether the scan may stop after it.

        ``ids`` are its rows' ids in order, ``rejected_ids`` its rejects; ``inserted`` rows
        were new, ``known`` were stored before (changed or not).
        """
        self.ordered = self.ordered and newest_first(ids, self.last_id)
        self.last_id = ids[-1] if ids else self.last_id
        self.seen.update(ids)
        self.seen.update(i for i in rejected_ids if i is not None)
        self.nameless += sum(1 for i in rejected_ids if i is None)
        self.accounted += inserted + len(rejected_ids)
        self.total = total
        return (
            self.may_stop
            and self.ordered
            and known > 0
            and total is not None
            and total >= self.stored  # fewer listed than stored: deletions, or a lie
            and self.accounted >= total - self.stored
        )

    @property
    def received(self) -> int:
        """Return the distinct actions seen (rejects without an id count once each)."""
        return len(self.seen) + self.nameless + self.unread

    @property
    def complete(self) -> bool:
        """Return whether a scan that reached the last page saw what meta.total counts."""
        return self.total is None or self.received == self.total
