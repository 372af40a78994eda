"""What every image scan of a run needs, built once per run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine

from etl.source.client import ApiClient
from etl.sync.coordinator import Coordinator
from etl.sync.results import ImageResult


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
    # Actions this run saw listed under another image than the one that owns them: a
    # --full scan of the owner does not mark them missing.
    listed_elsewhere: set[int] = field(default_factory=set)
