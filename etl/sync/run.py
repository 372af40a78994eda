"""A run as a recipe: lock, schema, ledger, plan, workers, finish."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from etl.config import Settings
from etl.errors import ConfigError, EtlError, LockedOutError, TooManyRejectedError
from etl.source.client import ApiClient
from etl.source.extract import iter_image_ids
from etl.store.bulk import bulk_form
from etl.store.database import EMBEDDED, database_error, open_engine, translate_errors
from etl.store.ledger import (
    ImageState,
    finish_run,
    known_states,
    last_success_at,
    save_image_states,
    start_run,
)
from etl.store.lock import SyncLock
from etl.store.revision import HEAD_REVISION, current_revision, ensure_schema
from etl.store.schema import json_depth_limit
from etl.store.watermark import Watermark, save_watermark
from etl.sync.context import RunContext, ScanOrder, open_client
from etl.sync.coordinator import Coordinator, describe, outcome_of, stop_on_signals
from etl.sync.image_scan import run_order
from etl.sync.plan import Plan, make_plan
from etl.sync.preparer import Preparer, spare_cores
from etl.sync.ratelimit import RateLimiter
from etl.sync.results import ImageResult, RunResult
from etl.sync.writer import GroupWriter
from etl.timeutil import utc_now

logger = logging.getLogger(__name__)


__all__ = ["ImageResult", "RunResult", "run_sync"]


def _reads_to_end(order: ScanOrder) -> bool:
    """Return whether an image's scan will read its whole listing (see ImageScan)."""
    known = order.known
    return not order.refresh_only and (order.full or known is None or not known.scan_complete)


