"""Page prints: the pages a --full scan need not look into again.

A scan that reads an image's listing to the end records, for each page whose actions it
then stored exactly as listed (each one a row of this image, none rejected, none with a
status the API does not document, none stored under another image), a fingerprint of the
page's bytes, one of the stored fingerprints of its actions' rows, and what reading the
bytes gave: meta.total, how many actions, and whether the next link is the one this run
would ask for next (``{url}?page=N&per_page=P``). When every page was clean it adds one
print of the whole listing: the fingerprint of every (id, row fingerprint) pair, by id.

The next --full scan that gets the very same bytes for a page number knows that each
action on it is what the API said when its row was stored: it counts them unchanged
without transforming or comparing them, and never hands the page to the writers.

- While every page so far came as printed, a page is not even read (its bytes are kept,
  up to QUICK_BYTES a scan): its print says what reading it would give. When the last
  page came so too, one read (etl.store.ledger.listed_print, hashed by PostgreSQL and
  MariaDB themselves) checks that the image's stored rows are the listing's whole print:
  the same actions, each stored as it was then, none more; none is then to be marked
  missing.
- Once a page does not come as printed, the pages kept are read for their ids, and from
  then on a page that comes as printed is read (not prepared) for its ids. At the end
  each such page's rows are checked against its own print.

A row that changed since, whatever changed it (another image listing the same action, a
refresh, a restore, a hand edit), that is gone or marked missing, or a stored row the
listing no longer holds, fails the check, and the image is read again with every action
compared.

Prints are kept only while the image's last scan is complete: the first write of a scan
clears them with scan_complete, and so does a refresh that rewrites an action. Prints an
earlier version wrote, or that do not read as prints, give no shortcut.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from etl.model import KNOWN_STATUSES
from etl.source.extract import Page
from etl.source.reading import OBJECT
from etl.store.ledger import whole_print
from etl.store.load import UpsertCounts
from etl.sync.pages import Split

FORMAT = "p2"  # the first field of the stored text: prints of this version
SEPARATOR = ","  # between the head and the pages
JOIN = "."  # between the fields of the head and of a page
NO_LINK, OUR_LINK, OTHER_LINK = "0", "1", "-"  # a page's next link: none, ours, another
# What the stored text may hold: MySQL's TEXT (64 KiB); later pages are compared as ever.
MAX_TEXT = 65_000
# The bytes of pages taken unread that a scan keeps, in case a later page is not taken.
QUICK_BYTES = 2 << 20

_DIGEST = re.compile(r"[0-9a-f]{32}\Z")
_WHOLE = re.compile(r"[0-9a-f]{64}\Z")
_KEY = re.compile(r"[0-9a-f]{16}\Z")
_NUMBER = re.compile(r"(0|[1-9][0-9]{0,18})\Z")


class Entry(NamedTuple):
    """One clean page's print, as stored."""

    digest: str  # of the page's bytes
    rows: str  # of its rows' stored fingerprints, in page order (see rows_print)
    total: int  # its meta.total
    size: int  # the actions it holds
    link: str  # NO_LINK, OUR_LINK or OTHER_LINK


@dataclass(frozen=True)
class Stored:
    """What image_sync_state.page_digests says: per page, its Entry (None: not clean)."""

    links: str = ""  # OwnLinks.key of the run that recorded them
    whole: str = ""  # the whole listing's print (see whole_print); "" when not every page was clean
    ordered: bool = False  # the listing ran newest first
    pages: tuple[Entry | None, ...] = ()


class Quick(NamedTuple):
    """A page taken unread: what its print says reading it gives (as PreparedPage says it)."""

    shape: int
    listed: bool
    total: int
    next_link: str | None
    size: int


@dataclass(frozen=True)
class OwnLinks:
    """The next link a run follows to an image's page N when the API gives the usual one."""

    url: str  # the listing's absolute URL
    per_page: int

    def link(self, number: int) -> str:
        """Return the link to page ``number``."""
        return f"{self.url}?page={number}&per_page={self.per_page}"

    @property
    def key(self) -> str:
        """Return what ties a print's OUR_LINK to these links: a fingerprint of the pair."""
        spelled = f"{self.url}\n{self.per_page}".encode()
        return hashlib.blake2b(spelled, digest_size=8).hexdigest()


