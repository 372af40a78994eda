"""Page prints: the pages a --full scan need not look into again.

A scan that reads an image's listing to the end records, for each page whose actions it
then stored exactly as listed (each one a row of this image, none rejected, none with a
status the API does not document, none stored under another image), two fingerprints:
one of the page's bytes, and one of the stored fingerprints of its actions' rows.

The next --full scan that gets the very same bytes for that page number knows that each
action on it is what the API said when its row was stored: it counts them unchanged
without transforming or comparing them, and never hands the page to the writers. Once
it has read its last page it checks that the rows still say what they said then: it
reads the image's stored fingerprints (the ids of which a --full scan needs anyway, to
mark what is no longer listed) and compares each taken page's. A row that changed since,
whatever changed it (another image listing the same action, a refresh, a restore, a hand
edit), or that is gone or marked missing, fails that, and the image is read again with
every action compared.

Prints are kept only while the image's last scan is complete: the first write of a scan
clears them with scan_complete, and so does a refresh that rewrites an action.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from etl.model import KNOWN_STATUSES
from etl.source.extract import Page
from etl.store.load import UpsertCounts
from etl.sync.pages import Split

SEPARATOR = ","  # between pages
JOIN = "."  # between a page's two fingerprints
# Prints kept per image: 66 characters a page fit MySQL's TEXT (64 KiB); later pages are
# compared as ever.
MAX_PAGES = 900


def parse(text: str | None) -> tuple[str, ...]:
    """Return the prints stored as ``text`` (see PagePrints.text); none for None."""
    return tuple(text.split(SEPARATOR)) if text else ()


def stored_as_listed(page: Page, split: Split, counts: UpsertCounts) -> bool:
    """Return whether a page just stored is clean: each of its actions a row as listed.

    None rejected, none with a status the API does not document (warned about on every
    read), none stored under another image (whose fingerprint covers that image).
    """
    if split.rejected or counts.elsewhere or len(split.ids) != page.size:
        return False
    return KNOWN_STATUSES.issuperset(split.statuses)


def taken_page(ids: Sequence[int]) -> tuple[Split, UpsertCounts]:
    """Return what a page taken by its print adds to the scan: each action unchanged, once."""
    unchanged = len(set(ids))
    return Split(ids=list(ids), unchanged=unchanged), UpsertCounts(unchanged=unchanged)


def rows_print(hashes: Iterable[str]) -> str:
    """Return the fingerprint of a page's stored rows: their fingerprints in page order.

    The page's bytes fix which actions it lists, and in which order: their first places.
    """
    return hashlib.blake2b("".join(hashes).encode(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class Taken:
    """A page counted unchanged by its print, and what its rows said when it was made."""

    number: int
    ids: Sequence[int]
    rows: str


@dataclass
class PagePrints:
    """The prints one scan may take pages by, and those it records of the pages it reads."""

    previous: tuple[str, ...] = ()  # the last complete scan's, as stored
    recorded: list[str] = field(default_factory=list)  # in page order; "" for an unclean page
    taken: list[Taken] = field(default_factory=list)

    def matches(self, number: int, digest: str) -> bool:
        """Return whether page ``number``'s bytes, by ``digest``, are a clean page's."""
        if not 0 < number <= len(self.previous) or not digest:
            return False
        return self.previous[number - 1].partition(JOIN)[0] == digest

    def take(self, page: Page, ids: Sequence[int]) -> None:
        """Note a matching page as counted by its print; it keeps its print."""
        entry = self.previous[page.number - 1]
        self.taken.append(Taken(page.number, ids, entry.partition(JOIN)[2]))
        self._add(page, entry)

    def record(self, page: Page, hashes: Mapping[int, str] | None) -> None:
        """Note a page as stored; ``hashes``, its rows' fingerprints, if it is clean."""
        entry = "" if hashes is None else f"{page.digest}{JOIN}{rows_print(hashes.values())}"
        self._add(page, entry)

    def _add(self, page: Page, entry: str) -> None:
        if page.number == len(self.recorded) + 1 <= MAX_PAGES:  # pages come in order
            self.recorded.append(entry)

    def changed(self, stored: Mapping[int, str]) -> list[int]:
        """Return the taken pages whose rows are not in ``stored`` as they were printed."""
        changed = []
        for page in self.taken:
            try:
                now = [stored[action_id] for action_id in dict.fromkeys(page.ids)]
            except KeyError:
                changed.append(page.number)
                continue
            if rows_print(now) != page.rows:
                changed.append(page.number)
        return changed

    def text(self) -> str | None:
        """Return the recorded prints as stored (image_sync_state.page_digests)."""
        return SEPARATOR.join(self.recorded) if self.recorded else None
