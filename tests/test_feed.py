"""The account feed: an idle run costs one feed request and an audit slice; trust is verified."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, update

from etl.fake import World
from etl.ops.summary import run_to_dict
from etl.store.schema import feed_state, image_sync_state, rejected_actions, sync_runs
from etl.sync.results import RunResult
from tests.support.databases import DECISION_DIALECT_PARAMS
from tests.support.doubles import TOKEN
from tests.support.faults import Fault, FaultPlan
from tests.support.oracle import expected_table
from tests.support.rows import read_rows, without_bookkeeping
from tests.support.runs import sync as sync_with
from tests.support.scripted import ScriptedApi

IMAGES = 60


@pytest.fixture
def feed_api() -> Iterator[ScriptedApi]:
    world = World.generate(images=IMAGES, actions_per_image=5, seed=11, others_per_action=2)
    world.finish_all()  # idle: nothing left in progress
    with ScriptedApi(world, token=TOKEN) as fake:
        yield fake


def sync(api: ScriptedApi, database_url: str, **changes: Any) -> RunResult:
    return sync_with(api, database_url, **{"strategy": "auto", **changes})


def kinds(run: RunResult) -> dict[str, int]:
    return {name: count for name, count in run.requests_by_kind().items() if count}


@pytest.mark.slow
def test_a_first_run_reads_feed_page_1_then_every_image(
    feed_api: ScriptedApi, engine: Engine, database_url: str
) -> None:
    run = sync(feed_api, database_url)

    assert (run.outcome, run.strategy) == ("succeeded", "per-image")
    assert kinds(run) == {"feed_pages": 1, "image_pages": IMAGES}
    [mark] = read_rows(engine, feed_state)
    newest = feed_api.world.next_action_id - 1
    assert (mark["watermark_id"], mark["meta_total"]) == (newest, IMAGES * 5 * 3)


def test_an_idle_run_costs_one_feed_request_and_the_audit_slice(
    feed_api: ScriptedApi, engine: Engine, database_url: str
) -> None:
    sync(feed_api, database_url)

    idle = sync(feed_api, database_url)

    assert (idle.outcome, idle.strategy) == ("succeeded", "feed")
    assert idle.requests == 2
    assert kinds(idle) == {"feed_pages": 1, "audit_requests": 1, "images_audited": 1}
    [row] = [r for r in read_rows(engine, sync_runs) if r["id"] == idle.run_id]
    assert (row["strategy"], row["feed_pages"], row["audit_requests"]) == ("feed", 1, 1)
    assert without_bookkeeping(read_rows(engine)) == expected_table(feed_api.world)


@pytest.mark.slow
def test_a_change_costs_the_feed_the_touched_images_refreshes_and_audits(
    feed_api: ScriptedApi, engine: Engine, database_url: str
) -> None:
    world = feed_api.world
    images = list(world.actions)
    sync(feed_api, database_url)
    for image in images[:3]:  # 5% of the images gain actions, some still in progress
        world.add_actions(image, 4)

    changed = sync(feed_api, database_url)
    running = [a["id"] for i in images[:3] for a in world.actions[i] if a["status"] != "completed"]

    assert changed.strategy == "feed"
    # 36 new actions in the feed (12 of images): 2 pages of 20 reach the watermark.
    assert kinds(changed) == {
        "feed_pages": 2,
        "image_pages": 3,  # the touched images' page 1
        "audit_requests": 1,
        "images_audited": 1,
    }
    assert changed.requests == 2 + 3 + 1
    assert sum(image.touched for image in changed.images) == 3
    world.finish_all()
    finished = sync(feed_api, database_url)
    refreshed = sum(image.refreshed for image in finished.images)
    assert finished.requests == 1 + refreshed + 1 <= 1 + len(running) + 1
    full = sync(feed_api, database_url, full=True)
    assert (full.counts.inserted, full.counts.updated) == (0, 0)  # nothing was left to find


@pytest.mark.slow
@pytest.mark.parametrize("database_url", DECISION_DIALECT_PARAMS, indirect=True)
def test_every_image_is_audited_within_a_cycle(
    feed_api: ScriptedApi, engine: Engine, database_url: str
) -> None:
    sync(feed_api, database_url)

    audited: set[int] = set()
    for _ in range(IMAGES):  # ceil(60 / 288) = 1 audit a run
        run = sync(feed_api, database_url)
        audited.update(image.image_id for image in run.images if image.audit)

    assert audited == set(feed_api.world.actions)


@pytest.mark.slow
def test_an_action_the_feed_misses_is_found_by_the_audit_within_a_cycle(
    feed_api: ScriptedApi, engine: Engine, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    world = feed_api.world
    sync(feed_api, database_url)
    victim = list(world.actions)[7]
    feed_api.feed_hides.update(a["id"] for a in world.add_actions(victim, 2))

    misses = []
    for _ in range(IMAGES):
        run = sync(feed_api, database_url)
        misses += [image.image_id for image in run.images if image.feed_miss]
        if misses:
            break

    assert misses == [victim]
    assert run.requests_by_kind()["feed_misses"] == 1
    assert "a feed miss" in caplog.text
    assert without_bookkeeping(read_rows(engine)) == expected_table(world)


@pytest.mark.slow
def test_a_feed_that_shrank_is_not_trusted(
    feed_api: ScriptedApi, engine: Engine, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    sync(feed_api, database_url)
    with engine.begin() as conn:
        conn.execute(update(feed_state).values(meta_total=feed_state.c.meta_total + 1000))

    run = sync(feed_api, database_url)

    assert (run.outcome, run.strategy) == ("succeeded", "per-image")
    assert "meta.total shrank" in caplog.text


class OldestFirstFeed(ScriptedApi):
    """A feed whose pages list oldest first: its order is undocumented, so it is checked."""

    def _feed(self, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        status, body = super()._feed(query)
        body["actions"].reverse()
        return status, body


def test_a_feed_out_of_order_is_not_trusted(
    feed_api: ScriptedApi, engine: Engine, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    sync(feed_api, database_url)
    [before] = read_rows(engine, feed_state)
    image = next(iter(feed_api.world.actions))
    feed_api.world.add_actions(image, 3)

    with OldestFirstFeed(feed_api.world, token=TOKEN) as reversed_api:
        run = sync(reversed_api, database_url)

    assert (run.outcome, run.strategy) == ("succeeded", "per-image")
    assert "is not listed newest first" in caplog.text
    assert without_bookkeeping(read_rows(engine)) == expected_table(feed_api.world)
    [after] = read_rows(engine, feed_state)
    assert after["watermark_id"] == feed_api.world.next_action_id - 1 > before["watermark_id"]


@pytest.mark.slow
def test_auto_scans_the_images_when_the_feed_would_cost_more(
    feed_api: ScriptedApi, engine: Engine, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="etl")
    sync(feed_api, database_url)
    feed_api.world.others_per_action = 200  # days of other resources' actions...
    feed_api.world.add_actions(next(iter(feed_api.world.actions)), 60)

    auto = sync(feed_api, database_url, per_page=200)
    assert auto.strategy == "per-image"
    assert "more than the 60 of scanning the images" in caplog.text


@pytest.mark.slow
def test_the_watermark_moves_only_when_a_run_succeeds(
    feed_api: ScriptedApi, engine: Engine, database_url: str
) -> None:
    sync(feed_api, database_url)
    [before] = read_rows(engine, feed_state)
    image = next(iter(feed_api.world.actions))
    feed_api.world.add_actions(image, 3)
    feed_api.total_override[image] = 1  # that image cannot be verified: the run is partial

    partial = sync(feed_api, database_url)

    assert partial.outcome == "partial"
    assert read_rows(engine, feed_state) == [before]
    del feed_api.total_override[image]
    assert sync(feed_api, database_url).outcome == "succeeded"
    assert read_rows(engine, feed_state)[0]["watermark_id"] > before["watermark_id"]


@pytest.mark.slow
@pytest.mark.parametrize("database_url", DECISION_DIALECT_PARAMS, indirect=True)
def test_twenty_cycles_with_faults_on_every_route_never_report_a_wrong_success(
    feed_api: ScriptedApi, engine: Engine, database_url: str
) -> None:
    world = feed_api.world
    feed_api.plan = FaultPlan(rate=0.2, seed=3, stall_seconds=0.2)
    images = list(world.actions)
    outcomes = []
    for cycle in range(20):
        for image in images[cycle % 7 :: 11]:
            world.add_actions(image, 2)
        if cycle % 4 == 3:
            world.finish_all()
        run = sync(feed_api, database_url, timeout=0.1, max_attempts=10)
        feed_api.plan.rate = 0.0
        truth = expected_table(world)
        table = without_bookkeeping(read_rows(engine))
        feed_api.plan.rate = 0.2
        assert run.outcome != "succeeded" or table == truth, cycle
        outcomes.append((run.outcome, run.strategy))

    faulted = [entry for entry in feed_api.served if entry.status != 200]
    assert len({entry.path for entry in faulted if entry.path == "/v2/actions"}) == 1
    assert len(faulted) > 50
    assert ("succeeded", "feed") in outcomes  # the feed was used, and trusted, under faults


@pytest.mark.slow
@pytest.mark.parametrize("database_url", DECISION_DIALECT_PARAMS, indirect=True)
def test_a_thousand_idle_images_cost_the_feed_and_the_audit_slice_only(
    engine: Engine, database_url: str
) -> None:
    world = World.generate(images=1000, actions_per_image=3, seed=5, others_per_action=2)
    world.finish_all()
    with ScriptedApi(world, token=TOKEN) as api:
        first = sync(api, database_url, per_page=200)
        idle = sync(api, database_url, per_page=200)
        listing = sync(api, database_url, per_page=200, images=(), all_images=True)
        hour = [sync(api, database_url, per_page=200) for _ in range(12)]

    assert (first.requests, first.strategy) == (1 + 1000, "per-image")
    assert (idle.requests, idle.strategy) == (1 + 4, "feed")
    assert listing.requests == 1 + 4 + 5  # and the five pages listing the account's images
    assert sum(run.requests for run in hour) == 12 * 5 < 200


@pytest.mark.slow
def test_a_watermark_above_every_new_action_is_noticed(
    feed_api: ScriptedApi, engine: Engine, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    sync(feed_api, database_url)
    with engine.begin() as conn:  # as if a lying feed had once shown a bogus newest id
        conn.execute(update(feed_state).values(watermark_id=feed_state.c.watermark_id + 10**6))
    feed_api.world.add_actions(next(iter(feed_api.world.actions)), 2)

    run = sync(feed_api, database_url)

    assert (run.outcome, run.strategy) == ("succeeded", "per-image")
    assert "showed 0 actions newer than the watermark, but its meta.total grew by 6" in caplog.text
    assert without_bookkeeping(read_rows(engine)) == expected_table(feed_api.world)


class LyingFeed(ScriptedApi):
    """A feed whose actions ``lie`` rewrites: the image listings stay the truth."""

    def __init__(self, world: World, lie: Any) -> None:
        super().__init__(world, token=TOKEN)
        self.lie = lie

    def _feed(self, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        status, body = super()._feed(query)
        body["actions"] = [self.lie(dict(action)) for action in body["actions"]]
        return status, body


@pytest.mark.parametrize("database_url", DECISION_DIALECT_PARAMS, indirect=True)
def test_what_the_feed_says_of_an_action_is_never_stored(
    feed_api: ScriptedApi, engine: Engine, database_url: str
) -> None:
    world = feed_api.world
    first, second = list(world.actions)[:2]
    sync(feed_api, database_url)
    [real] = world.add_actions(first, 1)
    phantom = max(other["id"] for other in world.others)  # a droplet action, in place

    def lie(action: dict[str, Any]) -> dict[str, Any]:
        if action["id"] == real["id"]:  # the wrong image, the wrong status
            return {**action, "resource_id": second, "status": "errored"}
        if action["id"] == phantom:  # an image action no listing has
            return {**action, "resource_type": "image", "resource_id": first}
        return action

    with LyingFeed(world, lie) as api:
        run = sync(api, database_url)

    assert run.outcome == "succeeded"
    stored = {row["id"]: row for row in read_rows(engine)}
    assert phantom not in stored
    assert real["id"] not in stored or (
        stored[real["id"]]["image_id"],
        stored[real["id"]]["status"],
    ) == (first, real["status"])
    with LyingFeed(world, lie) as api:  # the audit finds what the lie hid, in a cycle
        for _ in range(IMAGES):
            sync(api, database_url)
    assert without_bookkeeping(read_rows(engine)) == expected_table(world)


@pytest.mark.slow
def test_an_id_past_bigint_in_the_feed_is_a_doubt_not_a_crash(
    feed_api: ScriptedApi, engine: Engine, database_url: str
) -> None:
    world = feed_api.world
    sync(feed_api, database_url)
    world.add_actions(next(iter(world.actions)), 1)
    newest = max(other["id"] for other in world.others)

    with LyingFeed(world, lambda a: {**a, "id": 2**63} if a["id"] == newest else a) as api:
        run = sync(api, database_url)

    assert (run.outcome, run.strategy) == ("succeeded", "per-image")
    assert read_rows(engine, sync_runs)[-1]["outcome"] == "succeeded"
    assert read_rows(engine, feed_state)[0]["watermark_id"] < 2**63


@pytest.mark.slow
def test_a_failing_audit_makes_a_feed_run_partial_not_failed(
    feed_api: ScriptedApi, engine: Engine, database_url: str
) -> None:
    sync(feed_api, database_url)
    feed_api.faults.extend(Fault("status", 500, path="/v2/images/") for _ in range(8))

    run = sync(feed_api, database_url, max_attempts=2)

    assert (run.strategy, run.outcome, run.unscanned) == ("feed", "partial", IMAGES - 1)


@pytest.mark.slow
def test_an_image_that_vanished_is_failed_on_every_feed_run(
    feed_api: ScriptedApi, engine: Engine, database_url: str
) -> None:
    world = feed_api.world
    images = tuple(world.actions)
    image = images[5]
    world.actions[image][0]["status"] = "in-progress"  # so untouched runs refresh it
    sync(feed_api, database_url)
    # Deleted: every request for it answers the API's own 404; the feed keeps its history.
    world.others.extend(world.actions.pop(image))

    runs = [sync(feed_api, database_url, images=images) for _ in range(3)]

    assert [run.outcome for run in runs] == ["partial"] * 3
    assert [image in [i.image_id for i in run.images if i.gone] for run in runs] == [True] * 3


def test_an_image_whose_last_scan_failed_part_way_is_scanned_until_it_completes(
    engine: Engine, database_url: str
) -> None:
    """The image is new to the config, with a history below the watermark: its first scan
    stores page 1 and fails on page 2. The feed will never show it those older actions, so
    until a scan of it completes it is scanned like a new image, never left for an audit."""
    world = World.generate(images=4, actions_per_image=45, seed=7)
    world.finish_all()
    first, second, added, fourth = world.actions
    options = {"audit_images_per_run": 1, "workers": 2, "max_attempts": 1}
    with ScriptedApi(world, token=TOKEN) as api:
        sync(api, database_url, images=(first, second, fourth), **options)
        api.faults.append(Fault("status", 500, path=f"/v2/images/{added}/actions", skip=1))
        failed = sync(api, database_url, **options)
        runs = [sync(api, database_url, **options) for _ in range(2)]

    assert (failed.strategy, failed.outcome) == ("feed", "partial")
    assert [run.strategy for run in runs] == ["feed", "feed"]
    assert [run.outcome for run in runs] == ["succeeded", "succeeded"]
    scanned = [{image.image_id for image in run.images if image.scanned} for run in runs]
    assert added in scanned[0]
    assert added not in scanned[1]  # complete now: the feed and the audits take it over
    assert without_bookkeeping(read_rows(engine)) == expected_table(world)


class LaggingApi(ScriptedApi):
    """The API, whose image listings do not yet show the actions in ``lagging``."""

    lagging: frozenset[int] = frozenset()

    def _list_actions(self, image_id: int, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        listed = self.world.actions.get(image_id, [])
        if not self.lagging.intersection(action["id"] for action in listed):
            return super()._list_actions(image_id, query)
        # One image's pages are asked for one at a time; the feed was read before them.
        self.world.actions[image_id] = [a for a in listed if a["id"] not in self.lagging]
        try:
            return super()._list_actions(image_id, query)
        finally:
            self.world.actions[image_id] = listed


def test_an_action_the_feed_shows_before_its_images_listing_is_looked_for_again(
    engine: Engine, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The feed shows the image's new action, but the image's own listing (what is
    stored) does not yet: the run keeps the feed's watermark, so the next run reads the
    feed down to it again and stores the action once the listing shows it."""
    world = World.generate(images=4, actions_per_image=45, seed=7)
    world.finish_all()
    image = next(iter(world.actions))
    with LaggingApi(world, token=TOKEN) as api:
        sync(api, database_url, audit_images_per_run=1)
        before = read_rows(engine, feed_state)[0]["watermark_id"]
        (new,) = world.add_actions(image, 1)
        world.finish_all()
        api.lagging = frozenset({new["id"]})
        behind = sync(api, database_url, audit_images_per_run=1)
        held = read_rows(engine, feed_state)[0]["watermark_id"]
        api.lagging = frozenset()
        caught_up = sync(api, database_url, audit_images_per_run=1)

    assert (behind.strategy, behind.outcome) == ("feed", "succeeded")
    assert [i.unlisted for i in behind.images if i.image_id == image] == [1]
    summary = run_to_dict(behind)  # what --json prints
    assert summary["unlisted"] == 1
    assert [i["unlisted"] for i in summary["images"] if i["image_id"] == image] == [1]
    assert "its own listing does not" in caplog.text
    assert held == before  # the watermark stayed below the action
    assert caught_up.strategy == "feed"
    assert caught_up.counts.inserted == 1
    assert read_rows(engine, feed_state)[0]["watermark_id"] == new["id"]
    assert without_bookkeeping(read_rows(engine)) == expected_table(world)


