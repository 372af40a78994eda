"""Format a run's results as the lines a person reads at the end of a sync."""

from __future__ import annotations

from etl.pipeline import ImageResult, RunResult


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def format_image(image: ImageResult) -> str:
    """Return one summary line for an image."""
    counts = image.counts
    line = (
        f"image {image.image_id}: {_plural(image.pages, 'page')}, "
        f"{_plural(image.requests, 'request')}, {counts.inserted} inserted, "
        f"{counts.updated} updated, {counts.unchanged} unchanged, {image.seconds:.2f} s"
    )
    if image.error is not None:
        return f"{line}; FAILED: {image.error}"
    if not image.complete:
        return (
            f"{line}; INCOMPLETE: received {image.received} distinct actions, "
            f"meta.total says {image.total}"
        )
    return line


def format_run(run: RunResult) -> str:
    """Return the closing total line of a run."""
    failed = sum(1 for image in run.images if image.error is not None)
    incomplete = sum(1 for image in run.images if image.error is None and not image.complete)
    counts = run.counts
    pages = sum(image.pages for image in run.images)
    return (
        f"total {run.outcome}: {_plural(len(run.images), 'image')} ({failed} failed, "
        f"{incomplete} incomplete), {_plural(pages, 'page')}, "
        f"{_plural(run.requests, 'request')} ({run.retries} retried), {counts.inserted} inserted, "
        f"{counts.updated} updated, {counts.unchanged} unchanged, {run.seconds:.2f} s"
    )
