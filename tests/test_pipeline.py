"""run_sync end to end: loopback fake API in, real databases out."""

from __future__ import annotations

from sqlalchemy import Engine

from etl.fake import FakeApi, World
from etl.store.load import UpsertCounts
from etl.store.schema import rejected_actions
from tests.support.doubles import TOKEN
from tests.support.faults import Fault
from tests.support.oracle import expected_table
from tests.support.rows import read_rows, without_bookkeeping
from tests.support.runs import sync
from tests.support.scripted import ACTIONS_PATH, ScriptedApi

# tests/test_concurrency.py, which its owner is rewriting, still imports these two from here.


def test_run_sync_loads_the_whole_world(api: FakeApi, engine: Engine, database_url: str) -> None:
    run = sync(api, database_url)

    assert run.outcome == "succeeded"
    assert run.counts == UpsertCounts(inserted=135, updated=0, unchanged=0)
    assert [(i.pages, i.requests, i.received, i.total) for i in run.images] == [(3, 3, 45, 45)] * 3
    assert without_bookkeeping(read_rows(engine)) == expected_table(api.world)


def test_run_sync_full_twice_gives_the_same_table_and_inserts_nothing(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    sync(api, database_url)
    first = read_rows(engine)

    second = sync(api, database_url, full=True)

    assert second.counts == UpsertCounts(inserted=0, updated=0, unchanged=135)
    assert second.requests == 9
    assert read_rows(engine) == first


def test_run_sync_full_picks_up_a_world_change(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    sync(api, database_url)
    image_id = next(iter(api.world.actions))
    running = next(a for _, a in api.world.all_actions() if a["status"] == "in-progress")
    api.world.complete(running["id"])
    api.world.add_actions(image_id, 3)

    run = sync(api, database_url, full=True)

    assert run.counts == UpsertCounts(inserted=3, updated=1, unchanged=134)
    rows = read_rows(engine)
    assert without_bookkeeping(rows) == expected_table(api.world)
    changed = next(row for row in rows if row["id"] == running["id"])
    assert changed["status"] == "completed"
    assert changed["changed_at"] > changed["first_seen_at"]


def test_run_sync_changes_content_hash_exactly_where_the_payload_changed(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    # The table oracle accepts any well-formed hash; this pins down what the hash must track.
    sync(api, database_url)
    before = {row["id"]: row["content_hash"] for row in read_rows(engine)}
    running = next(a for _, a in api.world.all_actions() if a["status"] == "in-progress")
    api.world.complete(running["id"])
    added = api.world.add_actions(next(iter(api.world.actions)), 2)

    sync(api, database_url, full=True)

    after = {row["id"]: row["content_hash"] for row in read_rows(engine)}
    changed = {i for i in before if after[i] != before[i]}
    assert changed == {running["id"]}
    assert set(after) - set(before) == {action["id"] for action in added}
    assert len(set(after.values())) == len(after)  # no two payloads share a hash


def test_run_sync_migrates_a_new_database_by_itself(api: FakeApi, database_url: str) -> None:
    # No `engine` fixture: the database is empty, as on a first cron run.
    run = sync(api, database_url)

    assert run.outcome == "succeeded"


def test_run_sync_without_auto_migrate_asks_for_migrate(api: FakeApi, database_url: str) -> None:
    run = sync(api, database_url, auto_migrate=False)

    assert run.outcome == "failed"
    assert "run 'do-image-actions migrate' first" in (run.error or "")
    assert api.served == []


def test_run_sync_marks_an_image_incomplete_when_meta_total_disagrees(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    image_id = next(iter(api.world.actions))
    api.total_override[image_id] = 46  # one action the API counts but never lists

    run = sync(api, database_url)

    assert run.outcome == "partial"
    broken = run.images[0]
    assert (broken.complete, broken.received, broken.total, broken.pages) == (False, 45, 46, 6)
    assert all(image.ok for image in run.images[1:])
    assert without_bookkeeping(read_rows(engine)) == expected_table(api.world)


class ShiftOnceApi(ScriptedApi):
    """A fake whose listing gains ``count`` new actions once, just before page 2 is read."""

    def __init__(self, world: World, count: int) -> None:
        super().__init__(world, token=TOKEN)
        self.count = count

    def shift_pages(self, path: str, query: dict[str, str]) -> None:
        """Push the new actions to the head before the first request for page 2."""
        listing = ACTIONS_PATH.match(path)
        if listing and self.count and query.get("page") == "2":
            self.world.add_actions(int(listing[1]), self.count)
            self.count = 0


def test_run_sync_rescans_once_when_the_world_shifts_mid_scan(
    world: World, engine: Engine, database_url: str
) -> None:
    image_id = next(iter(world.actions))
    world.actions = {image_id: world.actions[image_id]}
    # After page 1 is served, two new actions are pushed to the head: page 2 repeats two
    # actions of page 1 and the last two are never seen in the first scan.
    with ShiftOnceApi(world, count=2) as api:
        run = sync(api, database_url)

    image = run.images[0]
    assert (image.complete, image.received, image.total, image.pages) == (True, 47, 47, 6)
    assert without_bookkeeping(read_rows(engine)) == expected_table(api.world)


def test_a_rescanned_image_saves_each_dead_letter_once(
    world: World, engine: Engine, database_url: str
) -> None:
    """Read twice in one run, an image's rejected actions are dead letters once, not twice."""
    image_id = next(iter(world.actions))
    world.actions = {image_id: world.actions[image_id]}
    bad = [{"id": "not-a-number", "status": "completed"}, {"id": 77, "started_at": "yesterday"}]
    world.actions[image_id][28:30] = bad  # on page 2 of both scans
    with ShiftOnceApi(world, count=2) as api:
        run = sync(api, database_url)

    [image] = run.images
    assert (image.complete, image.pages, run.rejected) == (True, 6, 2)  # read twice
    rejected = read_rows(engine, rejected_actions)
    assert [(r["action_id"], r["reason"], r["payload"]) for r in rejected] == [
        (None, "page 2 action 11: id must be a whole number, not str", bad[0]),
        (77, "page 2 action 12: started_at 'yesterday' is not an ISO 8601 timestamp", bad[1]),
    ]


def test_run_sync_goes_on_past_a_missing_image(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    images = (*api.world.actions, 999)

    run = sync(api, database_url, images=images)

    assert run.outcome == "partial"
    assert [image.ok for image in run.images] == [True, True, True, False]
    assert "image 999 was not found" in (run.images[-1].error or "")
    assert len(read_rows(engine)) == 135


def test_run_sync_fails_when_every_image_fails(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    assert sync(api, database_url, images=(998, 999)).outcome == "failed"


def test_run_sync_stops_at_once_on_a_refused_token(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    run = sync(api, database_url, token="wrong-token")

    assert run.outcome == "failed"
    assert "refused the token" in (run.error or "")
    assert len(api.served) == 1


def test_run_sync_keeps_pages_loaded_before_a_failure(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    image_id = next(iter(api.world.actions))
    api.world.actions = {image_id: api.world.actions[image_id]}
    api.faults.append(Fault("status", 400, skip=1))  # page 2 fails for good

    run = sync(api, database_url)

    [image] = run.images
    assert run.outcome == "failed"
    assert image.error is not None
    assert "400" in image.error
    assert (image.pages, image.counts.inserted) == (1, 20)
    assert len(read_rows(engine)) == 20


def test_run_sync_stores_rejected_actions_and_loads_the_rest(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    image_id = next(iter(api.world.actions))
    bad = [{"id": "not-a-number", "status": "completed"}, {"id": 77, "started_at": "yesterday"}]
    api.world.actions[image_id][3:5] = bad

    run = sync(api, database_url)

    assert run.outcome == "partial"
    assert (run.rejected, run.counts.inserted) == (2, 133)
    rejected = read_rows(engine, rejected_actions)
    assert [
        (r["run_id"], r["image_id"], r["action_id"], r["reason"], r["payload"]) for r in rejected
    ] == [
        (run.run_id, image_id, None, "page 1 action 4: id must be a whole number, not str", bad[0]),
        (
            run.run_id,
            image_id,
            77,
            "page 1 action 5: started_at 'yesterday' is not an ISO 8601 timestamp",
            bad[1],
        ),
    ]
    assert len(read_rows(engine)) == 133


def test_run_sync_retries_and_counts_requests(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    api.faults.extend([Fault("status", 503), Fault("reset"), Fault("not_json")])

    run = sync(api, database_url)

    assert (run.outcome, run.requests, run.retries) == ("succeeded", 12, 3)
    assert without_bookkeeping(read_rows(engine)) == expected_table(api.world)
