"""Compose a run: lock, schema, ledger, then every image through ImageSync."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine

from etl.config import Settings
from etl.errors import (
    ConfigError,
    DeferredError,
    EtlError,
    LockedOutError,
    RunInterrupted,
    TooManyRejectedError,
)
from etl.source.client import ApiClient
from etl.source.extract import iter_image_ids
from etl.store.database import open_engine, translate_errors
from etl.store.ledger import ImageState, finish_run, last_success_at, save_image_states, start_run
from etl.store.load import UpsertCounts
from etl.store.lock import SyncLock
from etl.store.migrate import current_revision, ensure_schema, head_revision
from etl.sync.image_scan import ImageResult, ImageSync
from etl.sync.ratelimit import RateLimiter
from etl.timeutil import utc_now

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # what systemd, Kubernetes, Docker and Ctrl-C send


__all__ = ["ImageResult", "RunResult", "run_sync"]


@dataclass
class RunResult:
    """What a whole sync run did, image by image."""

    mode: str = "incremental"
    dry_run: bool = False
    images: list[ImageResult] = field(default_factory=list)
    run_id: int | None = None
    # "deferred", "locked_out", "failed" or "interrupted": the run ended early
    stopped: str | None = None
    signal: int | None = None  # the signal that interrupted the run
    error: str | None = None
    seconds: float = 0.0
    requests: int = 0
    retries: int = 0
    rate_limit_wait: float = 0.0
    last_success: datetime | None = None

    @property
    def outcome(self) -> str:
        """Return succeeded, partial, failed, deferred, locked_out or interrupted.

        Partial: some images failed or stayed incomplete, or some actions were rejected.
        """
        if self.stopped is not None:
            return self.stopped
        if all(image.ok for image in self.images) and not self.rejected:
            return "succeeded"
        if any(image.ok for image in self.images):
            return "partial"
        return "failed"

    @property
    def counts(self) -> UpsertCounts:
        """Return the inserted/updated/unchanged tally over all images."""
        total = UpsertCounts()
        for image in self.images:
            total += image.counts
        return total

    @property
    def rejected(self) -> int:
        """Return how many actions were rejected over all images."""
        return sum(image.rejected for image in self.images)

    def counters(self) -> dict[str, float]:
        """Return the ledger's tallies for this run."""
        counts = self.counts
        return {
            "images_synced": sum(1 for image in self.images if image.ok),
            "images_failed": sum(1 for image in self.images if not image.ok),
            "pages": sum(image.pages for image in self.images),
            "requests": self.requests,
            "retries": self.retries,
            "rate_limit_wait_seconds": round(self.rate_limit_wait, 3),
            "rows_inserted": counts.inserted,
            "rows_updated": counts.updated,
            "rows_unchanged": counts.unchanged,
            "rows_rejected": self.rejected,
            "meta_total_sum": sum(image.total or 0 for image in self.images),
            "unknown_statuses": sum(image.unknown_statuses for image in self.images),
            "rows_missing": sum(image.missing for image in self.images),
            "rows_listed_elsewhere": counts.elsewhere,
        }


