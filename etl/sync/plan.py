"""Plan a run: which images to scan, and how, given the strategy and the account feed."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from etl.config import Settings
from etl.store.ledger import unfinished_by_image
from etl.store.watermark import Watermark, last_checked, load_watermark
from etl.sync.context import RunContext, ScanOrder
from etl.sync.feed import read_feed

logger = logging.getLogger(__name__)

RUNS_PER_DAY = 288  # a run every 5 minutes: the default audit checks every image daily


@dataclass
class Plan:
    """The run's orders, the strategy behind them, and the watermark it may store."""

    strategy: str
    orders: list[ScanOrder] = field(default_factory=list)
    candidate: Watermark | None = None  # stored only when the run succeeds
    unscanned: int = 0  # images left alone: the feed showed them nothing new


def audit_slice(settings: Settings, images: int) -> int:
    """Return how many untouched images a feed run audits."""
    if settings.audit_images_per_run is not None:
        return settings.audit_images_per_run
    return max(-(-images // RUNS_PER_DAY), 1)


def make_plan(ctx: RunContext, settings: Settings, images: list[int]) -> Plan:
    """Return the run's plan: every image scanned, or the feed's news plus an audit slice.

    ``per-image`` scans every image, as always. ``feed`` and ``auto`` read the feed's page 1
    (the candidate watermark); with a stored watermark and no ``--full``, they read on down
    to it and scan only the images it touched, new and gone images, images whose last scan
    did not complete, and an audit slice, and refresh the unfinished actions of the rest.
    Any doubt about the feed (and for ``auto``, a feed that would cost more than scanning
    the images) means every image is scanned.
    """
    everything = [ScanOrder(image_id) for image_id in images]
    if settings.strategy == "per-image":
        return Plan("per-image", everything)
    with ctx.engine.connect().execution_options(read_only=True) as conn:
        watermark = load_watermark(conn)
        checked = last_checked(conn, images)
        unfinished = unfinished_by_image(conn)
    use_feed = watermark is not None and not ctx.full
    wanted = set(images)
    read = read_feed(
        ctx.client,
        per_page=settings.per_page,
        watermark=watermark if use_feed else None,
        wanted=wanted.__contains__,
        budget=len(images) if settings.strategy == "auto" else None,
    )
    if not use_feed:
        why = "a --full run" if ctx.full else "no feed watermark yet"
        logger.debug("strategy %s: %s, so every image is scanned", settings.strategy, why)
        return Plan("per-image", everything, read.newest)
    if read.doubt is not None:
        log = logger.info if read.costly else logger.warning
        log("strategy %s: %s; every image is scanned this run", settings.strategy, read.doubt)
        return Plan("per-image", everything, read.newest)
    new = [image_id for image_id in images if image_id not in checked]
    # An image the API said is gone is asked again every run, as per image: it stays failed.
    gone = [i for i in images if i in checked and checked[i].gone]
    there = [i for i in images if i in checked and not checked[i].gone]
    # So is one whose last scan did not complete (it failed part way, rejected actions, or
    # never matched meta.total): what is stored may lack actions below the watermark.
    unsettled = [i for i in there if not checked[i].complete]
    settled = [i for i in there if checked[i].complete]
    touched = [i for i in settled if i in read.touched]
    untouched = sorted(
        (i for i in settled if i not in read.touched), key=lambda image_id: checked[image_id].at
    )
    scanned = [*touched, *new, *gone, *unsettled]
    audits = untouched[: audit_slice(settings, len(images))]
    rest = untouched[len(audits) :]
    refreshes = [image_id for image_id in rest if unfinished.get(image_id)]
    orders = [
        # Whatever the feed showed of an image, its listing must show too (see _check_shown).
        *(ScanOrder(i, shown=frozenset(read.touched.get(i, ()))) for i in scanned),
        *(ScanOrder(i, audit=True) for i in audits),
        *(ScanOrder(i, refresh_only=True) for i in refreshes),
    ]
    logger.info(
        "strategy %s: the feed (%d pages down to the watermark, about %d estimated) touched "
        "%d of %d images; scanning them, %d new, %d whose last scan did not complete and %d "
        "audited, instead of all %d",
        settings.strategy,
        read.pages,
        read.estimate or 0,
        len(touched),
        len(images),
        len(new),
        len(unsettled),
        len(audits),
        len(images),
    )
    return Plan("feed", orders, read.newest, unscanned=len(rest) - len(refreshes))