def test_refreshing_an_images_unfinished_actions_keeps_its_last_scan_complete(
    engine: Engine, database_url: str
) -> None:
    """A refresh rewrites stored rows, never which rows are stored: the image's next scan
    (here its audit) may still stop after page 1."""
    world = World.generate(images=3, actions_per_image=45, seed=7)
    assert any(a["status"] == "in-progress" for a in world.actions[next(iter(world.actions))])
    with ScriptedApi(world, token=TOKEN) as api:
        sync(api, database_url, audit_images_per_run=1)
        world.finish_all()
        refreshing = sync(api, database_url, audit_images_per_run=1)
        audits = [sync(api, database_url, audit_images_per_run=1) for _ in range(2)]

    refreshed = {image.image_id for image in refreshing.images if image.refreshed}
    assert refreshed
    assert all(row["scan_complete"] for row in read_rows(engine, image_sync_state))
    audited = [image for run in audits for image in run.images if image.image_id in refreshed]
    assert audited
    assert all((image.audit, image.pages) == (True, 1) for image in audited)


def test_an_image_scanned_twice_in_a_run_counts_each_action_once(
    engine: Engine, database_url: str
) -> None:
    """An audit that finds a feed miss scans the image again, fully; a scan whose count
    disagrees with meta.total is repeated. Each action is still counted once: what the
    first scan wrote, the second finds unchanged."""
    world = World.generate(images=1, actions_per_image=45, seed=7)
    world.finish_all()
    (image,) = world.actions
    with ScriptedApi(world, token=TOKEN) as api:
        sync(api, database_url, audit_images_per_run=1)
        (missed,) = world.add_actions(image, 1)
        world.finish_all()
        api.feed_hides.add(missed["id"])
        dry = sync(api, database_url, audit_images_per_run=1, dry_run=True)
        audited = sync(api, database_url, audit_images_per_run=1)
        world.add_actions(image, 2)
        world.finish_all()
        world.actions[image][10]["started_at"] = 12  # rejected, by both scans
        api.total_override[image] = 99  # a lie that a second scan cannot reconcile either
        repeated = sync(api, database_url, strategy="per-image")

    assert [i.feed_miss for i in dry.images] == [True]
    assert (dry.counts.inserted, dry.counts.updated, dry.counts.unchanged) == (1, 0, 45)
    assert [i.feed_miss for i in audited.images] == [True]
    assert (audited.counts.inserted, audited.counts.updated, audited.counts.unchanged) == (
        1,
        0,
        45,
    )
    assert repeated.outcome == "failed"  # its one image is incomplete
    assert [i.pages for i in repeated.images] == [6]  # two scans of 3 pages
    assert (repeated.counts.inserted, repeated.counts.updated, repeated.counts.unchanged) == (
        2,
        0,
        45,
    )
    assert repeated.counters()["rows_rejected"] == 1
    dead = [row for row in read_rows(engine, rejected_actions) if row["run_id"] == repeated.run_id]
    assert len(dead) == 1  # one dead letter, though both scans rejected it