@dataclass
class _Run:
    """One run's collaborators."""

    settings: Settings
    engine: Engine
    client: ApiClient
    result: RunResult
    now: Callable[[], datetime]
    on_image: Callable[[ImageResult], None] | None
    on_page: Callable[[ImageResult], None] | None
    interrupt: threading.Event  # set by a signal: waits end and requests in flight are cut
    stop: threading.Event = field(default_factory=threading.Event)  # no new image or page
    lock: SyncLock | None = None
    signal: int | None = None  # set by the signal handler
    tally: threading.Lock = field(default_factory=threading.Lock)
    rejected_by_image: dict[int, int] = field(default_factory=dict)
    states: list[ImageState] = field(default_factory=list)

    def images(self) -> list[int]:
        if self.settings.all_images:
            ids = list(iter_image_ids(self.client, per_page=self.settings.per_page))
            logger.info("the account has %d private images", len(ids))
            return ids
        return list(self.settings.images)

    def page_done(self, image: ImageResult) -> None:
        """After every committed page, on the worker's thread: stop, renew, count, report."""
        if self.stop.is_set():
            raise RunInterrupted("the run was asked to stop")
        if self.lock is not None:
            self.lock.renew()
        limit = self.settings.max_rejected
        with self.tally:
            self.rejected_by_image[image.image_id] = image.rejected
            rejected = sum(self.rejected_by_image.values())
        if limit is not None and rejected > limit:
            raise TooManyRejectedError(
                f"{rejected} actions were rejected, more than max_rejected={limit}; "
                "see the rejected_actions table"
            )
        if self.on_page is not None:
            self.on_page(image)

    def sync_one(self, image_id: int) -> tuple[ImageResult | None, BaseException | None, bool]:
        """Sync one image on a worker; return it, a run-ending error, and whether it finished.

        A run-ending error (a refused token, a spent budget...) stops the other workers.
        """
        if self.stop.is_set():
            return None, None, False
        syncer = ImageSync(
            self.client,
            self.engine,
            self.settings.per_page,
            full=self.result.mode == "full",
            write=not self.result.dry_run,
            run_id=self.result.run_id,
            now=self.now,
            on_page=self.page_done,
        )
        try:
            return syncer.sync(image_id), None, True
        except RunInterrupted:
            return syncer.current, None, False
        except BaseException as exc:  # re-raised on the main thread, in sync_images
            self.stop.set()
            return syncer.current, exc, False

    def sync_images(self) -> None:
        """Sync every image on a pool of workers; record each image's state in order."""
        failure: BaseException | None = None
        workers = ThreadPoolExecutor(self.settings.workers, thread_name_prefix="sync")
        try:
            futures = [workers.submit(self.sync_one, image_id) for image_id in self.images()]
            for future in futures:
                image, error, finished = future.result()
                failure = failure or error
                if image is not None:
                    self.result.images.append(image)  # one cut short still counts its pages
                if image is not None and finished:
                    self.record(image)
        finally:
            self.stop.set()
            workers.shutdown(wait=True, cancel_futures=True)
            stats = self.client.stats
            self.result.requests = stats.requests
            self.result.retries = stats.retries
            self.result.rate_limit_wait = self.client.rate_limit_wait
        self.save_states()  # also when a worker's error ended the run: what finished, finished
        if failure is not None:
            raise failure

    def record(self, image: ImageResult) -> None:
        """Note a finished image's state (saved in one batch at the end) and report it."""
        clean = image.ok and not image.rejected  # only then may its first page be skipped
        self.states.append(
            ImageState(
                image_id=image.image_id,
                ok=image.ok,
                meta_total=image.total,
                error=image.error,
                gone=image.gone,
                first_page_digest=image.first_page_digest if clean else None,
                scan_complete=clean,
            )
        )
        if self.on_image is not None:
            self.on_image(image)

    def save_states(self) -> None:
        """Write every finished image's state, in one transaction."""
        if self.result.run_id is not None and self.states:
            with self.engine.begin() as conn:
                save_image_states(conn, self.states, run_id=self.result.run_id, now=self.now())

    def finish(self, error: str | None = None) -> None:
        if self.result.run_id is None:
            return
        finish_run(
            self.engine,
            self.result.run_id,
            outcome=self.result.outcome,
            counters=self.result.counters(),
            error=self.client.redact(error or self.result.error or "") or None,
            now=self.now(),
        )
        with self.engine.connect() as conn:
            self.result.last_success = last_success_at(conn)

    def locked(self) -> None:
        """Run under the sync lock, keeping the ledger."""
        mode = self.result.mode
        requested = "all" if self.settings.all_images else list(self.settings.images)
        lock = SyncLock(self.engine, now=self.now)
        try:
            lock.acquire_server_lock()
            revision = ensure_schema(self.engine, auto_migrate=self.settings.auto_migrate)
            lock.claim()
        except LockedOutError as exc:
            self.result.stopped, self.result.error = "locked_out", str(exc)
            head = head_revision()
            if current_revision(self.engine) == head:  # else there is no ledger to write to
                self.result.run_id = start_run(
                    self.engine,
                    mode=mode,
                    images_requested=requested,
                    schema_revision=head,
                    now=self.now(),
                    outcome="locked_out",
                )
                self.finish()
            lock.release()
            return
        self.lock = lock
        try:
            self.result.run_id = start_run(
                self.engine,
                mode=mode,
                images_requested=requested,
                schema_revision=revision,
                now=self.now(),
            )
            try:
                self.sync_images()
            except (DeferredError, TooManyRejectedError, LockedOutError, RunInterrupted) as exc:
                self.result.stopped, self.result.error = _ENDINGS[type(exc)], str(exc)
            except EtlError as exc:
                self.result.stopped, self.result.error = "failed", str(exc)
                self.finish()
                raise
            except BaseException as exc:
                # A bug, or an interrupt outside the main thread: the ledger still says so.
                self.result.stopped = "failed"
                self.finish(f"unexpected error ({type(exc).__name__}: {str(exc)[:300]})")
                raise
            self.interrupted()
            self.finish()
        finally:
            lock.release()

    def interrupted(self) -> None:
        """Turn a signal that arrived during the run into the run's outcome."""
        if self.signal is not None:
            name = signal.Signals(self.signal).name
            self.result.stopped, self.result.signal = "interrupted", self.signal
            self.result.error = (
                f"interrupted by {name}; pages committed so far are kept, run again to finish"
            )


