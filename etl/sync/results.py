"""What a run did, image by image, and the totals every report of it shares.

Output modules (summary, metrics, progress) import these types, not the machinery
that produces them.
"""

from __future__ import annotations

import signal
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

from etl.errors import SyncOutcomeError
from etl.store.load import UpsertCounts

OUTCOMES = ("succeeded", "partial", "failed", "deferred", "locked_out", "interrupted")
# The exit code of each outcome: the CLI exits with it, systemd's SuccessExitStatus= and
# orchestrators read it. An interrupted run exits 128 + its signal (130, 143), as shells do.
EXIT_CODES = {"succeeded": 0, "failed": 1, "partial": 3, "locked_out": 4, "deferred": 5}
# Outcomes that need nobody's attention: a deferred or locked-out run did nothing wrong, and
# the next scheduled run carries on (``status --max-age`` alerts when that goes on too long).
OK_OUTCOMES = frozenset({"succeeded", "deferred", "locked_out"})


@dataclass
class ImageResult:
    """What one image's sync did."""

    image_id: int
    pages: int = 0
    requests: int = 0
    counts: UpsertCounts = field(default_factory=UpsertCounts)
    rejected: int = 0
    total: int | None = None
    received: int = 0
    refreshed: int = 0
    unknown_statuses: int = 0  # actions whose status the API does not document
    missing: int = 0  # stored actions a complete --full scan no longer found listed
    seconds: float = 0.0
    complete: bool = True
    stopped_early: bool = False
    ordered: bool = True  # every page read listed newest first
    finished: bool = True  # False: the run ended while this image was under way
    scanned: bool = True  # False: only its unfinished actions were refreshed
    audit: bool = False  # checked though the feed did not touch it
    feed_miss: bool = False  # the audit found actions the feed did not show
    touched: bool = False  # the account feed showed it new actions
    unlisted: int = 0  # of those, actions its listing did not show and nothing stores
    gone: bool = False
    error: str | None = None
    first_page_digest: str | None = None  # of the last scan's first page
    page_digests: str | None = None  # the prints of its pages to keep (see etl.sync.prints)
    printed: int = 0  # pages taken by their print: counted unchanged, not compared

    @property
    def ok(self) -> bool:
        """Return whether the image synced fully and without error."""
        return self.error is None and self.complete and self.finished

    @property
    def clean(self) -> bool:
        """Return whether the stored actions are now the image's whole listing."""
        return self.ok and not self.rejected


def rescanned(
    first: UpsertCounts, second: UpsertCounts, *, whole: bool, wrote: bool
) -> UpsertCounts:
    """Return an image's counts when a second scan in the run read its listing again.

    Each action counts once. ``whole``: the second scan read to the last page, finding
    what the first inserted or updated unchanged, and what the first found unchanged
    again. Else the first's unchanged stand, less what the second then updated.
    ``wrote``: the first scan's writes were stored; in a dry run the second counts the
    same actions the same way over again.
    """
    if not wrote:
        return second if whole else first
    inserted, updated = first.inserted + second.inserted, first.updated + second.updated
    if not whole:
        unchanged = max(first.unchanged - second.updated, 0)
        return UpsertCounts(inserted, updated, unchanged, max(first.elsewhere, second.elsewhere))
    unchanged = max(second.unchanged - first.inserted - first.updated, 0)
    return UpsertCounts(inserted, updated, unchanged, second.elsewhere)


