"""Page prints: the pages a --full scan need not look into again.

A scan that reads an image's listing to the end records the fingerprint of each page's
bytes whose actions it then stored exactly as listed: each one a row of this image, none
rejected, none with a status the API does not document, none stored under another image.
The next --full scan that gets the very same bytes for that page number knows that each
action on it is what the API said when it was stored: it counts them unchanged without
transforming or comparing them, and never hands the page to the writers.

Trusted, then checked: once the scan has read its last page, every action a printed page
listed must be a row of the image not marked missing (one read of the image's ids, which
a --full scan makes anyway to mark what is no longer listed). A row deleted or moved since
fails that, and the image is scanned again, action by action.

Prints are kept only while the image's last scan is complete: the first write of a scan
clears them with scan_complete, and so does a refresh that rewrites an action.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from etl.source.extract import Page

SEPARATOR = ","
MAX_PAGES = 1000  # prints kept per image (~33 KB of text); later pages are compared as ever


def parse(text: str | None) -> tuple[str, ...]:
    """Return the prints stored as ``text`` (see PagePrints.text); none for None."""
    return tuple(text.split(SEPARATOR)) if text else ()


@dataclass
class PagePrints:
    """The prints one scan may take pages by, and those it records of the pages it reads."""

    known: tuple[str, ...] = ()
    recorded: list[str] = field(default_factory=list)  # in page order; "" for an unclean page
    taken: set[int] = field(default_factory=set)  # the actions of pages taken by their print

    def matches(self, page: Page) -> bool:
        """Return whether ``page`` has the bytes of a clean page of the same number."""
        number = page.number
        return 0 < number <= len(self.known) and page.digest == self.known[number - 1] != ""

    def record(self, page: Page, *, clean: bool) -> None:
        """Note a page as read (pages come in order); its print counts only if ``clean``."""
        if page.number == len(self.recorded) + 1 <= MAX_PAGES:
            self.recorded.append(page.digest if clean else "")

    def text(self) -> str | None:
        """Return the recorded prints as stored (image_sync_state.page_digests)."""
        return SEPARATOR.join(self.recorded) if self.recorded else None
