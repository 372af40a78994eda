"""Sync one image: page, transform, dead-letter, upsert; stop early when nothing can be new."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from typing import Any

from sqlalchemy import Engine

from etl.errors import ApiError, ApiUnreachableError, AuthError, NotFoundError, TransformError
from etl.source.client import ApiClient
from etl.source.extract import Page, get_image_action, iter_image_action_pages
from etl.source.transform import ActionRow, flatten_action
from etl.store.ledger import (
    KNOWN_STATUSES,
    Rejected,
    known_state,
    mark_missing,
    mark_scan_started,
    save_rejected,
    stored_count,
    unfinished_ids,
)
from etl.store.load import UpsertCounts, upsert_actions
from etl.timeutil import utc_now

logger = logging.getLogger(__name__)

SCANS_PER_IMAGE = 2  # a complete scan whose count disagrees with meta.total is repeated once


@dataclass
class ImageResult:
    """What one image's sync did."""

    image_id: int
    pages: int = 0
    requests: int = 0
    counts: UpsertCounts = field(default_factory=UpsertCounts)
    rejected: int = 0
    total: int | None = None
    received: int = 0
    refreshed: int = 0
    unknown_statuses: int = 0  # actions whose status the API does not document
    missing: int = 0  # stored actions a complete --full scan no longer found listed
    seconds: float = 0.0
    complete: bool = True
    stopped_early: bool = False
    gone: bool = False
    error: str | None = None
    first_page_digest: str | None = None  # of the last scan's first page

    @property
    def ok(self) -> bool:
        """Return whether the image synced fully and without error."""
        return self.error is None and self.complete


def _usable_id(value: Any) -> int | None:
    """Return ``value`` when it can key a BIGINT column, else None."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63:
        return value
    return None


def split_page(
    items: Sequence[Any], image_id: int, page: int
) -> tuple[list[ActionRow], list[Rejected]]:
    """Transform a page's actions; those that cannot become rows are returned as rejected."""
    rows: list[ActionRow] = []
    rejected: list[Rejected] = []
    for position, raw in enumerate(items):
        try:
            rows.append(flatten_action(raw, image_id=image_id))
        except TransformError as exc:
            rejected.append(
                Rejected(
                    action_id=_usable_id(raw.get("id") if isinstance(raw, dict) else None),
                    reason=f"page {page} action {position + 1}: {exc}",
                    payload=raw,
                )
            )
    return rows, rejected


def newest_first(ids: Sequence[int], before: int | None) -> bool:
    """Return whether ``ids`` continue a strictly descending sequence that ended at ``before``."""
    chain = [before, *ids] if before is not None else list(ids)
    return all(a > b for a, b in pairwise(chain))


