"""Scan one image: page, transform, dead-letter, upsert; stop early when nothing can be new."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from etl.errors import ApiError, NotFoundError, RunInterrupted
from etl.model import KNOWN_STATUSES
from etl.source.extract import Page, get_image_action, iter_image_action_pages
from etl.source.reading import parse_json
from etl.store.bulk import inserts_new
from etl.store.database import one_read
from etl.store.ledger import (
    KnownState,
    clear_page_digests,
    known_state,
    listed_hashes,
    listed_print,
    mark_missing,
    mark_scan_started,
    save_rejected,
    stored_count,
    unfinished_ids,
)
from etl.store.load import UpsertCounts, insert_new_actions, read_stored, upsert_actions
from etl.store.schema import json_depth_limit
from etl.sync.context import RunContext, ScanOrder
from etl.sync.coordinator import LATCHED
from etl.sync.dead_letters import NO_LETTERS, DeadLetters, PageLetters
from etl.sync.pages import Split, page_ids, split_page, split_prepared
from etl.sync.prepare import PreparedPage
from etl.sync.prints import (
    QUICK_BYTES,
    OwnLinks,
    PagePrints,
    Quick,
    Stored,
    parse,
    stored_as_listed,
    taken_page,
)
from etl.sync.results import ImageResult, rescanned
from etl.sync.scan import ScanState
from etl.sync.writer import GroupWriter, PageWrite

if TYPE_CHECKING:
    from sqlalchemy import Connection

logger = logging.getLogger(__name__)

T = TypeVar("T")

SCANS_PER_IMAGE = 2  # a complete scan whose count disagrees with meta.total is repeated once


def scan_image(ctx: RunContext, image_id: int) -> ImageResult:
    """Sync one image's actions, committing after every page; return what it did.

    An incremental scan (the default) pages from the newest action and may stop early (see
    ScanState) only when the image's last sync ended with a complete scan. Actions stored
    with a status that is not final that the pages did not reach are then fetched one by
    one. A complete scan whose distinct actions disagree with ``meta.total`` is repeated
    once; a mismatch that persists marks the image incomplete. A complete ``--full`` scan
    marks stored actions the image no longer lists.

    API and transform failures are the image's ``error``; pages loaded before them stay
    loaded. An error no other image can get past either (a refused token, a spent budget,
    a database that fails, a bug) ends the run through the coordinator; a run that halts
    leaves the image ``finished=False``.
    """
    return ImageScan(ctx, ImageResult(image_id), order=ScanOrder(image_id)).run()


def run_order(ctx: RunContext, order: ScanOrder) -> ImageResult:
    """Carry out one image's part of the plan; an audit that finds news syncs it fully.

    An audit whose scan inserts actions found what the feed did not show: a feed miss,
    warned about and counted, and the image is then scanned to the end.
    """
    first = ImageResult(order.image_id, audit=order.audit, touched=order.touched)
    letters = DeadLetters()  # saved once a run, however many scans read the image
    result = ImageScan(ctx, first, order=order, letters=letters).run()
    if not (order.audit and result.finished and result.counts.inserted):
        return result
    logger.warning(
        "image %d: the audit found %d actions the feed did not show (a feed miss); "
        "scanning it fully",
        order.image_id,
        result.counts.inserted,
        extra={"image_id": order.image_id},
    )
    full = ScanOrder(order.image_id, full=True, audit=True)
    scan = ImageScan(ctx, ImageResult(order.image_id, audit=True), order=full, letters=letters)
    again = scan.run()
    again.feed_miss = True
    whole = again.finished and again.error is None
    again.counts = rescanned(result.counts, again.counts, whole=whole, wrote=ctx.write)
    again.pages += result.pages
    again.requests += result.requests
    return again


def listed_ids(items: list[Any] | PreparedPage) -> list[int]:
    """Return the usable ids of a page's actions, in page order (see page_ids)."""
    return items.ids if isinstance(items, PreparedPage) else page_ids(items)


