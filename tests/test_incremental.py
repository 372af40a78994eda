"""Incremental sync: fewer requests, the same table as a full sync, whatever came before."""

from __future__ import annotations

import contextlib
import copy
import logging
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete

from etl.fake import FakeApi, World
from etl.store.schema import image_actions, image_sync_state, rejected_actions, sync_lock, sync_runs
from etl.sync.run import run_sync
from tests.support.databases import DECISION_DIALECT_PARAMS
from tests.support.doubles import TOKEN
from tests.support.oracle import expected_table
from tests.support.rows import read_rows, without_bookkeeping
from tests.support.runs import settings_for, sync
from tests.support.scripted import ScriptedApi


class Crash(BaseException):
    """Stands in for the process dying after a page was committed."""


def crash_after(pages: int):
    done = []

    def on_page(_image: object) -> None:
        done.append(1)
        if len(done) >= pages:
            raise Crash

    return on_page


def full_sync_requests(world: World, tmp_path: Path) -> int:
    with ScriptedApi(world, token=TOKEN) as api:
        return sync(api, f"sqlite:///{tmp_path / 'full.db'}", full=True).requests


def test_incremental_picks_up_new_and_changed_actions_with_fewer_requests(
    api: FakeApi, engine: Engine, database_url: str, tmp_path: Path
) -> None:
    sync(api, database_url)
    first, second = list(api.world.actions)[:2]
    api.world.add_actions(first, 3)
    running = next(a for a in api.world.actions[second] if a["status"] == "in-progress")
    api.world.complete(running["id"])
    api.served.clear()

    run = sync(api, database_url)

    assert without_bookkeeping(read_rows(engine)) == expected_table(api.world)
    assert (run.counts.inserted, run.counts.updated) == (3, 1)
    # Each page 1 ends with actions already stored: past them nothing can be new.
    assert [image.pages for image in run.images] == [1, 1, 1]
    assert run.requests == 3
    assert run.requests < full_sync_requests(api.world, tmp_path) == 9


def test_incremental_refreshes_in_progress_actions_past_the_stop(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    image_id = next(iter(api.world.actions))
    old = api.world.actions[image_id][-1]  # on the last page: never reached incrementally
    old.update(status="in-progress", completed_at=None)
    sync(api, database_url)
    api.world.complete(old["id"])
    api.served.clear()

    run = sync(api, database_url)

    assert run.images[0].refreshed == 1
    assert [e.path for e in api.requests_to(f"/v2/images/{image_id}")] == [
        f"/v2/images/{image_id}/actions",
        f"/v2/images/{image_id}/actions/{old['id']}",
    ]
    assert without_bookkeeping(read_rows(engine)) == expected_table(api.world)


def test_incremental_unchanged_world_costs_one_request_per_image(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    sync(api, database_url)

    run = sync(api, database_url)

    assert (run.requests, run.counts.inserted, run.counts.updated) == (3, 0, 0)
    assert all(image.stopped_early for image in run.images)


def test_incremental_falls_back_to_a_full_scan_when_order_is_not_newest_first(
    api: FakeApi, engine: Engine, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="etl")
    api.newest_first = False
    sync(api, database_url)
    api.world.add_actions(next(iter(api.world.actions)), 2)

    run = sync(api, database_url)

    # Every image is scanned to the end: a first page's fingerprint is trusted only after a
    # scan that saw newest-first order (oldest first, a new action does not touch page 1).
    assert [image.pages for image in run.images] == [3, 3, 3]
    assert not run.images[0].stopped_early
    assert "not listed newest first; scanned fully" in caplog.text
    assert without_bookkeeping(read_rows(engine)) == expected_table(api.world)


def test_incremental_oldest_first_reads_past_a_first_page_with_nothing_new(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    # Oldest first, page 1 holds the oldest actions, so "nothing new on it" says nothing
    # about later pages. The API forgets its two oldest actions as two new ones arrive:
    # meta.total equals the rows stored, and only the order check can stop an early stop.
    api.newest_first = False
    image = next(iter(api.world.actions))
    sync(api, database_url)
    listed = api.world.actions[image]
    forgotten = [(image, copy.deepcopy(action)) for action in listed[-2:]]
    del listed[-2:]
    added = api.world.add_actions(image, 2)

    run = sync(api, database_url)

    assert without_bookkeeping(read_rows(engine)) == expected_table(api.world, also=forgotten)
    assert not run.images[0].stopped_early
    assert run.images[0].counts.inserted == len(added) == 2


def clear(engine: Engine) -> None:
    # A transaction per table: DuckDB checks a foreign key against rows that an earlier
    # statement of the same transaction deleted.
    for table in (rejected_actions, image_sync_state, sync_runs, sync_lock, image_actions):
        with engine.begin() as conn:
            conn.execute(delete(table))


CHANGES = st.sampled_from(["none", "complete", "add-first", "add-second", "complete-old"])
STEPS = st.lists(
    st.tuples(
        st.sampled_from(["incremental", "full"]),
        st.one_of(st.none(), st.integers(min_value=1, max_value=10)),
        CHANGES,
    ),
    min_size=1,
    max_size=4,
)


def make_world() -> World:
    """Two images; the oldest action of the second is still running, deep past page 1."""
    world = World.generate(images=2, actions_per_image=23, seed=11)
    world.actions[list(world.actions)[1]][-1].update(status="in-progress", completed_at=None)
    return world


def change_world(world: World, change: str) -> None:
    """Change the world only as the API does: new actions appear, running ones finish."""
    first, second = list(world.actions)
    if change == "add-first":
        world.add_actions(first, 3)
    elif change == "add-second":
        world.add_actions(second, 6)
    elif change in ("complete", "complete-old"):
        listed = world.actions[first] if change == "complete" else world.actions[second][::-1]
        running = [a for a in listed if a["status"] == "in-progress"]
        if running:
            world.complete(running[0]["id"])


@pytest.mark.slow
@pytest.mark.parametrize("database_url", DECISION_DIALECT_PARAMS, indirect=True)
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=STEPS)
def test_after_any_interrupted_runs_an_incremental_run_equals_a_full_sync(
    engine: Engine, database_url: str, steps: list[tuple[str, int | None, str]]
) -> None:
    clear(engine)
    world = make_world()
    with ScriptedApi(world, token=TOKEN) as api:
        for mode, crash_at, change in steps:
            change_world(world, change)
            on_page = crash_after(crash_at) if crash_at is not None else None
            with contextlib.suppress(Crash):
                run_sync(
                    settings_for(api, database_url, per_page=5),
                    full=mode == "full",
                    on_page=on_page,
                    sleep=lambda _s: None,
                )

        final = run_sync(settings_for(api, database_url, per_page=5), sleep=lambda _s: None)

    assert final.outcome == "succeeded"
    assert without_bookkeeping(read_rows(engine)) == expected_table(world)


def test_an_unchanged_first_page_is_not_read_again_unless_rows_went_missing(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    sync(api, database_url)
    again = sync(api, database_url)
    assert [image.stopped_early for image in again.images] == [True] * 3
    assert again.requests == 3
    image_id = next(iter(api.world.actions))
    with engine.begin() as conn:  # someone deletes stored rows behind our back
        conn.execute(delete(image_actions).where(image_actions.c.image_id == image_id))

    repaired = sync(api, database_url)

    assert repaired.images[0].counts.inserted == 45
    assert without_bookkeeping(read_rows(engine)) == expected_table(api.world)