# Run-ending errors that are outcomes, not failures of the tool.
_ENDINGS = {
    DeferredError: "deferred",
    TooManyRejectedError: "failed",
    LockedOutError: "failed",
    RunInterrupted: "interrupted",
}


@contextlib.contextmanager
def _stop_on_signals(run: _Run) -> Iterator[None]:
    """Turn SIGTERM and SIGINT into a stop of the run, for the run's duration.

    The handler only sets an event: workers stop before their next request, the page in
    hand commits or rolls back whole, waits end at once and requests in flight are cut.
    Outside the main thread (an embedding program) signals are left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: object) -> None:
        run.signal = run.signal or signum
        run.interrupt.set()
        run.stop.set()

    previous = {number: signal.signal(number, stop) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def run_sync(
    settings: Settings,
    *,
    full: bool = False,
    dry_run: bool = False,
    sleep: Callable[[float], None] | None = None,
    now: Callable[[], datetime] = utc_now,
    on_image: Callable[[ImageResult], None] | None = None,
    on_page: Callable[[ImageResult], None] | None = None,
    limiter: RateLimiter | None = None,
) -> RunResult:
    """Sync the configured images into the configured database.

    A failing image is recorded and the others go on. The run is recorded in sync_runs
    (a dry run writes nothing at all) and holds the database's sync lock throughout.
    Failures past the settings (a refused token, a database that fails, a foreign schema)
    end the run with outcome "failed" and their one-sentence message in ``error``. In the
    main thread, SIGTERM and SIGINT end the run within a second or two as "interrupted"
    (``signal`` says which). Messages never hold the token, even one the API echoed.

    Raises:
        ConfigError: no token, or no images to sync: nothing was requested.
    """
    token = settings.require_token()
    if not settings.images and not settings.all_images:
        raise ConfigError(
            "no images to sync: list image ids in 'images', pass --image ID, or use --all-images"
        )
    result = RunResult(mode="full" if full else "incremental", dry_run=dry_run)
    started = time.monotonic()
    engine = open_engine(settings.database_url)
    interrupt = threading.Event()
    client = ApiClient(
        base_url=settings.api_url,
        token=token,
        timeout=settings.timeout,
        max_attempts=settings.max_attempts,
        max_retry_wait=settings.max_retry_wait,
        max_total_wait=settings.max_total_wait,
        min_ratelimit_remaining=settings.min_ratelimit_remaining,
        max_response_bytes=settings.max_response_bytes,
        limiter=limiter
        or RateLimiter(
            per_minute=settings.rate_limit_per_minute,
            per_hour=settings.rate_limit_per_hour,
            stop=interrupt,
        ),
        stop=interrupt,
        sleep=sleep,
    )
    run = _Run(settings, engine, client, result, now, on_image, on_page, interrupt)
    try:
        with _stop_on_signals(run), translate_errors(settings.database_url):
            if dry_run:
                ensure_schema(engine, auto_migrate=False)
                try:
                    run.sync_images()
                except (DeferredError, RunInterrupted) as exc:
                    result.stopped, result.error = _ENDINGS[type(exc)], str(exc)
                run.interrupted()
            else:
                run.locked()
    except ConfigError:
        raise
    except EtlError as exc:
        result.stopped, result.error = "failed", str(exc)
    finally:
        result.seconds = time.monotonic() - started
        client.close()
        engine.dispose()
        result.error = client.redact(result.error) if result.error else None
    return result