class UnwrittenError(Exception):
    """A page was not written because one before it in its image could not be."""


class _Written(NamedTuple):
    """A page's write, until its transaction commits."""

    split: Split
    counts: UpsertCounts
    letters: PageLetters
    started: bool  # it marked the image's scan started (see mark_scan_started)
    refreshed: bool  # it cleared the image's page prints (a refresh)


class ImageScan:
    """One image's scan within a run."""

    def __init__(
        self,
        ctx: RunContext,
        result: ImageResult,
        *,
        order: ScanOrder,
        letters: DeadLetters | None = None,
    ) -> None:
        """``letters``: the dead letters the run saved of the image before this scan."""
        self.ctx = ctx
        self.result = result
        self.order = order
        self.full = ctx.full if order.full is None else order.full
        self._changing = False  # this scan has written to the image's stored actions
        self._unwritten = False  # a page could not be written: no later page is
        # The next page is likely new: inserted without reading what is stored (see _store).
        self._expect_new = False
        self._refreshed = False  # a refresh has rewritten some of them
        self._prints = PagePrints()  # see etl.sync.prints
        self._seen: set[int] = set()  # the actions the last scan's pages listed
        # The first scan's counts, rejects and undocumented statuses, once a second began.
        self._first: tuple[UpsertCounts, int, int] | None = None
        self._whole = False  # the last scan after the first read to its last page
        self._read_only: tuple[int, bytes] | None = None  # the last page only read, and its bytes
        self._unread: dict[int, bytes] = {}  # the bytes of the pages taken unread, by number
        self._letters = letters or DeadLetters()  # the rejected actions saved, once a run

    def run(self) -> ImageResult:
        """Scan the image; see scan_image."""
        result, client = self.result, self.ctx.client
        started = time.monotonic()
        requests_before = client.thread_requests  # other workers count their own
        try:
            self._scan()
            self._check_shown()
        except NotFoundError as exc:
            logger.error("image %d failed: %s", result.image_id, exc, extra=self._fields())
            result.error, result.gone = client.redact(str(exc)), True
        except RunInterrupted:
            result.finished = False  # the run halts: a signal, or another worker's error
        except LATCHED as exc:  # no other image can get past a refused token or a dead API
            result.finished = False
            self.ctx.coordinator.end_run(exc)
        except ApiError as exc:
            logger.error("image %d failed: %s", result.image_id, exc, extra=self._fields())
            result.error = client.redact(str(exc))
        except BaseException as exc:  # handed to the main thread, which ends the run with it
            result.finished = False
            self.ctx.coordinator.end_run(exc)
        finally:
            if self._first is not None:
                self._count_once(*self._first)
            result.requests = client.thread_requests - requests_before
            result.seconds = time.monotonic() - started
        logger.debug(
            "image %d: %d pages, %d requests, %.2f s",
            result.image_id,
            result.pages,
            result.requests,
            result.seconds,
            extra=self._fields(requests=result.requests),
        )
        return result

    def _fields(self, **more: Any) -> dict[str, Any]:
        """Return the structured fields of this image's log lines (see etl.ops.logs)."""
        return {"run_id": self.ctx.run_id, "image_id": self.result.image_id, **more}

    def _scan(self) -> None:
        if self.order.refresh_only:
            with one_read(self.ctx.engine) as conn:
                running = unfinished_ids(conn, self.result.image_id)
            if not self._refresh_unfinished(running, set()):
                self.result.scanned = False
                return
            # An action answered 404: is the image gone? Its own listing says, as always.
            logger.info(
                "image %d: an unfinished action is gone; scanning the image", self.result.image_id
            )
        ctx, result = self.ctx, self.result
        image_id = result.image_id
        known = self.order.known  # read for the run's plan, when it was
        may_stop = known is not None and known.scan_complete and not self.full
        stored_before, running = 0, []
        if known is None or may_stop:
            with ctx.engine.connect().execution_options(read_only=True) as conn:
                known = known or known_state(conn, image_id)
                may_stop = known.scan_complete and not self.full
                # Only a scan that may stop early weighs meta.total against what is stored,
                # and refreshes the unfinished actions past its stop.
                if may_stop:
                    stored_before = stored_count(conn, image_id)
                    running = unfinished_ids(conn, image_id)
        known_digest = known.first_page_digest if may_stop else None
        # Without unfinished actions to refresh, a known first page need not be parsed: its
        # ids are not needed, and its meta.total is the one recorded with it.
        unparsed = known_digest if not running else None
        # A scan whose pages taken by print no longer hold is read again, but is not one of
        # the scans meta.total allows: at most one more (only a first scan takes by print).
        scans, scan_number = SCANS_PER_IMAGE, 0
        while scan_number < scans:
            scan_number += 1
            first = scan_number == 1
            self._letters.new_scan()
            if not first:  # it reads the whole listing again: see rescanned
                if self._first is not None:  # a third scan: the first two count as one
                    self._count_once(*self._first)
                self._first = (result.counts, result.rejected, result.unknown_statuses)
                result.counts, result.rejected, result.unknown_statuses = UpsertCounts(), 0, 0
                self._whole = False  # until this scan reads its last page
            state = ScanState(stored=stored_before, may_stop=may_stop and first)
            # An image whose last scan did not end complete is most likely new to the table
            # (else its first page finds what is stored, and the next page is read first).
            self._expect_new = first and not known.scan_complete
            self._seen = state.seen
            # Only the first scan of a --full run takes pages by print.
            previous = parse(known.page_digests) if first and self.full else Stored()
            listing = ctx.client.url_for(f"/v2/images/{image_id}/actions")
            self._prints = PagePrints(previous, OwnLinks(listing, ctx.per_page))
            # A page is prepared (see etl.sync.prepare), or taken unread (see etl.sync.prints).
            prepared = not state.may_stop and (ctx.preparer is not None or bool(previous.whole))
            pages = iter_image_action_pages(
                ctx.client,
                image_id,
                per_page=ctx.per_page,
                known_first_digest=unparsed
                if first and known.meta_total == stored_before
                else None,
                prepare=self._prepare if prepared else None,
            )
            if not state.may_stop:  # it reads to the end
                self._take_pages_overlapped(pages, state)
                self._whole = not first
            else:
                self._take_pages(pages, state, known, stored_before)
            result.ordered = state.ordered
            if result.stopped_early:
                result.received = state.received
                self._refresh_unfinished(running, state.seen)
                # Nothing written: the prints of the last complete scan still hold.
                changed = self._changing or self._refreshed
                result.page_digests = None if changed else known.page_digests
                return
            prints = self._prints
            result.printed += len(prints.taken) + len(prints.quick)
            stored = None  # the image's stored fingerprints, once read after its pages
            if prints.taken or prints.quick:
                holds, stored = self._check_printed(state)
                if not holds:  # read it again, every action compared
                    scans += 1
                    continue
            result.ordered = state.ordered
            result.page_digests = prints.text(ordered=state.ordered)
            if not self.full and not state.ordered:
                logger.info(
                    "image %d: actions are not listed newest first; scanned fully",
                    image_id,
                    extra=self._fields(),
                )
            result.received, result.complete = state.received, state.complete
            if result.complete:
                if self.full and ctx.write and not prints.all_unread:  # stored as listed
                    self._mark_missing(state.seen, stored)
                return
            logger.warning(
                "image %d: received %d distinct actions but meta.total is %s (scan %d of %d)",
                image_id,
                result.received,
                result.total,
                scan_number,
                scans,
                extra=self._fields(),
            )

    def _check_printed(self, state: ScanState) -> tuple[bool, dict[int, str] | None]:
        """Return whether the pages taken by print still hold, and the image's stored rows.

        Read after the last page. When every page was taken unread, the image's rows must
        be the listing's whole print: its actions, each stored under the image as it was
        when the print was made, not marked missing, and no other (then the rows are not
        returned: none is to be marked missing). Else every row of a page taken must be so.
        """
        prints = self._prints
        stored = None
        with one_read(self.ctx.engine) as conn:
            if prints.all_unread:
                count, printed = listed_print(conn, self.result.image_id)
            else:
                stored = listed_hashes(conn, self.result.image_id)
        if stored is not None:
            changed = prints.changed(stored)
        elif prints.whole(printed):
            changed = []
            state.unread = count  # the listing's actions are the stored ones
            state.ordered = prints.previous.ordered  # as when they were read
        else:
            changed = [page.number for page in prints.quick]
        if not changed:
            return True, stored
        logger.warning(
            "image %d: page %s came byte for byte as when its actions were stored, but "
            "they are no longer stored as they were then; reading the image again, every "
            "action compared",
            self.result.image_id,
            ", ".join(map(str, changed[:10])),
            extra=self._fields(),
        )
        return False, stored

    def _count_once(self, counts: UpsertCounts, rejected: int, unknown: int) -> None:
        """Count each action once after a second scan of the image (see rescanned).

        What the first scan rejected or found undocumented, a second that read to the last
        page found again.
        """
        result = self.result
        result.counts = rescanned(counts, result.counts, whole=self._whole, wrote=self.ctx.write)
        if not self._whole:
            result.rejected = max(result.rejected, rejected)
            result.unknown_statuses = max(result.unknown_statuses, unknown)

    def _check_shown(self) -> None:
        """Count the new actions the feed showed of the image that its listing did not.

        One the listing did not show and nothing stores is not in the table: the listing
        lags behind the feed (or the feed invented it). The run then keeps its watermark,
        so the next run reads the feed down to it again and looks for it once more.
        """
        unseen = self.order.shown - self._seen
        if not unseen or not self.result.scanned:
            return
        with one_read(self.ctx.engine) as conn:
            unlisted = unseen - read_stored(conn, unseen).keys()
        self.result.unlisted = len(unlisted)
        if unlisted:
            logger.warning(
                "image %d: the feed showed %d new actions its own listing does not (%s); "
                "the feed's watermark stays, so the next run looks for them again",
                self.result.image_id,
                len(unlisted),
                ", ".join(map(str, sorted(unlisted)[:5])),
                extra=self._fields(),
            )

    def _take_pages(
        self, pages: Iterator[Page], state: ScanState, known: KnownState, stored_before: int
    ) -> None:
        """Store pages one after another, until the last or until the scan may stop."""
        result = self.result
        for page in pages:
            if page.number == 1:
                result.first_page_digest = page.digest
                total = known.meta_total if page.known else page.total
                same = state.may_stop and known.first_page_digest == page.digest
                if same and total == stored_before:
                    self._take_known_page(page, state.seen, stored_before)
                    return
            if self._take_page(page, state):
                result.stopped_early = True
                return

    def _take_page(self, page: Page, state: ScanState) -> bool:
        """Store one page, feed it to the scan's state; return whether the scan may stop."""
        return self._account(
            page, *self._on_writer(self._store, page.items, page=page.number), state
        )

    def _take_pages_overlapped(self, pages: Iterator[Page], state: ScanState) -> None:
        """Store every page, each written on the run's writers while the next one is fetched.

        The pages are written in order, so the image's pages still commit in order: one at
        a time on writers of their own; on SQLite's one writer (see etl.sync.writer), which
        commits one page of an image before it writes the next, the page before it may
        still wait for its commit. A page being written when fetching fails is committed
        and counted before the error goes on; each page is counted in order.
        """
        writer = self.ctx.writer
        result = self.result
        grouped = writer if isinstance(writer, GroupWriter) else None
        pending: deque[tuple[Page, Future[tuple[Split, UpsertCounts]]]] = deque()

        def account(left: int) -> None:
            while len(pending) > left:
                written, write = pending.popleft()  # accounted once, even if it raises
                self._account(written, *write.result(), state)

        try:
            for page in pages:  # fetching this page overlaps writing the ones before
                if page.number == 1:
                    result.first_page_digest = page.digest
                account(0 if grouped is None else 1)
                if isinstance(page.prepared, Quick):  # counted once the listing ends
                    account(0)
                    self._prints.take_unread(page)
                    continue
                if self._prints.quick:  # their ids are needed after all
                    account(0)
                    self._read_unread(state)
                if self._prints.matches(page.number, page.digest):
                    account(0)
                    taken = self._take_printed(page)
                    if taken is not None:
                        self._account(page, *taken, state, taken=True)
                        continue
                items = self._actions(page)
                if grouped is not None:  # SQLite's writer: pages queued commit together
                    write = grouped.submit_page(self._page_write(items, page=page.number))
                else:
                    write = writer.submit(self._store, items, page=page.number)
                pending.append((page, write))
        except BaseException:
            self._end_pages(pending, state)  # the first error goes on
            raise
        failure = self._end_pages(pending, state)
        if failure is not None:
            raise failure

    def _end_pages(
        self, pending: deque[tuple[Page, Future[tuple[Split, UpsertCounts]]]], state: ScanState
    ) -> BaseException | None:
        """Count the pages still being written, each once committed, then those taken unread.

        Return the first error of a page's write (an UnwrittenError comes after the error
        of the page before it).
        """
        failure: BaseException | None = None
        while pending:
            written, write = pending.popleft()
            try:
                self._account(written, *write.result(), state)
            except BaseException as exc:
                failure = failure or exc
        self._unread.clear()
        for page in self._prints.quick:  # counted unchanged; the ids wait for the check
            split, counts = Split(unchanged=page.size), UpsertCounts(unchanged=page.size)
            self._account(page, split, counts, state, taken=True)
        return failure

    def _read_unread(self, state: ScanState) -> None:
        """Read the pages taken unread for their ids, and take them as read (see prints)."""
        preparer, image_id = self.ctx.preparer, self.result.image_id
        for page in self._prints.read_unread():
            content = self._unread.pop(page.number)
            if preparer is not None:
                read = preparer.page(content, image_id, read_only=True)
                page = dataclasses.replace(page, prepared=read)
            else:  # bytes printed: a JSON object with its list of actions
                page = dataclasses.replace(
                    page, items=parse_json(content)["actions"], prepared=None
                )
            taken = self._take_printed(page)
            if taken is None:  # only a collision of fingerprints: compared as any page
                items = page.items if preparer is None else preparer.page(content, image_id)
                taken = self._on_writer(self._store, items, page=page.number)
                self._account(page, *taken, state)
            else:
                self._account(page, *taken, state, taken=True)

    def _prepare(self, content: bytes, number: int, digest: str) -> PreparedPage | Quick | None:
        """Read and prepare a page's bytes (see etl.sync.prepare), on the ctx's preparer.

        A page that may be taken unread is not read: its print says what it holds (see
        etl.sync.prints). A page likely to be taken by its print is only read. Either
        keeps its bytes, in case it is not taken after all. Without a preparer any other
        page is left to the client to read (None).
        """
        preparer = self.ctx.preparer
        quick = self._prints.unread(number, digest)
        if quick is not None and sum(map(len, self._unread.values())) + len(content) <= QUICK_BYTES:
            self._unread[number] = content
            return quick
        if preparer is None:
            return None
        read_only = self._prints.matches(number, digest)
        self._read_only = (number, content) if read_only else None
        return preparer.page(content, self.result.image_id, read_only=read_only)

    def _actions(self, page: Page) -> list[Any] | PreparedPage:
        """Return what _store takes of a page: its items, or the page prepared."""
        prepared: PreparedPage | None = page.prepared
        if prepared is None:
            return page.items
        if prepared.actions is not None:
            return prepared
        # Only read, and not taken by its print after all: prepared now, from its bytes.
        kept, preparer = self._read_only, self.ctx.preparer
        if kept is None or kept[0] != page.number or preparer is None:
            raise RuntimeError(f"page {page.number} was only read, and its bytes not kept")
        return preparer.page(kept[1], self.result.image_id)

    def _take_printed(self, page: Page) -> tuple[Split, UpsertCounts] | None:
        """Count a page with the bytes of a clean page of the last complete scan unchanged.

        Nothing is read, transformed or written (see etl.sync.prints); the scan's end checks
        that its actions are still stored as they were. None if its items are not what a
        clean page holds, which only a collision of fingerprints could bring: it is
        compared as any page.
        """
        ids = listed_ids(page.items if page.prepared is None else page.prepared)
        if len(ids) != page.size:
            return None
        self._prints.take(page, ids)
        return taken_page(ids)

    def _account(
        self,
        page: Page,
        split: Split,
        counts: UpsertCounts,
        state: ScanState,
        *,
        taken: bool = False,
    ) -> bool:
        """Feed a page stored (or ``taken`` by print) to the scan's state and the run.

        Return whether the scan may stop.
        """
        result = self.result
        if not taken:
            clean = stored_as_listed(page, split, counts)
            self._prints.record(page, split.hashes if clean else None)
        self._count_unknown(split.statuses)
        stop = state.add_page(
            split.ids,
            [r.action_id for r in split.rejected],
            inserted=counts.inserted,
            known=counts.updated + counts.unchanged,
            total=page.total,
        )
        result.counts += counts
        result.rejected += len(split.rejected)
        result.pages += 1
        result.total = page.total
        self.ctx.page_done(result)
        return stop

    def _take_known_page(self, page: Page, seen: set[int], stored: int) -> None:
        """Take a first page byte-identical to the last clean sync's as read, and stop there.

        Same bytes, and meta.total equal to the rows stored (not marked missing): nothing
        on it or past it is new or changed; only stored in-progress actions elsewhere get
        refreshed.
        """
        ids = {item.get("id") for item in page.items if isinstance(item, dict)}
        seen.update(i for i in ids if isinstance(i, int))
        result = self.result
        on_page = len(ids) if not page.known else min(stored, self.ctx.per_page)
        result.counts += UpsertCounts(unchanged=on_page)
        result.pages += 1
        result.total = stored
        result.received = on_page
        result.stopped_early = True
        self.ctx.page_done(result)

    def _count_unknown(self, statuses: list[Any]) -> None:
        result = self.result
        odd = sorted({str(status) for status in statuses if status not in KNOWN_STATUSES})
        if odd:
            unknown = sum(1 for status in statuses if status not in KNOWN_STATUSES)
            result.unknown_statuses += unknown
            logger.warning(
                "image %d: %d actions with a status the API does not document (%s); kept, "
                "and refreshed until completed or errored",
                result.image_id,
                unknown,
                ", ".join(odd)[:200],
                extra=self._fields(),
            )

    def _on_writer(self, write: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``write`` on the run's writers and wait for it.

        On SQLite and DuckDB the writers are one thread: a second thread writing beside it
        queues on the file's lock, and both the queuer and the writer behind it wake only
        when SQLite's busy handler next polls (after 1, 2, 5, 10... ms).
        """
        return self.ctx.writer.submit(write, *args, **kwargs).result()

    def _mark_missing(self, listed: set[int], stored: dict[int, str] | None) -> None:
        """Mark what a complete --full scan did not list, but actions listed elsewhere.

        ``stored``: the image's stored actions not marked missing if they were read after
        its pages, else None to read them now.
        """
        result, ctx = self.result, self.ctx
        if stored is None:
            with one_read(ctx.engine) as conn:
                stored = listed_hashes(conn, result.image_id)
        elsewhere = ctx.listed_elsewhere
        unlisted = [i for i in stored if i not in listed and i not in elsewhere]
        if unlisted:
            self._on_writer(self._mark, unlisted)

    def _mark(self, unlisted: list[int]) -> None:
        result, ctx = self.result, self.ctx
        # Pages in flight that list one of them commit first (noting it listed elsewhere),
        # and later ones wait for the marks, read them and clear them: see Turns.
        with ctx.turns.turn(unlisted), ctx.engine.begin() as conn:
            gone = [action_id for action_id in unlisted if action_id not in ctx.listed_elsewhere]
            result.missing = mark_missing(conn, result.image_id, gone, now=ctx.now())
        if result.missing:
            logger.warning(
                "image %d: %d stored actions are no longer listed by the API; marked "
                "missing_since, kept",
                result.image_id,
                result.missing,
                extra=self._fields(),
            )

    def _store(self, items: list[Any] | PreparedPage, *, page: int) -> tuple[Split, UpsertCounts]:
        """Store a page's actions in one transaction (a crash keeps the pages before)."""
        return self._store_listed(items, listed_ids(items), page)

    def _store_listed(
        self, items: list[Any] | PreparedPage, ids: list[int], page: int
    ) -> tuple[Split, UpsertCounts]:
        """Do _store for a page whose listed ids are known already."""
        with self.ctx.turns.turn(ids), self.ctx.engine.begin() as conn:
            written = self._write(conn, items, ids, page)
        return self._written(written, page)

    def _page_write(
        self, items: list[Any] | PreparedPage, *, page: int
    ) -> PageWrite[_Written, tuple[Split, UpsertCounts]]:
        """Return what _store does, in parts, for a writer that may group pages (see writer)."""
        ids = listed_ids(items)

        def write(conn: Connection) -> _Written:
            self._after_unwritten(page)
            return self._write(conn, items, ids, page)

        def alone() -> tuple[Split, UpsertCounts]:  # its last try (see etl.sync.writer)
            self._after_unwritten(page)
            try:
                return self._store_listed(items, ids, page)
            except BaseException:
                self._unwritten = True
                raise

        return PageWrite(
            image=self.result.image_id,
            ids=frozenset(ids),
            hold=lambda: self.ctx.turns.turn(ids),
            write=write,
            done=lambda written: self._written(written, page),
            alone=alone,
        )

    def _after_unwritten(self, page: int) -> None:
        """Refuse to write a page after one of the image's pages failed to be written.

        The writer may hold the next page when the one before fails: written, it would
        leave a gap in the image's stored pages. (The scan raises the first failure.)
        """
        if self._unwritten:
            raise UnwrittenError(f"page {page} follows a page that could not be written")

    def _write(
        self, conn: Connection, items: list[Any] | PreparedPage, ids: list[int], page: int
    ) -> _Written:
        """Write a page's actions within a transaction; see _written once it commits.

        The stored fingerprints are read first (see _compare), but for a page likely new
        (the scan's first of an image not synced complete, or one after a page that found
        none of its actions stored), inserted without a read where the driver can.
        """
        ctx, image_id = self.ctx, self.result.image_id
        now = ctx.now()
        prepared = items if isinstance(items, PreparedPage) else None
        letters = NO_LETTERS
        taken = None
        new = self._expect_new and ctx.write and page and inserts_new(conn.dialect)
        if new and prepared is not None:
            # Inserted without a read; should one of them be stored after all, nothing
            # of them is written, and the page is read and compared as any other.
            assert prepared.actions is not None  # noqa: S101  (see _actions)
            split = split_prepared(prepared.actions, ids, page, {})
            inserted = insert_new_actions(conn, split.rows, now=now)
            taken = None if inserted is None else (split, inserted)
        if taken is None:
            taken = self._compare(conn, items, ids, page, now)
        split, counts = taken
        counts += UpsertCounts(unchanged=split.unchanged)
        wrote = counts.inserted + counts.updated + len(split.rejected)
        # Noted by _written once committed: a transaction rolled back (with the pages it
        # shared, see etl.sync.writer) leaves them to be done again.
        started = ctx.write and wrote and page and not self._changing
        refreshed = ctx.write and wrote and not page and not self._refreshed
        if started:
            # Until this scan ends, the stored actions are not a complete scan. (Not so
            # for refreshed actions, page 0: their rows change, never which are stored.)
            mark_scan_started(conn, image_id)
        elif refreshed:
            clear_page_digests(conn, image_id)  # the rows may now differ from the pages
        if ctx.write and ctx.run_id is not None:
            letters = self._letters.unsaved(split.rejected)  # once a run, rescanned or not
            save_rejected(conn, letters.rejected, run_id=ctx.run_id, image_id=image_id, now=now)
        return _Written(split, counts, letters, bool(started), bool(refreshed))

    def _written(self, written: _Written, page: int) -> tuple[Split, UpsertCounts]:
        """Note a page's write as committed; return what it stored."""
        split, counts, letters, started, refreshed = written
        self._changing = self._changing or started
        self._refreshed = self._refreshed or refreshed
        self._letters.saved(letters)
        logger.debug(
            "image %d: %d actions, %d rejected, %s",
            self.result.image_id,
            len(split.ids),
            len(split.rejected),
            counts,
            extra=self._fields(page=page),
        )
        return split, counts

    def _compare(
        self,
        conn: Connection,
        items: list[Any] | PreparedPage,
        ids: list[int],
        page: int,
        now: datetime,
    ) -> tuple[Split, UpsertCounts]:
        """Read what is stored of a page's actions, then write the new and changed ones.

        An action stored unchanged under this image is not even transformed (unless it
        came prepared, transformed already).
        """
        ctx = self.ctx
        stored = read_stored(conn, ids)
        self._expect_new = not stored  # the next page likely as this one
        # The fingerprint covers the image too: one stored under another never matches.
        known = {
            action_id: found.content_hash
            for action_id, found in stored.items()
            if not found.missing  # listed again: rewritten to clear the mark
        }
        if isinstance(items, PreparedPage):
            assert items.actions is not None  # noqa: S101  (see _actions)
            split = split_prepared(items.actions, ids, page, known)
        else:
            depth = json_depth_limit(conn.dialect.name)
            split = split_page(items, self.result.image_id, page, known, max_depth=depth)
        counts = upsert_actions(
            conn,
            split.rows,
            now=now,
            write=ctx.write,
            elsewhere_ids=ctx.listed_elsewhere,
            stored=stored,
        )
        return split, counts

    def _refresh_unfinished(self, running: list[int], seen: set[int]) -> int:
        """Fetch, one by one, the actions stored unfinished that the pages did not reach.

        ``running`` was read before the pages: any unfinished row written since came from
        a page, so it is in ``seen``. Returns how many answered 404 (kept as stored).
        """
        gone = 0
        result = self.result
        pending = [action_id for action_id in running if action_id not in seen]
        fetched = []
        for action_id in pending:
            try:
                fetched.append(get_image_action(self.ctx.client, result.image_id, action_id))
            except NotFoundError:
                gone += 1
                logger.warning(
                    "image %d action %d was unfinished and is now gone (404); kept as stored",
                    result.image_id,
                    action_id,
                    extra=self._fields(),
                )
        if fetched:  # one transaction for all of them
            split, counts = self._on_writer(self._store, fetched, page=0)
            self._count_unknown(split.statuses)
            result.counts += counts
            result.rejected += len(split.rejected)
            result.refreshed += len(fetched)
        return gone
