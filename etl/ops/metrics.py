"""Write a run's metrics in Prometheus text format for node_exporter's textfile collector."""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path

from etl.errors import EtlError
from etl.sync.results import OUTCOMES, RunResult

PREFIX = "do_image_actions"


def render_metrics(run: RunResult, *, finished_at: datetime, last_success: datetime | None) -> str:
    """Return the metrics of a finished run as Prometheus text exposition format."""
    counts = run.counts
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {PREFIX}_{name} {help_text}")
        lines.append(f"# TYPE {PREFIX}_{name} {kind}")
        # repr() round-trips a float exactly; :g would cut timestamps to 6 digits.
        lines.extend(f"{PREFIX}_{name}{labels} {float(value)!r}" for labels, value in samples)

    metric(
        "last_run_timestamp_seconds",
        "gauge",
        "When the last run finished.",
        [("", finished_at.timestamp())],
    )
    if last_success is not None:
        metric(
            "last_success_timestamp_seconds",
            "gauge",
            "When the last succeeded run finished.",
            [("", last_success.timestamp())],
        )
    metric(
        "last_run_outcome",
        "gauge",
        "1 for the last run's outcome, 0 for the others.",
        [(f'{{outcome="{name}"}}', float(run.outcome == name)) for name in OUTCOMES],
    )
    metric("last_run_duration_seconds", "gauge", "Wall time of the last run.", [("", run.seconds)])
    metric(
        "last_run_rows",
        "gauge",
        "Rows of the last run by what happened to them.",
        [
            ('{outcome="inserted"}', counts.inserted),
            ('{outcome="updated"}', counts.updated),
            ('{outcome="unchanged"}', counts.unchanged),
            ('{outcome="rejected"}', run.rejected),
        ],
    )
    metric(
        "last_run_images",
        "gauge",
        "Images of the last run by result.",
        [
            ('{result="synced"}', sum(1 for image in run.images if image.ok)),
            ('{result="failed"}', sum(1 for image in run.images if not image.ok)),
        ],
    )
    metric(
        "last_run_requests", "gauge", "HTTP requests made by the last run.", [("", run.requests)]
    )
    metric("last_run_retries", "gauge", "Requests retried by the last run.", [("", run.retries)])
    kinds = run.requests_by_kind()
    metric(
        "last_run_requests_by_kind",
        "gauge",
        "Requests of the last run by what they were for.",
        [
            (f'{{kind="{kind}"}}', kinds[kind])
            for kind in (
                "feed_pages",
                "image_pages",
                "single_actions",
                "audit_requests",
                "image_list_pages",
            )
        ],
    )
    metric(
        "last_run_feed_misses",
        "gauge",
        "Images whose audit found actions the account feed did not show.",
        [("", kinds["feed_misses"])],
    )
    metric(
        "last_run_rate_limit_wait_seconds",
        "gauge",
        "Seconds the last run waited on rate limits.",
        [("", run.rate_limit_wait)],
    )
    return "\n".join(lines) + "\n"


def write_metrics(path: str, text: str) -> None:
    """Replace the file at ``path`` atomically, so a collector never reads half a file.

    Raises:
        EtlError: the file's folder does not exist or cannot be written (the run is over by
            then, so this is no ConfigError: callers warn and keep the run's exit code).
    """
    target = Path(path)
    try:
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except OSError as exc:
        raise EtlError(
            f"metrics_file {path} cannot be written ({exc.strerror}); check that its folder "
            "exists and is writable"
        ) from exc