def _entry(text: str) -> Entry:
    fields = text.split(JOIN)
    if len(fields) != 5:
        raise ValueError(text)
    digest, rows, total, size, link = fields
    if not (_DIGEST.match(digest) and _DIGEST.match(rows) and _NUMBER.match(total)):
        raise ValueError(text)
    if not _NUMBER.match(size) or link not in (NO_LINK, OUR_LINK, OTHER_LINK):
        raise ValueError(text)
    return Entry(digest, rows, int(total), int(size), link)


def parse(text: str | None) -> Stored:
    """Return the prints stored as ``text`` (see PagePrints.text); none for anything else.

    None, an earlier version's prints, or text that does not read as prints (a hand's
    edit, a cut) give none: every page is then compared.
    """
    if not text:
        return Stored()
    head, _, body = text.partition(SEPARATOR)
    fields = head.split(JOIN)
    if len(fields) != 5 or fields[0] != FORMAT or fields[4] != _check(body):
        return Stored()
    _, links, whole, ordered, _ = fields
    if not _KEY.match(links) or not (whole == "" or _WHOLE.match(whole)) or ordered not in "01":
        return Stored()
    try:
        entries = tuple(_entry(page) if page else None for page in body.split(SEPARATOR))
    except ValueError:
        return Stored()
    if whole and not _one_listing(entries):
        return Stored()
    return Stored(links, whole, ordered == "1", entries)


def _check(body: str) -> str:
    """Return what a print's head holds of its pages, so that a cut or an edit shows."""
    return hashlib.blake2b(body.encode(), digest_size=8).hexdigest()


def _one_listing(entries: tuple[Entry | None, ...]) -> bool:
    """Return whether the pages are those of one listing read to its end, each clean."""
    if not entries or any(entry is None for entry in entries):
        return False
    links = [entry.link for entry in entries if entry is not None]
    return links[-1] == NO_LINK and NO_LINK not in links[:-1]


