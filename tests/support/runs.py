"""Settings for a run against the fake API, and run_sync with a sleep that never sleeps."""

from __future__ import annotations

from typing import Any

from etl.config import Settings
from etl.fake import FakeApi
from etl.sync.results import RunResult
from etl.sync.run import run_sync
from tests.support.doubles import TOKEN, RecordingSleep


def settings_for(api: FakeApi, database_url: str, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "api_url": api.url,
        "images": tuple(api.world.actions),
        "per_page": 20,
        "token": TOKEN,
        # The per-image listing is what most tests count requests of; the feed tests ask
        # for strategy "auto" or "feed" themselves.
        "strategy": "per-image",
        # The fake does not limit unless told to: let tests go at full speed.
        "rate_limit_per_minute": 10**6,
        "rate_limit_per_hour": 10**7,
        **changes,
    }
    return Settings(**values)


def sync(
    api: FakeApi, database_url: str, *, full: bool = False, dry_run: bool = False, **changes: Any
) -> RunResult:
    settings = settings_for(api, database_url, **changes)
    return run_sync(settings, full=full, dry_run=dry_run, sleep=RecordingSleep())
