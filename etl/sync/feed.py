"""Read the account's action feed from the newest action down to the watermark, and verify it.

The feed's order is not documented: it must be strictly newest first on every page, reach
the watermark within the pages its meta.total growth allows, show exactly as many actions
above the watermark as meta.total grew by (so a watermark from a lying feed, or actions
left out, are noticed), and never shrink. Any doubt is a reason to scan every image
instead, never a reason to trust it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from etl.errors import ApiError
from etl.source.client import ApiClient
from etl.source.extract import iter_pages
from etl.store.watermark import Watermark
from etl.sync.coordinator import LATCHED
from etl.sync.pages import usable_id
from etl.sync.scan import newest_first

FEED_PATH = "/v2/actions"


@dataclass
class FeedRead:
    """What one read of the feed found."""

    newest: Watermark | None = None  # page 1's newest action: the run's candidate watermark
    # Images the feed showed new actions of, and those actions' ids: their own listings are
    # the truth, and must show them.
    touched: dict[int, set[int]] = field(default_factory=dict)
    pages: int = 0
    estimate: int | None = None  # pages the growth since the watermark needs
    doubt: str | None = None  # why the feed cannot be trusted this run
    costly: bool = False  # auto: reading down to the watermark costs more than per-image


def read_feed(
    client: ApiClient,
    *,
    per_page: int,
    watermark: Watermark | None,
    wanted: Callable[[int], bool],
    budget: int | None = None,
) -> FeedRead:
    """Read page 1 (the candidate watermark), then on down to ``watermark`` when there is one.

    Image actions newer than the watermark whose image is ``wanted`` are collected by image.
    With a ``budget`` (auto), a feed that would need more pages than that is not read on.
    Failures other than a refused token or a dead API become the read's ``doubt``.
    """
    read = FeedRead()
    try:
        _read(client, read, per_page=per_page, watermark=watermark, wanted=wanted, budget=budget)
    except LATCHED:
        raise
    except ApiError as exc:
        read.doubt = f"the feed failed ({exc})"
    return read


def _read(
    client: ApiClient,
    read: FeedRead,
    *,
    per_page: int,
    watermark: Watermark | None,
    wanted: Callable[[int], bool],
    budget: int | None,
) -> None:
    last: int | None = None
    allowed = growth = newer = 0
    pages = iter_pages(client, FEED_PATH, "actions", per_page=per_page, label="the account feed")
    for page in pages:
        read.pages += 1
        total = page.total or 0
        ids = [usable_id(item.get("id")) if isinstance(item, dict) else None for item in page.items]
        if page.number == 1:
            known = [action_id for action_id in ids if action_id is not None]
            if known:  # the largest, whatever the order: ids only grow
                read.newest = Watermark(max(known), total)
            if watermark is None:
                return
            growth = total - watermark.meta_total
            if growth < 0:
                read.doubt = (
                    f"the feed's meta.total shrank from {watermark.meta_total} to {total}, "
                    "though completed actions are never removed"
                )
                return
            read.estimate = max(-(-(growth + 1) // per_page), 1)
            allowed = read.estimate + 1  # one page of slack: the feed grows while we read
            if budget is not None and read.estimate > budget:
                read.costly = True
                read.doubt = (
                    f"reading the feed down to the watermark would take about {read.estimate} "
                    f"requests, more than the {budget} of scanning the images"
                )
                return
        if any(action_id is None for action_id in ids):
            read.doubt = f"feed page {page.number} has an action without a usable id"
            return
        # The whole page, past the watermark too: a page listed oldest first would otherwise
        # "reach" the watermark at its first action and hide everything newer.
        if not newest_first(ids, last):  # type: ignore[arg-type]
            read.doubt = f"feed page {page.number} is not listed newest first"
            return
        last = ids[-1] if ids else last
        for item, action_id in zip(page.items, ids, strict=True):
            assert action_id is not None  # noqa: S101  (checked above)
            if action_id <= watermark.action_id:  # type: ignore[union-attr]
                if newer != growth:
                    read.doubt = (
                        f"the feed showed {newer} actions newer than the watermark, but its "
                        f"meta.total grew by {growth}"
                    )
                return  # reached: everything newer was on the pages read
            newer += 1
            image = usable_id(item.get("resource_id"))
            if item.get("resource_type") == "image" and image is not None and wanted(image):
                read.touched.setdefault(image, set()).add(action_id)
        if page.number >= allowed:
            read.doubt = (
                f"the feed did not reach the watermark within the {allowed} pages its "
                "meta.total growth allows"
            )
            return
    read.doubt = "the feed ended before it reached the watermark"
