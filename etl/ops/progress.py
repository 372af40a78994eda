"""A one-line progress display over images and pages, shown only on a terminal."""

from __future__ import annotations

import sys
from typing import TextIO

from etl.sync.results import ImageResult


class Progress:
    """Redraw one status line on ``stream``; silent unless it is a terminal (cron sees nothing)."""

    def __init__(self, stream: TextIO = sys.stderr, *, enabled: bool | None = None) -> None:
        self.stream = stream
        self.enabled = stream.isatty() if enabled is None else enabled
        self.images_done = 0
        self._width = 0

    def page(self, image: ImageResult) -> None:
        """Show the image under way and its pages so far."""
        counts = image.counts
        self._draw(
            f"images done {self.images_done} | image {image.image_id}: page {image.pages}"
            f"{f' of meta.total {image.total}' if image.total is not None else ''}, "
            f"{counts.inserted} new, {counts.updated} changed"
        )

    def image(self, _image: ImageResult) -> None:
        """Count a finished image."""
        self.images_done += 1

    def close(self) -> None:
        """Clear the line."""
        self._draw("")

    def _draw(self, text: str) -> None:
        if not self.enabled:
            return
        self.stream.write("\r" + text.ljust(self._width) + ("\r" if not text else ""))
        self.stream.flush()
        self._width = len(text)
