"""Page prints: a --full run takes a page read byte for byte as stored without comparing it."""

from __future__ import annotations

import copy
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, delete, event, update

from etl.fake import FakeApi, World
from etl.model import encode_payload, hash_payload
from etl.store.ledger import KnownState, known_state, known_states
from etl.store.schema import image_actions, image_sync_state
from etl.sync.prints import parse
from etl.sync.results import RunResult
from tests.support.databases import migrated_engine
from tests.support.doubles import TOKEN
from tests.support.oracle import expected_table
from tests.support.rows import read_rows, without_bookkeeping
from tests.support.runs import sync
from tests.support.scripted import ScriptedApi

PAGES = 3  # 45 actions an image, 20 a page
LONG_AGO = datetime(2026, 1, 1, tzinfo=UTC)


def printed(run: RunResult) -> dict[int, int]:
    """Return how many pages of each image the run took by their print."""
    return {image.image_id: image.printed for image in run.images}


def prints_of(engine: Engine) -> dict[int, tuple[str, ...]]:
    """Return each image's page prints, as their bytes' fingerprints ("": no print)."""
    return {
        state["image_id"]: tuple(
            "" if entry is None else entry.digest for entry in parse(state["page_digests"]).pages
        )
        for state in read_rows(engine, image_sync_state)
    }