@dataclass
class RunResult:
    """What a whole sync run did, image by image."""

    mode: str = "incremental"
    dry_run: bool = False
    images: list[ImageResult] = field(default_factory=list)
    run_id: int | None = None
    ending: str | None = None  # the outcome of a run that ended early (see OUTCOMES)
    signal: int | None = None  # the signal that interrupted the run
    error: str | None = None
    seconds: float = 0.0
    requests: int = 0
    retries: int = 0
    rate_limit_wait: float = 0.0
    last_success: datetime | None = None
    strategy: str = "per-image"  # or "feed": how the run found what changed
    by_kind: dict[str, int] = field(default_factory=dict)  # requests by what they were for
    unscanned: int = 0  # images a feed run left alone: the feed showed them nothing new

    def end(self, outcome: str, error: str) -> None:
        """Record that the run ended early, and why; the first ending is kept."""
        if self.ending is None:
            self.ending, self.error = outcome, error

    @property
    def outcome(self) -> str:
        """Return succeeded, partial, failed, deferred, locked_out or interrupted.

        Partial: some images failed or stayed incomplete, or some actions were rejected.
        """
        if self.ending is not None:
            return self.ending
        if all(image.ok for image in self.images) and not self.rejected:
            return "succeeded"
        if self.unscanned or any(image.ok for image in self.images):
            return "partial"  # images left alone are as good as the last run made them
        return "failed"

    @property
    def exit_code(self) -> int:
        """Return the exit code the command line gives this run (see EXIT_CODES)."""
        if self.outcome == "interrupted":
            return 128 + (self.signal or signal.SIGINT)
        return EXIT_CODES[self.outcome]

    def raise_for_outcome(self, ok: Collection[str] = OK_OUTCOMES) -> RunResult:
        """Return this result if its outcome is in ``ok``, else raise.

        By default partial, failed and interrupted runs raise; succeeded, deferred and
        locked_out ones return. Pages committed before the failure stay in the database.

        Raises:
            SyncOutcomeError: the outcome is not in ``ok``; it carries outcome and exit_code.
        """
        if self.outcome in ok:
            return self
        raise SyncOutcomeError(
            f"sync {self.outcome}: {self.reason()}", outcome=self.outcome, exit_code=self.exit_code
        )

    def reason(self) -> str:
        """Return one sentence on what went wrong: the run's error, or its images' errors."""
        if self.error:
            return self.error
        failed = [image for image in self.images if not image.ok]
        reasons = [
            image.error or f"image {image.image_id} stayed incomplete" for image in failed[:3]
        ]
        if self.rejected:
            reasons.append(f"{self.rejected} actions were rejected (see rejected_actions)")
        more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
        return f"{len(failed)} of {len(self.images)} images failed: " + "; ".join(reasons) + more

    @property
    def counts(self) -> UpsertCounts:
        """Return the inserted/updated/unchanged tally over all images."""
        total = UpsertCounts()
        for image in self.images:
            total += image.counts
        return total

    @property
    def rejected(self) -> int:
        """Return how many actions were rejected over all images."""
        return sum(image.rejected for image in self.images)

    @property
    def failed_images(self) -> int:
        """Return how many images did not sync fully."""
        return sum(1 for image in self.images if not image.ok)

    def counters(self) -> dict[str, float]:
        """Return the run's tallies, as the ledger, --json and metrics show them."""
        counts = self.counts
        return {
            "images_synced": len(self.images) - self.failed_images,
            "images_failed": self.failed_images,
            "pages": sum(image.pages for image in self.images),
            "requests": self.requests,
            "retries": self.retries,
            "rate_limit_wait_seconds": round(self.rate_limit_wait, 3),
            "rows_inserted": counts.inserted,
            "rows_updated": counts.updated,
            "rows_unchanged": counts.unchanged,
            "rows_rejected": self.rejected,
            "meta_total_sum": sum(image.total or 0 for image in self.images),
            "unknown_statuses": sum(image.unknown_statuses for image in self.images),
            "rows_missing": sum(image.missing for image in self.images),
            "rows_listed_elsewhere": counts.elsewhere,
            **self.requests_by_kind(),
        }

    def requests_by_kind(self) -> dict[str, int]:
        """Return the run's requests by what they were for; audits apart from image pages."""
        audits = [image for image in self.images if image.audit]
        audit_requests = sum(image.requests for image in audits)
        return {
            "feed_pages": self.by_kind.get("feed_pages", 0),
            "image_pages": max(self.by_kind.get("image_pages", 0) - audit_requests, 0),
            "single_actions": self.by_kind.get("single_actions", 0),
            "image_list_pages": self.by_kind.get("image_list_pages", 0),
            "audit_requests": audit_requests,
            "images_audited": len(audits),
            "feed_misses": sum(1 for image in self.images if image.feed_miss),
        }
