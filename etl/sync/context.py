"""What every image scan of a run needs, built once per run."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine

from etl.config import Settings
from etl.source.client import ApiClient
from etl.store.ledger import KnownState
from etl.sync.coordinator import Coordinator
from etl.sync.preparer import Preparer
from etl.sync.ratelimit import RateLimiter
from etl.sync.results import ImageResult
from etl.sync.turns import Turns


@dataclass(frozen=True)
class RunContext:
    """One run's collaborators and choices, shared read-only by its workers."""

    client: ApiClient
    engine: Engine
    coordinator: Coordinator
    per_page: int
    full: bool  # scan every page, and mark what is no longer listed
    write: bool  # False for a dry run: compare, count, write nothing
    run_id: int | None
    now: Callable[[], datetime]
    page_done: Callable[[ImageResult], None]  # after every committed page, on the worker
    # Where every write of a scan runs (one thread on SQLite and DuckDB): a scan that reads
    # to the end hands it each page while it fetches the next.
    writer: Executor
    # Actions this run saw listed under another image than the one that owns them: a
    # --full scan of the owner does not mark them missing.
    listed_elsewhere: set[int] = field(default_factory=set)
    # Pages and missing marks that share an action take turns (see Turns).
    turns: Turns = field(default_factory=Turns)
    # Prepares the pages of scans that read to the end for the dialect's bulk writer, in
    # the helper process when there is one; None for the dialects that bind per row.
    preparer: Preparer | None = None


@dataclass(frozen=True)
class ScanOrder:
    """What the run's plan asks of one image."""

    image_id: int
    full: bool | None = None  # None: as the run says
    # The new actions the feed showed of the image: its listing is read for them, and must
    # show them.
    shown: frozenset[int] = frozenset()
    refresh_only: bool = False  # only refresh stored unfinished actions
    audit: bool = False  # untouched by the feed: checked to catch what the feed missed
    # What the image's last sync left, read with every other image's before the scans;
    # None: its scan reads it (a second scan in a run reads what the first wrote).
    known: KnownState | None = None

    @property
    def touched(self) -> bool:
        """Return whether the feed showed new actions of the image."""
        return bool(self.shown)


def open_client(
    settings: Settings,
    token: str,
    *,
    limiter: RateLimiter | None = None,
    sleep: Callable[[float], None] | None = None,
) -> tuple[Coordinator, ApiClient]:
    """Return a run's coordinator and the API client it gates, both from the settings."""
    coordinator = Coordinator(
        limiter=limiter
        or RateLimiter(
            per_minute=settings.rate_limit_per_minute, per_hour=settings.rate_limit_per_hour
        ),
        min_ratelimit_remaining=settings.min_ratelimit_remaining,
        max_wait=settings.max_total_wait,
    )
    client = ApiClient(
        base_url=settings.api_url,
        token=token,
        timeout=settings.timeout,
        max_attempts=settings.max_attempts,
        max_retry_wait=settings.max_retry_wait,
        max_total_wait=settings.max_total_wait,
        max_response_bytes=settings.max_response_bytes,
        gate=coordinator,
        sleep=sleep,
    )
    return coordinator, client