def test_an_audit_that_finds_a_feed_miss_saves_each_dead_letter_once(
    engine: Engine, database_url: str
) -> None:
    """The audit's scan and the full scan after it both reject the action: one dead letter."""
    world = World.generate(images=1, actions_per_image=45, seed=7)
    world.finish_all()
    (image,) = world.actions
    with ScriptedApi(world, token=TOKEN) as api:
        sync(api, database_url, audit_images_per_run=1)
        missed, bad = world.add_actions(image, 2)
        world.finish_all()
        api.feed_hides.update((missed["id"], bad["id"]))
        bad["started_at"] = 12
        run = sync(api, database_url, audit_images_per_run=1)

    assert ([i.feed_miss for i in run.images], run.rejected) == ([True], 1)
    dead = [row for row in read_rows(engine, rejected_actions) if row["run_id"] == run.run_id]
    assert [(row["action_id"], row["payload"]) for row in dead] == [(bad["id"], bad)]


def test_a_new_image_whose_listing_lags_behind_the_feed_holds_the_watermark_too(
    engine: Engine, database_url: str
) -> None:
    """The image is new to the config; the feed shows its newest action before its own
    listing does. Scanned as a new image, it is checked as a touched one is."""
    world = World.generate(images=3, actions_per_image=45, seed=7)
    world.finish_all()
    first, second, added = world.actions
    with LaggingApi(world, token=TOKEN) as api:
        sync(api, database_url, images=(first, second), audit_images_per_run=1)
        before = read_rows(engine, feed_state)[0]["watermark_id"]
        (new,) = world.add_actions(added, 1)
        world.finish_all()
        api.lagging = frozenset({new["id"]})
        behind = sync(api, database_url, audit_images_per_run=1)

    assert behind.strategy == "feed"
    assert [(i.touched, i.unlisted) for i in behind.images if i.image_id == added] == [(True, 1)]
    assert read_rows(engine, feed_state)[0]["watermark_id"] == before