def stored_as_listed(page: Page, split: Split, counts: UpsertCounts) -> bool:
    """Return whether a page just stored is clean: each of its actions a row as listed.

    None rejected, none with a status the API does not document (warned about on every
    read), none stored under another image (whose fingerprint covers that image), none
    listed twice (a page taken unread counts its size).
    """
    if split.rejected or counts.elsewhere or len(set(split.ids)) != page.size:
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

    previous: Stored = field(default_factory=Stored)  # the last complete scan's
    links: OwnLinks | None = None  # the run's own next links, for this image
    recorded: list[str] = field(default_factory=list)  # in page order; "" for an unclean page
    taken: list[Taken] = field(default_factory=list)  # read for their ids
    quick: list[Page] = field(default_factory=list)  # taken unread, while every page so far was
    listed: dict[int, str] = field(default_factory=dict)  # the clean pages' rows, by id
    pages: int = 0  # read, taken or stored
    _length: int = 0  # of the recorded text

    def entry(self, number: int, digest: str) -> Entry | None:
        """Return the print of a clean page ``number`` whose bytes are those, by ``digest``."""
        if not 0 < number <= len(self.previous.pages) or not digest:
            return None
        entry = self.previous.pages[number - 1]
        return entry if entry is not None and entry.digest == digest else None

    def matches(self, number: int, digest: str) -> bool:
        """Return whether page ``number``'s bytes, by ``digest``, are a clean page's."""
        return self.entry(number, digest) is not None

    def unread(self, number: int, digest: str) -> Quick | None:
        """Return what page ``number`` gives unread, if it may be taken so (see the module).

        Only while every page before it was, only when the last scan printed the whole
        listing, and only when its next link, if any, is the one this run would follow.
        """
        if len(self.quick) != number - 1 or not self.previous.whole:
            return None
        entry = self.entry(number, digest)
        if entry is None or self.links is None or self.previous.links != self.links.key:
            return None
        if entry.link == OTHER_LINK:
            return None
        link = self.links.link(number + 1) if entry.link == OUR_LINK else None
        return Quick(OBJECT, True, entry.total, link, entry.size)

    def take_unread(self, page: Page) -> None:
        """Note a page taken unread (see unread); it keeps its print."""
        self.quick.append(page)
        entry = self.previous.pages[page.number - 1]
        assert entry is not None  # noqa: S101  (unread found it)
        self._add(page.number, self._spell(entry))

    def read_unread(self) -> list[Page]:
        """Return the pages taken unread, to be read for their ids; none is taken so again."""
        quick, self.quick = self.quick, []
        return quick

    @property
    def all_unread(self) -> bool:
        """Return whether every page of the scan was taken unread."""
        quick = len(self.quick)
        return quick > 0 and quick == self.pages == len(self.previous.pages)

    def take(self, page: Page, ids: Sequence[int]) -> None:
        """Note a matching page as counted by its print; it keeps its print."""
        entry = self.previous.pages[page.number - 1]
        assert entry is not None  # noqa: S101  (it matched)
        self.taken.append(Taken(page.number, ids, entry.rows))
        # Read, its link is known: judged by this run's links, which may not be the print's.
        self._add(page.number, self._spell(entry._replace(link=self._mark(page))))

    def record(self, page: Page, hashes: Mapping[int, str] | None) -> None:
        """Note a page as stored; ``hashes``, its rows' fingerprints, if it is clean."""
        if hashes is None:
            self._add(page.number, "")
            self.listed.clear()  # no whole print now
            return
        rows = rows_print(hashes.values())
        entry = Entry(page.digest, rows, page.total or 0, page.size, self._mark(page))
        self._add(page.number, self._spell(entry))
        self._list(hashes)

    def _mark(self, page: Page) -> str:
        """Return what a page read says of its next link, judged by this run's links."""
        if page.link is None:
            return NO_LINK
        own = self.links is not None and page.link == self.links.link(page.number + 1)
        return OUR_LINK if own else OTHER_LINK

    def _list(self, rows: Mapping[int, str]) -> None:
        """Keep a clean page's rows for the whole print, while one can still be made."""
        if self._whole_possible:
            self.listed.update(rows)
        else:
            self.listed.clear()

    @property
    def _whole_possible(self) -> bool:
        return len(self.recorded) == self.pages and all(self.recorded)

    @staticmethod
    def _spell(entry: Entry) -> str:
        return JOIN.join(map(str, entry))

    def _add(self, number: int, entry: str) -> None:
        self.pages = max(self.pages, number)
        room = self._length + len(entry) + 1 <= MAX_TEXT
        if number == len(self.recorded) + 1 and room:  # pages come in order
            self.recorded.append(entry)
            self._length += len(entry) + 1

    def changed(self, stored: Mapping[int, str]) -> list[int]:
        """Return the pages taken read whose rows are not in ``stored`` as they were printed."""
        changed = []
        for page in self.taken:
            try:
                now = {action_id: stored[action_id] for action_id in dict.fromkeys(page.ids)}
            except KeyError:
                changed.append(page.number)
                continue
            if rows_print(now.values()) != page.rows:
                changed.append(page.number)
            else:
                self._list(now)
        return changed

    def whole(self, printed: str) -> bool:
        """Return whether ``printed``, the image's rows' whole_print, is the listing's."""
        return printed == self.previous.whole

    def text(self, *, ordered: bool) -> str | None:
        """Return the recorded prints as stored (image_sync_state.page_digests).

        ``ordered``: the scan found the listing newest first.
        """
        if not self.recorded or self.links is None:
            return None
        whole = ""
        if self._whole_possible and _one_listing(tuple(map(_entry, self.recorded))):
            whole = self.previous.whole if self.all_unread else whole_print(self.listed)
        body = SEPARATOR.join(self.recorded)
        head = JOIN.join((FORMAT, self.links.key, whole, "1" if ordered else "0", _check(body)))
        return f"{head}{SEPARATOR}{body}"
