"""A one-line progress display over images and pages, shown only on a terminal."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from etl.sync.results import ImageResult


def format_eta(seconds: float) -> str:
    """Return a duration as 45s, 3m05s or 2h07m."""
    whole = max(round(seconds), 0)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


class Progress:
    """Redraw one status line on ``stream``; silent unless it is a terminal (cron sees nothing)."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        enabled: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # sys.stderr as it is now, not as it was when this module was imported (the CLI
        # imports it only for a sync, after a test or a caller may have swapped the stream).
        stream = sys.stderr if stream is None else stream
        self.stream = stream
        self.enabled = stream.isatty() if enabled is None else enabled
        self.images_done = 0
        self.images_total: int | None = None
        self._clock = clock
        self._started = clock()
        self._width = 0

    def plan(self, images: int) -> None:
        """Learn how many images the run will sync; the ETA counts from here."""
        self.images_total = images
        self._started = self._clock()

    def page(self, image: ImageResult) -> None:
        """Show images done of the total, an ETA, the image under way and its pages so far."""
        counts = image.counts
        self._draw(
            f"{self._images()} | image {image.image_id}: page {image.pages}"
            f"{f' of meta.total {image.total}' if image.total is not None else ''}, "
            f"{counts.inserted} new, {counts.updated} changed"
        )

    def image(self, _image: ImageResult) -> None:
        """Count a finished image."""
        self.images_done += 1

    def close(self) -> None:
        """Clear the line."""
        self._draw("")

    def _images(self) -> str:
        """Return "images done 2 of 5, ETA 1m30s": the ETA once one image has finished.

        Workers run images side by side, so the rate is images done per second of the run's
        own time so far, not the last image's duration.
        """
        done, total = self.images_done, self.images_total
        if total is None:
            return f"images done {done}"
        text = f"images done {done} of {total}"
        if 0 < done < total:
            elapsed = self._clock() - self._started
            text += f", ETA {format_eta(elapsed / done * (total - done))}"
        return text

    def _draw(self, text: str) -> None:
        if not self.enabled:
            return
        self.stream.write("\r" + text.ljust(self._width) + ("\r" if not text else ""))
        self.stream.flush()
        self._width = len(text)