@dataclass
class ImageSync:
    """Syncs images one at a time for a run; ``current`` is the image under way."""

    client: ApiClient
    engine: Engine
    per_page: int
    full: bool = False
    write: bool = True
    run_id: int | None = None
    now: Callable[[], datetime] = utc_now
    on_page: Callable[[ImageResult], None] | None = None
    current: ImageResult | None = None
    _changing: bool = False  # this sync has written to the image's stored actions

    def sync(self, image_id: int) -> ImageResult:
        """Sync one image's actions, committing after every page.

        An incremental sync (the default) pages from the newest action and stops once a
        page brings nothing new or changed and the new actions seen account for every
        action ``meta.total`` has beyond what is stored, but only when the image's last
        sync ended with a complete scan: after a failed or interrupted one it scans to
        the end, whatever ``meta.total`` says. That relies on the API listing
        newest first, which is checked on every page: where it does not hold, the image
        is scanned to the end. Actions stored as in-progress that the pages did not reach
        are then fetched one by one. A complete scan whose distinct actions disagree with
        ``meta.total`` is repeated once; a mismatch that persists marks the image incomplete.

        API and transform failures are recorded in the result's ``error``; pages loaded
        before them stay loaded.

        Raises:
            AuthError: the API refused the token, which no other image can survive either.
        """
        result = self.current = ImageResult(image_id)
        self._changing = False
        started = time.monotonic()
        requests_before = self.client.thread_requests  # other workers count their own
        try:
            self._sync(result)
        except (AuthError, ApiUnreachableError):
            raise  # no other image can get through either
        except NotFoundError as exc:
            logger.error("image %d failed: %s", image_id, exc)
            result.error, result.gone = self.client.redact(str(exc)), True
        except ApiError as exc:
            logger.error("image %d failed: %s", image_id, exc)
            result.error = self.client.redact(str(exc))
        finally:
            result.requests = self.client.thread_requests - requests_before
            result.seconds = time.monotonic() - started
        return result

    def _sync(self, result: ImageResult) -> None:
        image_id = result.image_id
        with self.engine.connect().execution_options(read_only=True) as conn:
            stored_before = stored_count(conn, image_id)
            known = known_state(conn, image_id)
            may_stop = known.scan_complete and not self.full
            known_digest = known.first_page_digest if may_stop else None
            known_total = known.meta_total
            # Without unfinished actions to refresh, a known first page need not be parsed:
            # its ids are not needed, and its meta.total is the one recorded with it.
            running = unfinished_ids(conn, image_id)
            unparsed = known_digest if not running else None
        for scan in range(1, SCANS_PER_IMAGE + 1):
            seen: set[int] = set()
            nameless = 0  # rejected actions without a usable id count once each
            accounted = 0  # new rows plus rejects: actions the stored table did not hold
            last_id: int | None = None
            ordered = True
            pages = iter_image_action_pages(
                self.client,
                image_id,
                per_page=self.per_page,
                known_first_digest=unparsed if scan == 1 and known_total == stored_before else None,
            )
            for page in pages:
                if page.number == 1:
                    result.first_page_digest = page.digest
                    total = known_total if page.known else page.total
                    if scan == 1 and known_digest == page.digest and total == stored_before:
                        self._take_known_page(result, page, seen, stored_before)
                        break
                rows, rejected = split_page(page.items, image_id, page.number)
                self._count_unknown(result, rows)
                counts = self._store(image_id, rows, rejected)
                ids = [row["id"] for row in rows]
                ordered = ordered and newest_first(ids, last_id)
                last_id = ids[-1] if ids else last_id
                seen.update(ids)
                seen.update(r.action_id for r in rejected if r.action_id is not None)
                nameless += sum(1 for r in rejected if r.action_id is None)
                accounted += counts.inserted + len(rejected)
                result.counts += counts
                result.rejected += len(rejected)
                result.pages += 1
                result.total = page.total
                if self.on_page is not None:
                    self.on_page(result)
                if (
                    may_stop
                    and scan == 1
                    and ordered
                    and counts.inserted == counts.updated == 0
                    and page.total is not None
                    and accounted >= page.total - stored_before
                ):
                    result.stopped_early = True
                    break
            result.received = len(seen) + nameless
            if result.stopped_early:
                self._refresh_in_progress(result, running, seen)
                return
            if not self.full and not ordered:
                logger.info(
                    "image %d: actions are not listed newest first; scanned fully", image_id
                )
            result.complete = result.total is None or result.received == result.total
            if result.complete:
                if self.full and self.write:
                    self._mark_missing(result, seen)
                return
            logger.warning(
                "image %d: received %d distinct actions but meta.total is %s (scan %d of %d)",
                image_id,
                result.received,
                result.total,
                scan,
                SCANS_PER_IMAGE,
            )

    def _take_known_page(
        self, result: ImageResult, page: Page, seen: set[int], stored: int
    ) -> None:
        """Take a first page byte-identical to the last clean sync's as read, and stop there.

        Same bytes, and meta.total equal to the rows stored: nothing on it or past it is
        new or changed; only stored in-progress actions elsewhere get refreshed.
        """
        ids = {item.get("id") for item in page.items if isinstance(item, dict)}
        seen.update(i for i in ids if isinstance(i, int))
        on_page = len(ids) if not page.known else min(stored, self.per_page)
        result.counts += UpsertCounts(unchanged=on_page)
        result.pages += 1
        result.total = stored
        result.received = on_page
        result.stopped_early = True
        if self.on_page is not None:
            self.on_page(result)

    def _count_unknown(self, result: ImageResult, rows: list[ActionRow]) -> None:
        odd = sorted({str(row["status"]) for row in rows if row["status"] not in KNOWN_STATUSES})
        if odd:
            unknown = sum(1 for row in rows if row["status"] not in KNOWN_STATUSES)
            result.unknown_statuses += unknown
            logger.warning(
                "image %d: %d actions with a status the API does not document (%s); kept, "
                "and refreshed until completed or errored",
                result.image_id,
                unknown,
                ", ".join(odd)[:200],
            )

    def _mark_missing(self, result: ImageResult, listed: set[int]) -> None:
        with self.engine.begin() as conn:
            result.missing = mark_missing(conn, result.image_id, listed, now=self.now())
        if result.missing:
            logger.warning(
                "image %d: %d stored actions are no longer listed by the API; marked "
                "missing_since, kept",
                result.image_id,
                result.missing,
            )

    def _store(
        self, image_id: int, rows: list[ActionRow], rejected: list[Rejected]
    ) -> UpsertCounts:
        now = self.now()
        with (
            self.engine.begin() as conn
        ):  # one transaction per page: a crash keeps the pages before
            counts = upsert_actions(conn, rows, now=now, write=self.write)
            wrote = counts.inserted + counts.updated + len(rejected)
            if self.write and wrote and not self._changing:
                # Until this sync ends, the stored actions are not a complete scan.
                mark_scan_started(conn, image_id)
                self._changing = True
            if self.write and self.run_id is not None:
                save_rejected(conn, rejected, run_id=self.run_id, image_id=image_id, now=now)
        logger.debug(
            "image %d: %d actions, %d rejected, %s", image_id, len(rows), len(rejected), counts
        )
        return counts

    def _refresh_in_progress(self, result: ImageResult, running: list[int], seen: set[int]) -> None:
        """Fetch, one by one, the actions stored as in-progress that the pages did not reach.

        ``running`` was read before the pages: any in-progress row written since came from
        a page, so it is in ``seen``.
        """
        pending = [action_id for action_id in running if action_id not in seen]
        fetched = []
        for action_id in pending:
            try:
                fetched.append(get_image_action(self.client, result.image_id, action_id))
            except NotFoundError:
                logger.warning(
                    "image %d action %d was in progress and is now gone (404); kept as stored",
                    result.image_id,
                    action_id,
                )
        if fetched:  # one transaction for all of them
            rows, rejected = split_page(fetched, result.image_id, 0)
            result.counts += self._store(result.image_id, rows, rejected)
            result.rejected += len(rejected)
            result.refreshed += len(fetched)