class _Run:
    """One run: its settings, collaborators and result."""

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine,
        client: ApiClient,
        coordinator: Coordinator,
        result: RunResult,
        now: Callable[[], datetime],
        on_image: Callable[[ImageResult], None] | None,
        on_page: Callable[[ImageResult], None] | None,
        on_plan: Callable[[int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.client = client
        self.coordinator = coordinator
        self.result = result
        self.now = now
        self.on_image = on_image
        self.on_page = on_page
        self.on_plan = on_plan
        self.lock: SyncLock | None = None
        self.candidate: Watermark | None = None
        self._tally = threading.Lock()  # rejections across workers, and on_page's output
        self._rejected: dict[int, int] = {}
        self._states: list[ImageState] = []

    def locked(self) -> None:
        """Run under the sync lock, keeping the ledger."""
        lock = SyncLock(self.engine, now=self.now)
        try:
            lock.acquire_server_lock()
            revision = ensure_schema(self.engine, auto_migrate=self.settings.auto_migrate)
            lock.claim()
        except LockedOutError as exc:
            self.locked_out(exc)
            lock.release()
            return
        self.lock = lock
        try:
            self.result.run_id = self.start(revision)
            logger.debug(
                "run %d started (%s)",
                self.result.run_id,
                self.result.mode,
                extra={"run_id": self.result.run_id},
            )
            try:
                bug = self.sync_all()
            except BaseException as exc:  # whatever escapes, the ledger row is finished
                failure = (
                    database_error(self.settings.database_url, exc)
                    if isinstance(exc, SQLAlchemyError)
                    else exc
                )
                self.result.end("failed", describe(failure))
                self.finish()
                raise
            self.finish()
            if bug is not None:
                raise bug
        finally:
            lock.release()

    def dry(self) -> None:
        """Run without the lock and without writing anything, the ledger included."""
        ensure_schema(self.engine, auto_migrate=False)
        bug = self.sync_all()
        if bug is not None:
            raise bug

    def start(self, revision: str, outcome: str = "running") -> int:
        requested = "all" if self.settings.all_images else list(self.settings.images)
        return start_run(
            self.engine,
            mode=self.result.mode,
            images_requested=requested,
            schema_revision=revision,
            now=self.now(),
            outcome=outcome,
        )

    def locked_out(self, exc: LockedOutError) -> None:
        # Recorded first, so it stands: on DuckDB the holder's file lock keeps this process
        # out of the ledger as well, and reading the revision below fails as a DatabaseError.
        self.result.end("locked_out", str(exc))
        if current_revision(self.engine) == HEAD_REVISION:  # else there is no ledger to write to
            self.result.run_id = self.start(HEAD_REVISION, outcome="locked_out")
            self.finish()

    def sync_all(self) -> BaseException | None:
        """Plan, run every image on the workers, save their states, and settle the outcome.

        Returns the error to raise once the ledger is written: one that is no EtlError.
        """
        # SQLite and DuckDB take one writer at a time: one thread writing their pages hands
        # over at once, where writers queueing on the file's lock wake up only when polled.
        # SQLite's commits the pages waiting for it together (see etl.sync.writer).
        name = self.engine.dialect.name
        writers = 1 if name in EMBEDDED else self.settings.workers
        writer: Executor = (
            GroupWriter(self.engine)
            if name == "sqlite"
            else ThreadPoolExecutor(writers, thread_name_prefix="write")
        )
        with writer:
            return self._sync_all(writer, self.preparer())

    def preparer(self) -> Preparer | None:
        """Return what prepares the run's pages, for the dialects with a bulk writer."""
        dialect = self.engine.dialect
        form = bulk_form(dialect)
        if form is None:
            return None
        helper = self.settings.helper_process and spare_cores() > 0
        depth = json_depth_limit(dialect.name)
        stop = self.coordinator.stop
        preparer = Preparer(form=form, max_depth=depth, helper=helper, stop=stop)
        if self.result.mode == "full":  # every page is read: start it beside the plan
            preparer.start()
        return preparer

    def _sync_all(self, writer: Executor, preparer: Preparer | None) -> BaseException | None:
        context = RunContext(
            client=self.client,
            engine=self.engine,
            coordinator=self.coordinator,
            per_page=self.settings.per_page,
            full=self.result.mode == "full",
            write=not self.result.dry_run,
            run_id=self.result.run_id,
            now=self.now,
            page_done=self.page_done,
            writer=writer,
            preparer=preparer,
        )
        try:
            plan = make_plan(context, self.settings, self.images())
            scanned = [order.image_id for order in plan.orders if not order.refresh_only]
            with self.engine.connect().execution_options(read_only=True) as conn:
                known = known_states(conn, scanned)
            plan.orders = [replace(order, known=known.get(order.image_id)) for order in plan.orders]
            if preparer is not None and any(_reads_to_end(order) for order in plan.orders):
                preparer.start()  # on the spare core, while the first pages are fetched
            if self.on_plan is not None:  # the images the run will scan and report
                self.on_plan(len(scanned))
        except BaseException as exc:  # settled below, like a worker's
            self.coordinator.end_run(exc)
            plan = Plan("per-image")
        self.result.strategy, self.candidate = plan.strategy, plan.candidate
        self.result.unscanned = plan.unscanned

        def work(order: ScanOrder) -> ImageResult | None:
            return None if self.coordinator.halt.is_set() else run_order(context, order)

        with ThreadPoolExecutor(self.settings.workers, thread_name_prefix="sync") as workers:
            for image in workers.map(work, plan.orders):
                if image is not None:
                    self.result.images.append(image)  # one cut short still counts its pages
                    self.record(image)
        if any(image.unlisted for image in self.result.images):
            self.candidate = None  # the next run reads the feed down to the old one again
        self.result.requests = self.client.stats.requests
        self.result.by_kind = dict(self.client.stats.by_kind)
        self.result.retries = self.client.stats.retries
        self.result.rate_limit_wait = self.client.stats.rate_limit_wait + self.coordinator.waited
        self.save_states()  # also when the run ends early: what finished, finished
        return self.settle()

    def images(self) -> list[int]:
        if self.settings.all_images:
            ids = list(iter_image_ids(self.client, per_page=self.settings.per_page))
            logger.info("the account has %d private images", len(ids))
            return ids
        return list(self.settings.images)

    def settle(self) -> BaseException | None:
        """Turn a signal or the error that ended the run into its outcome."""
        interruption = self.coordinator.interruption()
        if interruption is not None:
            self.result.end("interrupted", interruption)
            self.result.signal = self.coordinator.signal
        ending = self.coordinator.ended_by
        if isinstance(ending, SQLAlchemyError):
            ending = database_error(self.settings.database_url, ending)
        if ending is None:
            return None
        self.result.end(outcome_of(ending), describe(ending))
        return None if isinstance(ending, EtlError) else ending

    def page_done(self, image: ImageResult) -> None:
        """After every committed page, on the worker's thread: stop, renew, count, report.

        Raises:
            RunInterrupted: the run halts.
            TooManyRejectedError: the run has rejected more actions than max_rejected.
        """
        self.coordinator.check()
        if self.lock is not None:
            self.lock.renew()
        limit = self.settings.max_rejected
        with self._tally:
            self._rejected[image.image_id] = image.rejected
            rejected = sum(self._rejected.values())
            if limit is not None and rejected > limit:
                raise TooManyRejectedError(
                    f"{rejected} actions were rejected, more than max_rejected={limit}; "
                    "see the rejected_actions table"
                )
            if self.on_page is not None:
                self.on_page(image)

    def record(self, image: ImageResult) -> None:
        """Note an image's state (saved in one batch at the end) and report it."""
        if not image.finished or not image.scanned:  # a refresh is no scan: audits rotate on
            return
        self._states.append(
            ImageState(
                image_id=image.image_id,
                ok=image.ok,
                meta_total=image.total,
                error=image.error,
                gone=image.gone,
                # Only after a clean scan may the next one stop early; only after one that
                # saw newest-first order may it skip a first page whose bytes are the same.
                first_page_digest=image.first_page_digest
                if image.clean and image.ordered
                else None,
                scan_complete=image.clean,
                page_digests=image.page_digests if image.clean else None,
            )
        )
        if self.on_image is not None:
            self.on_image(image)

    def save_states(self) -> None:
        """Write every finished image's state, in one transaction."""
        if self.result.run_id is not None and self._states:
            with self.engine.begin() as conn:
                save_image_states(conn, self._states, run_id=self.result.run_id, now=self.now())

    def finish(self) -> None:
        if self.result.run_id is None:
            return
        if self.candidate is not None and self.result.outcome == "succeeded":
            # Everything up to the feed's newest action at the start is now stored.
            with self.engine.begin() as conn:
                save_watermark(conn, self.candidate, run_id=self.result.run_id, now=self.now())
        error = self.client.redact(self.result.error or "") or None
        finish_run(
            self.engine,
            self.result.run_id,
            outcome=self.result.outcome,
            counters=self.result.counters(),
            error=error,
            now=self.now(),
            strategy=self.result.strategy,
        )
        with self.engine.connect() as conn:
            self.result.last_success = last_success_at(conn)


def run_sync(
    settings: Settings,
    *,
    full: bool = False,
    dry_run: bool = False,
    sleep: Callable[[float], None] | None = None,
    now: Callable[[], datetime] = utc_now,
    on_image: Callable[[ImageResult], None] | None = None,
    on_page: Callable[[ImageResult], None] | None = None,
    on_plan: Callable[[int], None] | None = None,
    limiter: RateLimiter | None = None,
) -> RunResult:
    """Sync the configured images into the configured database.

    A failing image is recorded and the others go on. The run is recorded in sync_runs
    (a dry run writes nothing at all) and holds the database's sync lock throughout.
    Failures past the settings (a refused token, a database that fails, a foreign schema)
    end the run with outcome "failed" and their one-sentence message in ``error``. In the
    main thread, SIGTERM and SIGINT end the run within a second or two as "interrupted"
    (``signal`` says which). Messages never hold the token, even one the API echoed.
    ``on_plan`` learns how many images the run will sync, once it knows (with
    --all-images, after listing them); ``on_page`` and ``on_image`` follow.

    Raises:
        ConfigError: no token, or no images to sync: nothing was requested.
    """
    token = settings.require_token()
    if not settings.images and not settings.all_images:
        raise ConfigError(
            "no images to sync: list image ids in 'images', pass --image ID, or use --all-images"
        )
    result = RunResult(mode="full" if full else "incremental", dry_run=dry_run)
    # Loads the database's driver (psycopg takes 0.15-0.2 s), code as the rest the run
    # loads before its clock starts: the clock times the sync, whatever the database.
    engine = open_engine(settings.database_url)
    started = time.monotonic()
    coordinator, client = open_client(settings, token, limiter=limiter, sleep=sleep)
    run = _Run(
        settings,
        engine=engine,
        client=client,
        coordinator=coordinator,
        result=result,
        now=now,
        on_image=on_image,
        on_page=on_page,
        on_plan=on_plan,
    )
    try:
        with stop_on_signals(coordinator), translate_errors(settings.database_url):
            run.dry() if dry_run else run.locked()
    except ConfigError:
        raise
    except EtlError as exc:
        result.end("failed", str(exc))
    finally:
        result.seconds = time.monotonic() - started
        client.close()
        engine.dispose()
        result.error = client.redact(result.error) if result.error else None
    logger.debug(
        "the run ended %s: %d images, %d requests, %.2f s",
        result.outcome,
        len(result.images),
        result.requests,
        result.seconds,
        extra={"run_id": result.run_id, "requests": result.requests},
    )
    return result
