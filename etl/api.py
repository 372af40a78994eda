"""The Python API for orchestrators: load settings, run one sync, judge its outcome.

Airflow, Dagster or Prefect call this instead of a shell::

    from etl import load_settings, sync_images

    result = sync_images(load_settings("/etc/do-image-actions.toml"))
    result.raise_for_outcome()  # partial, failed, interrupted raise SyncOutcomeError

Logs go to the ``etl`` logger (and ``sqlalchemy``, ``urllib3``); no handler is added.
"""

from __future__ import annotations

from etl.config import Settings, load_settings
from etl.errors import ConfigError, EtlError, SyncOutcomeError
from etl.sync.results import EXIT_CODES, OK_OUTCOMES, OUTCOMES, ImageResult, RunResult
from etl.sync.run import run_sync

__all__ = [
    "EXIT_CODES",
    "OK_OUTCOMES",
    "OUTCOMES",
    "ConfigError",
    "EtlError",
    "ImageResult",
    "RunResult",
    "Settings",
    "SyncOutcomeError",
    "load_settings",
    "sync_images",
]


def sync_images(settings: Settings, *, full: bool = False, dry_run: bool = False) -> RunResult:
    """Sync the configured images into the configured database, once, and say how it went.

    Failures of the run itself come back, not as exceptions: a refused token, an API or
    database that fails, a schema that is not ours, images that are missing, another sync
    holding the lock, a spent rate-limit budget. ``result.outcome`` is one of ``OUTCOMES``
    (succeeded, partial, failed, deferred, locked_out, interrupted), ``result.error`` the
    one-sentence reason, ``result.exit_code`` the command line's exit code, and
    ``result.raise_for_outcome()`` raises SyncOutcomeError for partial, failed and
    interrupted runs. Pages already committed stay committed whatever the outcome.

    ``full`` scans every page of every image (the default is incremental); ``dry_run``
    fetches and compares but writes nothing, not even the run ledger.

    Called in the main thread, SIGTERM and SIGINT end the run within two seconds as
    "interrupted" (``result.signal`` says which) and reach no other handler meanwhile; in
    any other thread signals are left alone. Runs are not reentrant per database: a
    concurrent one ends as "locked_out".

    Raises:
        ConfigError: no token, no images, or the database URL's driver is not installed:
            nothing was requested and nothing written.
        Exception: a bug (anything that is no EtlError) is re-raised as is, after the
            run's ledger row is finished as "failed" and the lock is released.
    """
    return run_sync(settings, full=full, dry_run=dry_run)
