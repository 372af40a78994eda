"""Compose extract, transform and load; own the transactions and the run's tally."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine

from etl.client import ApiClient
from etl.config import Settings
from etl.database import open_engine, translate_errors
from etl.errors import ApiError, AuthError, ConfigError, TransformError
from etl.extract import iter_image_action_pages
from etl.load import UpsertCounts, upsert_actions
from etl.migrate import ensure_schema
from etl.transform import flatten_action

logger = logging.getLogger(__name__)

SCANS_PER_IMAGE = 2  # a scan whose count disagrees with meta.total is repeated once


def utc_now() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


@dataclass
class ImageResult:
    """What one image's sync did."""

    image_id: int
    pages: int = 0
    requests: int = 0
    counts: UpsertCounts = field(default_factory=UpsertCounts)
    total: int | None = None
    received: int = 0
    seconds: float = 0.0
    complete: bool = True
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Return whether the image synced fully and without error."""
        return self.error is None and self.complete


@dataclass
class RunResult:
    """What a whole sync run did, image by image."""

    images: list[ImageResult] = field(default_factory=list)
    seconds: float = 0.0
    requests: int = 0
    retries: int = 0

    @property
    def outcome(self) -> str:
        """Return succeeded, partial (some images failed or incomplete) or failed (all did)."""
        if all(image.ok for image in self.images):
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


def sync_image(
    client: ApiClient,
    engine: Engine,
    image_id: int,
    *,
    per_page: int,
    now: Callable[[], datetime] = utc_now,
) -> ImageResult:
    """Sync one image's actions, committing after every page.

    After the last page the number of distinct actions received is checked against
    ``meta.total``; on a mismatch (live data shifted while paging) the image is scanned
    once more, and a mismatch that persists marks the image incomplete.

    An API or transform failure is recorded in the result's ``error``; pages loaded before
    it stay loaded.

    Raises:
        AuthError: the API refused the token, which no other image can survive either.
    """
    result = ImageResult(image_id)
    started = time.monotonic()
    requests_before = client.stats.requests
    try:
        _scan_image(client, engine, result, per_page=per_page, now=now)
    except AuthError:
        raise
    except (ApiError, TransformError) as exc:
        logger.error("image %d failed: %s", image_id, exc)
        result.error = str(exc)
    result.requests = client.stats.requests - requests_before
    result.seconds = time.monotonic() - started
    return result


def _scan_image(
    client: ApiClient,
    engine: Engine,
    result: ImageResult,
    *,
    per_page: int,
    now: Callable[[], datetime],
) -> None:
    image_id = result.image_id
    for scan in range(1, SCANS_PER_IMAGE + 1):
        seen: set[int] = set()
        for page in iter_image_action_pages(client, image_id, per_page=per_page):
            rows = []
            for position, raw in enumerate(page.actions):
                try:
                    rows.append(flatten_action(raw, image_id=image_id))
                except TransformError as exc:
                    raise TransformError(
                        f"image {image_id} page {page.number} action {position + 1}: {exc}"
                    ) from exc
            with engine.begin() as conn:  # one transaction per page: a crash keeps the pages before
                counts = upsert_actions(conn, rows, now=now())
            logger.debug(
                "image %d page %d: %d actions, %s", image_id, page.number, len(rows), counts
            )
            result.counts += counts
            seen.update(row["id"] for row in rows)
            result.pages += 1
            result.total = page.total
        result.received = len(seen)
        result.complete = result.total is None or result.received == result.total
        if result.complete:
            break
        logger.warning(
            "image %d: received %d distinct actions but meta.total is %s (scan %d of %d)",
            image_id,
            result.received,
            result.total,
            scan,
            SCANS_PER_IMAGE,
        )


def run_sync(
    settings: Settings,
    *,
    sleep: Callable[[float], None] = time.sleep,
    on_image: Callable[[ImageResult], None] | None = None,
) -> RunResult:
    """Sync every configured image into the configured database.

    A failing image is recorded and the others go on; a refused token stops the run.

    Raises:
        ConfigError: no token, or no images to sync.
        AuthError: the API refused the token.
        DatabaseError: the database is unreachable, refuses writes, or has a foreign schema.
    """
    token = settings.require_token()
    if not settings.images:
        raise ConfigError("no images to sync: list image ids in 'images' or pass --image ID")
    run = RunResult()
    started = time.monotonic()
    engine = open_engine(settings.database_url)
    client = ApiClient(
        base_url=settings.api_url,
        token=token,
        timeout=settings.timeout,
        max_attempts=settings.max_attempts,
        max_retry_wait=settings.max_retry_wait,
        max_total_wait=settings.max_total_wait,
        sleep=sleep,
    )
    try:
        with translate_errors(settings.database_url):
            ensure_schema(engine, auto_migrate=settings.auto_migrate)
            for image_id in settings.images:
                image = sync_image(client, engine, image_id, per_page=settings.per_page)
                run.images.append(image)
                if on_image is not None:
                    on_image(image)
    finally:
        run.requests = client.stats.requests
        run.retries = client.stats.retries
        run.seconds = time.monotonic() - started
        client.close()
        engine.dispose()
    return run
