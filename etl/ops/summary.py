"""Format a run's results: the lines a person reads, or one JSON object for machines."""

from __future__ import annotations

import json
import logging
from typing import Any

from etl.sync.results import ImageResult, RunResult

logger = logging.getLogger("etl")  # the command line's own logger, as it names its lines


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _counts(image_or_run: ImageResult | RunResult, dry_run: bool) -> str:
    counts = image_or_run.counts
    would = "would be " if dry_run else ""
    text = (
        f"{counts.inserted} {would}inserted, {counts.updated} {would}updated, "
        f"{counts.unchanged} unchanged"
    )
    if image_or_run.rejected:
        text += f", {image_or_run.rejected} rejected"
    return text


def format_image(image: ImageResult, *, dry_run: bool = False) -> str:
    """Return one summary line for an image."""
    pages = _plural(image.pages, "page") + (" (stopped early)" if image.stopped_early else "")
    refreshed = f", {image.refreshed} unfinished refreshed" if image.refreshed else ""
    if image.unknown_statuses:
        refreshed += f", {image.unknown_statuses} with undocumented status"
    if image.missing:
        refreshed += f", {image.missing} no longer listed (marked missing)"
    line = (
        f"image {image.image_id}: {pages}, {_plural(image.requests, 'request')}, "
        f"{_counts(image, dry_run)}{refreshed}, {image.seconds:.2f} s"
    )
    if image.error is not None:
        return f"{line}; FAILED: {image.error}"
    if not image.complete:
        return (
            f"{line}; INCOMPLETE: received {image.received} distinct actions, "
            f"meta.total says {image.total}"
        )
    return line


def log_error(run: RunResult) -> None:
    """Log why a run did not succeed: a warning for a deferred run, else an error."""
    fields = {"run_id": run.run_id, "requests": run.requests}
    if run.error and run.outcome == "deferred":
        logger.warning("%s", run.error, extra=fields)
    elif run.error:
        logger.error("%s", run.error, extra=fields)


def format_run(run: RunResult) -> str:
    """Return the closing total line of a run."""
    failed = sum(1 for image in run.images if image.error is not None)
    incomplete = sum(1 for image in run.images if image.error is None and not image.complete)
    pages = sum(image.pages for image in run.images)
    mode = f"{run.mode}{', dry run' if run.dry_run else ''}"
    line = (
        f"total {run.outcome} ({mode}): {_plural(len(run.images), 'image')} ({failed} failed, "
        f"{incomplete} incomplete), {_plural(pages, 'page')}, "
        f"{_plural(run.requests, 'request')} ({run.retries} retried), "
        f"{_counts(run, run.dry_run)}, {run.seconds:.2f} s"
    )
    kinds = run.requests_by_kind()
    if run.strategy == "feed" or kinds["feed_pages"]:
        line += (
            f"; strategy {run.strategy}: {_plural(kinds['feed_pages'], 'feed page')}, "
            f"{kinds['image_pages']} image pages, {kinds['single_actions']} single actions, "
            f"{kinds['images_audited']} audited ({kinds['audit_requests']} requests), "
            f"{kinds['feed_misses']} feed miss{'' if kinds['feed_misses'] == 1 else 'es'}"
        )
    return line


def run_to_dict(run: RunResult) -> dict[str, Any]:
    """Return the run as plain data for --json."""
    counts = run.counts
    counters = run.counters()
    return {
        "run_id": run.run_id,
        "outcome": run.outcome,
        "mode": run.mode,
        "dry_run": run.dry_run,
        "error": run.error,
        "seconds": round(run.seconds, 3),
        "requests": run.requests,
        "retries": run.retries,
        "rate_limit_wait_seconds": round(run.rate_limit_wait, 3),
        "inserted": counts.inserted,
        "updated": counts.updated,
        "unchanged": counts.unchanged,
        "rejected": run.rejected,
        "unknown_statuses": counters["unknown_statuses"],
        "missing": counters["rows_missing"],
        "listed_elsewhere": counters["rows_listed_elsewhere"],
        # New actions the feed showed that their images' listings did not: the watermark held.
        "unlisted": sum(image.unlisted for image in run.images),
        # Pages a --full run took by their print: counted unchanged without a compare.
        "pages_by_print": sum(image.printed for image in run.images),
        "signal": run.signal,
        "strategy": run.strategy,
        "requests_by_kind": run.requests_by_kind(),
        "images": [
            {
                "image_id": image.image_id,
                "ok": image.ok,
                "pages": image.pages,
                "pages_by_print": image.printed,
                "requests": image.requests,
                "inserted": image.counts.inserted,
                "updated": image.counts.updated,
                "unchanged": image.counts.unchanged,
                "rejected": image.rejected,
                "refreshed": image.refreshed,
                "unknown_statuses": image.unknown_statuses,
                "missing": image.missing,
                "unlisted": image.unlisted,
                "meta_total": image.total,
                "received": image.received,
                "stopped_early": image.stopped_early,
                "complete": image.complete,
                "gone": image.gone,
                "error": image.error,
                "seconds": round(image.seconds, 3),
            }
            for image in run.images
        ],
    }


def format_json(run: RunResult) -> str:
    """Return the run as one JSON line."""
    return json.dumps(run_to_dict(run))