def test_a_full_run_over_unchanged_pages_takes_each_by_its_print(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    sync(api, database_url)
    prints = prints_of(engine)
    assert [len(p) for p in prints.values()] == [PAGES] * 3
    assert all(digest for p in prints.values() for digest in p)

    run = sync(api, database_url, full=True)

    assert run.outcome == "succeeded"
    assert printed(run) == dict.fromkeys(api.world.actions, PAGES)  # nothing compared
    counts = run.counts
    assert (counts.inserted, counts.updated, counts.unchanged) == (0, 0, 135)
    assert run.requests == 3 * PAGES
    assert prints_of(engine) == prints
    assert without_bookkeeping(read_rows(engine)) == expected_table(api.world)


def test_a_page_whose_bytes_changed_is_compared_action_by_action(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    sync(api, database_url)
    image = next(iter(api.world.actions))
    action = api.world.actions[image][25]  # page 2
    action["status"] = "errored" if action["status"] != "errored" else "completed"

    run = sync(api, database_url, full=True)

    assert printed(run) == {**dict.fromkeys(api.world.actions, PAGES), image: PAGES - 1}
    assert (run.counts.updated, run.counts.unchanged) == (1, 134)
    assert without_bookkeeping(read_rows(engine)) == expected_table(api.world)
    assert prints_of(engine)[image][1] != ""  # the page's new bytes are its print now


@pytest.mark.parametrize("edit", ["deleted", "marked missing", "moved to another image"])
def test_a_row_changed_by_hand_under_a_printed_page_is_put_right(
    api: FakeApi,
    engine: Engine,
    database_url: str,
    edit: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The same bytes say nothing of the row: the scan's end checks every action taken
    by print is stored, and reads the image again when one is not."""
    sync(api, database_url)
    image, other = list(api.world.actions)[:2]
    action_id = api.world.actions[image][30]["id"]  # page 2
    where = image_actions.c.id == action_id
    with engine.begin() as conn:
        if edit == "deleted":
            conn.execute(delete(image_actions).where(where))
        elif edit == "marked missing":
            conn.execute(update(image_actions).where(where).values(missing_since=LONG_AGO))
        else:  # as if the other image had listed it first (its fingerprint covers the image)
            encoded = encode_payload(api.world.find(action_id))
            owned = {"image_id": other, "content_hash": hash_payload(encoded, other)}
            conn.execute(update(image_actions).where(where).values(**owned))

    with caplog.at_level(logging.WARNING):
        run = sync(api, database_url, full=True)

    assert run.outcome == "succeeded"
    assert "no longer stored as they were then" in caplog.text
    [result] = [r for r in run.images if r.image_id == image]
    assert (result.printed, result.pages) == (PAGES, 2 * PAGES)  # read again, all compared
    if edit == "deleted":
        assert (result.counts.inserted, result.counts.updated, result.counts.unchanged) == (
            1,
            0,
            44,
        )
        assert without_bookkeeping(read_rows(engine)) == expected_table(api.world)
    elif edit == "marked missing":
        assert (result.counts.inserted, result.counts.updated, result.counts.unchanged) == (
            0,
            1,
            44,
        )
        assert without_bookkeeping(read_rows(engine)) == expected_table(api.world)
    else:  # the first image to list an action keeps it: listed elsewhere, never lost
        assert (result.counts.inserted, result.counts.elsewhere) == (0, 1)
        row = next(row for row in read_rows(engine) if row["id"] == action_id)
        assert (row["image_id"], row["missing_since"]) == (other, None)


def test_a_row_another_image_rewrote_under_a_printed_page_is_put_back(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    """The bytes of the owner's page did not change, but its row did: the scan's end finds
    the row's fingerprint is not the one printed, and reads the image again."""
    owner, other = list(api.world.actions)[:2]
    sync(api, database_url, full=True)
    action = api.world.actions[owner][30]  # page 2
    twin = {**copy.deepcopy(action), "resource_id": other}
    api.world.actions[other].append(twin)  # the other image lists it too, as its own
    rewrote = sync(api, database_url, full=True, workers=1)
    assert rewrote.counts.elsewhere == 1
    assert rows_by_id(engine)[action["id"]]["resource_id"] == other
    api.world.actions[other].remove(twin)

    run = sync(api, database_url, full=True, workers=1)

    assert run.outcome == "succeeded"
    # The owner taken by print, then read again; the other's pages all changed (meta.total).
    assert [(r.printed, r.pages) for r in run.images if r.image_id == owner] == [(3, 6)]
    assert printed(run)[other] == 0
    assert (run.counts.inserted, run.counts.updated) == (0, 1)
    assert without_bookkeeping(read_rows(engine)) == expected_table(api.world)


def test_a_row_restored_from_an_old_copy_under_a_printed_page_is_put_right(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    image = next(iter(api.world.actions))
    action = api.world.actions[image][30]  # page 2
    action.update(status="in-progress", completed_at=None)
    sync(api, database_url)
    old = rows_by_id(engine)[action["id"]]
    api.world.complete(action["id"])
    sync(api, database_url, full=True)
    with engine.begin() as conn:  # the row alone is put back as it was before
        kept = {name: old[name] for name in ("status", "completed_at", "payload", "content_hash")}
        conn.execute(update(image_actions).where(image_actions.c.id == action["id"]).values(kept))

    run = sync(api, database_url, full=True, images=(image,))

    assert [(r.printed, r.pages) for r in run.images] == [(PAGES, 2 * PAGES)]
    assert (run.counts.updated, run.counts.unchanged) == (1, 44)
    assert without_bookkeeping(read_rows(engine)) == expected_table(api.world)


def rows_by_id(engine: Engine) -> dict[int, dict[str, Any]]:
    return {row["id"]: row for row in read_rows(engine)}


def test_a_page_with_a_rejected_or_undocumented_action_is_never_taken_by_print(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    rejecting, odd, rest = list(api.world.actions)
    api.world.actions[rejecting][5]["started_at"] = "not a time"  # page 1
    api.world.actions[odd][44]["status"] = "queued"  # page 3: kept, warned about
    first = sync(api, database_url)
    assert prints_of(engine)[rejecting] == ()  # its scan is never complete
    assert [bool(digest) for digest in prints_of(engine)[odd]] == [True, True, False]

    runs = [sync(api, database_url, full=True, workers=1) for _ in range(2)]

    for run in runs:
        assert printed(run) == {rejecting: 0, odd: PAGES - 1, rest: PAGES}
    for run in runs:  # counted as the first run counted them, every time
        assert run.counters()["rows_rejected"] == first.counters()["rows_rejected"] == 1
        assert run.counters()["unknown_statuses"] == 1
        assert (run.counts.inserted, run.counts.updated, run.counts.unchanged) == (0, 0, 134)


def test_prints_go_when_a_scan_or_a_refresh_writes_and_come_back_with_a_full_read(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    image = next(iter(api.world.actions))
    oldest = api.world.actions[image][-1]  # page 3: refreshed, never reached incrementally
    oldest.update(status="in-progress", completed_at=None)
    sync(api, database_url)
    assert prints_of(engine)[image][2] != ""

    api.world.complete(oldest["id"])
    run = sync(api, database_url)  # stops at page 1, refreshes the oldest action
    assert [r.refreshed for r in run.images if r.image_id == image] == [1]
    assert prints_of(engine)[image] == ()
    assert all(len(p) == PAGES for i, p in prints_of(engine).items() if i != image)

    api.world.add_actions(image, 1)
    sync(api, database_url)  # writes page 1
    assert prints_of(engine)[image] == ()

    run = sync(api, database_url, full=True)
    assert printed(run) == {**dict.fromkeys(api.world.actions, PAGES), image: 0}
    assert len(prints_of(engine)[image]) == PAGES

    run = sync(api, database_url, full=True)
    assert printed(run) == dict.fromkeys(api.world.actions, PAGES)


def test_a_dry_run_takes_pages_by_print_but_records_none_it_did_not_store(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    sync(api, database_url)
    image = next(iter(api.world.actions))
    api.world.add_actions(image, 1)
    before = prints_of(engine)

    run = sync(api, database_url, full=True, dry_run=True)

    assert printed(run) == {**dict.fromkeys(api.world.actions, PAGES), image: 0}  # shifted
    assert (run.counts.inserted, run.counts.updated, run.counts.unchanged) == (1, 0, 135)
    assert prints_of(engine) == before


def test_a_feed_runs_refresh_that_rewrites_an_action_clears_its_images_prints(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    """The feed shows nothing new, so an image is only refreshed (unless audited): no
    scan records its state, and the refresh itself forgets the prints its rows may no
    longer match."""
    oldest = [actions[-1] for actions in api.world.actions.values()]
    for action in oldest:
        action.update(status="in-progress", completed_at=None)
    sync(api, database_url, strategy="auto")
    assert all(prints_of(engine).values())
    for action in oldest:
        api.world.complete(action["id"])

    run = sync(api, database_url, strategy="auto")

    assert run.strategy == "feed"
    [image] = [r.image_id for r in run.images if r.refreshed and not r.scanned][:1]
    assert prints_of(engine)[image] == ()
    full = sync(api, database_url, full=True, images=(image,))
    assert printed(full) == {image: 0}


def test_a_run_reads_what_every_images_last_sync_left_in_one_statement(
    api: FakeApi, database_url: str
) -> None:
    sync(api, database_url)
    reads: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().startswith("SELECT") and "first_page_digest" in statement:
            reads.append(statement)

    event.listen(Engine, "before_cursor_execute", note)
    try:
        full = sync(api, database_url, full=True)
        incremental = sync(api, database_url)
    finally:
        event.remove(Engine, "before_cursor_execute", note)

    assert (full.outcome, incremental.outcome) == ("succeeded", "succeeded")
    assert len(reads) == 2  # one a run, not one an image


def test_known_states_reads_a_thousand_images_at_a_time(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    sync(api, database_url)
    images = list(api.world.actions)
    with engine.begin() as conn:  # one image's last scan did not complete
        incomplete = image_sync_state.c.image_id == images[1]
        conn.execute(update(image_sync_state).where(incomplete).values(scan_complete=False))
    asked = [*range(1, 1200), images[0], images[1], *range(5000, 5900)]  # three reads

    with engine.connect() as conn:
        found = known_states(conn, asked)
        one = known_state(conn, images[0])

    assert list(found) == asked
    assert found[images[0]] == one
    assert (one.scan_complete, len(parse(one.page_digests).pages)) == (True, PAGES)
    assert found[images[1]] == found[1] == KnownState()  # as known_state says of both


class LyingOnceApi(ScriptedApi):
    """Adds one to meta.total on a chosen image's pages 4 to 6 it serves: its second scan."""

    target = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.served_pages = 0

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        status, body = super().answer(path, query)
        if path == f"/v2/images/{self.target}/actions" and status == 200:
            self.served_pages += 1
            if 4 <= self.served_pages <= 6:
                body = {**body, "meta": {"total": body["meta"]["total"] + 1}}
        return status, body


def test_a_failed_print_check_leaves_the_image_its_meta_total_retry(
    world: World, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The scan a failed check adds reads a shifting listing; the retry meta.total allows
    any scan is still there, and the image ends complete."""
    with LyingOnceApi(world, token=TOKEN) as api:
        image = synced_with_page_2_broken(api, database_url)
        changed = world.actions[image][3]  # page 1: the first scan writes it
        changed["status"] = "errored" if changed["status"] != "errored" else "completed"

        with caplog.at_level(logging.WARNING):
            run = sync(api, database_url, full=True, workers=1)

    assert "meta.total is 46 (scan 2 of 3)" in caplog.text
    assert run.outcome == "succeeded"
    [result] = [r for r in run.images if r.image_id == image]
    assert (result.complete, result.pages) == (True, 3 * PAGES)
    # Each action once over the three scans: the first updated one, the second inserted one.
    assert (result.counts.inserted, result.counts.updated, result.counts.unchanged) == (1, 1, 43)
    engine = migrated_engine(database_url)
    assert without_bookkeeping(read_rows(engine)) == expected_table(world)
    engine.dispose()


def synced_with_page_2_broken(api: LyingOnceApi, database_url: str) -> int:
    """Sync, make the first image the one lied about, delete a row of its page 2 by hand."""
    sync(api, database_url)
    image = api.target = next(iter(api.world.actions))
    engine = migrated_engine(database_url)
    with engine.begin() as conn:  # page 2's print no longer holds
        gone = image_actions.c.id == api.world.actions[image][30]["id"]
        conn.execute(delete(image_actions).where(gone))
    engine.dispose()
    return image


class LyingThenFailingApi(LyingOnceApi):
    """As LyingOnceApi, then answers 404 for the chosen image's eighth page: its third scan."""

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        status, body = super().answer(path, query)
        if path == f"/v2/images/{self.target}/actions" and self.served_pages == 8:
            return 404, {"id": "not_found", "message": "The resource was not found."}
        return status, body


def test_a_third_scan_cut_short_counts_what_the_scans_before_it_found(
    world: World, database_url: str
) -> None:
    with LyingThenFailingApi(world, token=TOKEN) as api:
        image = synced_with_page_2_broken(api, database_url)
        run = sync(api, database_url, full=True, workers=1)

    [result] = [r for r in run.images if r.image_id == image]
    assert result.error is not None
    assert "page 2 answered 404" in result.error
    # The second scan read to the end; the third, cut short, found page 1 unchanged again.
    assert (result.counts.inserted, result.counts.updated, result.counts.unchanged) == (1, 0, 44)
