"""Pages a --full run takes unread: their print says what reading them gives (etl.sync.prints)."""

from __future__ import annotations

import copy
import hashlib
import logging
import re
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, delete, insert, update

from etl.fake import FakeApi, World
from etl.model import encode_payload, hash_payload
from etl.source import answers
from etl.source.extract import Page
from etl.source.reading import parse_json
from etl.store.ledger import known_state, listed_hashes, listed_print, whole_print
from etl.store.schema import image_actions, image_sync_state
from etl.sync import image_scan
from etl.sync.preparer import Preparer
from etl.sync.prints import (
    MAX_TEXT,
    NO_LINK,
    OTHER_LINK,
    OUR_LINK,
    OwnLinks,
    PagePrints,
    Stored,
    parse,
)
from etl.sync.results import RunResult
from tests.support.doubles import TOKEN
from tests.support.oracle import expected_table
from tests.support.rows import read_rows, without_bookkeeping
from tests.support.runs import sync
from tests.support.scripted import ScriptedApi

PAGES = 3  # 45 actions an image, 20 a page
LONG_AGO = datetime(2026, 1, 1, tzinfo=UTC)
ACTIONS = re.compile(r"/v2/images/\d+/actions\Z")
LINKS = OwnLinks("http://127.0.0.1:1/v2/images/7/actions", 20)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count the pages whose bytes the run parses: by its preparer, or by the client."""
    counted: Counter[str] = Counter()
    page = Preparer.page

    def preparing(self: Preparer, content: bytes, image_id: int, *, read_only: bool = False) -> Any:
        counted["read" if read_only else "prepared"] += 1
        return page(self, content, image_id, read_only=read_only)

    def parsing(content: bytes) -> Any:
        counted["parsed"] += 1
        return parse_json(content)

    monkeypatch.setattr(Preparer, "page", preparing)
    monkeypatch.setattr(answers, "parse_json", parsing)
    monkeypatch.setattr(image_scan, "parse_json", parsing)
    return counted


def printed(run: RunResult) -> dict[int, int]:
    return {image.image_id: image.printed for image in run.images}


def image_of(run: RunResult, image_id: int) -> Any:
    [result] = [r for r in run.images if r.image_id == image_id]
    return result


def test_a_full_run_over_unchanged_pages_reads_none_of_them(
    api: FakeApi, engine: Engine, database_url: str, reads: Counter[str]
) -> None:
    sync(api, database_url)
    stored = {s["image_id"]: parse(s["page_digests"]) for s in read_rows(engine, image_sync_state)}
    assert all(p.whole and p.ordered for p in stored.values())
    assert [[e.link for e in p.pages if e] for p in stored.values()] == [
        [OUR_LINK, OUR_LINK, NO_LINK]
    ] * 3
    reads.clear()

    run = sync(api, database_url, full=True)

    assert run.outcome == "succeeded"
    assert reads == Counter()  # not one page read
    assert printed(run) == dict.fromkeys(api.world.actions, PAGES)
    assert (run.counts.inserted, run.counts.updated, run.counts.unchanged) == (0, 0, 135)
    assert [(r.received, r.total, r.complete, r.missing) for r in run.images] == [
        (45, 45, True, 0)
    ] * 3
    assert run.requests == 3 * PAGES
    assert without_bookkeeping(read_rows(engine)) == expected_table(api.world)
    again = {s["image_id"]: parse(s["page_digests"]) for s in read_rows(engine, image_sync_state)}
    assert again == stored
    # Still known newest first: the next incremental run stops at each first page.
    with engine.connect() as conn:
        assert all(known_state(conn, i).first_page_digest for i in api.world.actions)
    assert sync(api, database_url).requests == 3


@pytest.mark.parametrize("edit", ["row rewritten", "id renumbered", "row added"])
def test_rows_that_are_not_the_listing_under_pages_taken_unread_are_put_right(
    api: FakeApi,
    engine: Engine,
    database_url: str,
    edit: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The same bytes say nothing of the rows: the whole print of the image's rows must
    hold, or the image is read again with every action compared. (A row deleted, marked
    missing or moved to another image: see test_prints.)"""
    sync(api, database_url)
    image = next(iter(api.world.actions))
    action = api.world.actions[image][7]  # page 1
    where = image_actions.c.id == action["id"]
    row = next(r for r in read_rows(engine) if r["id"] == action["id"])
    stranger = action["id"] + 10**12
    with engine.begin() as conn:
        if edit == "row rewritten":  # an old copy restored, its fingerprint with it
            old = {**action, "status": "in-progress", "completed_at": None}
            fingerprint = hash_payload(encode_payload(old), image)
            rewritten = {"status": "in-progress", "content_hash": fingerprint}
            conn.execute(update(image_actions).where(where).values(**rewritten))
        elif edit == "id renumbered":  # the same fingerprint under another id
            conn.execute(update(image_actions).where(where).values(id=stranger))
        else:  # an action the listing does not hold, stored under the image
            conn.execute(insert(image_actions).values({**row, "id": stranger}))

    with caplog.at_level(logging.WARNING):
        run = sync(api, database_url, full=True)

    assert run.outcome == "succeeded"
    assert "no longer stored as they were then" in caplog.text
    result = image_of(run, image)
    assert (result.printed, result.pages) == (PAGES, 2 * PAGES)  # read again, all compared
    rows = {row["id"]: row for row in read_rows(engine)}
    if edit != "row rewritten":  # the stranger is no longer listed
        assert rows.pop(stranger)["missing_since"] is not None
        assert result.missing == 1
    assert without_bookkeeping(rows.values()) == expected_table(api.world)


def test_a_page_that_changed_after_pages_taken_unread_has_them_read_and_checked(
    api: FakeApi, engine: Engine, database_url: str, reads: Counter[str]
) -> None:
    """Pages 1 and 2 come as printed, page 3 does not: 1 and 2 are read for their ids,
    and their rows checked page by page (a hand's edit on page 1 is found)."""
    sync(api, database_url)
    image = next(iter(api.world.actions))
    last = api.world.actions[image][44]  # page 3
    last["status"] = "errored" if last["status"] != "errored" else "completed"
    edited = api.world.actions[image][2]["id"]  # page 1
    with engine.begin() as conn:
        conn.execute(delete(image_actions).where(image_actions.c.id == edited))
    reads.clear()

    run = sync(api, database_url, full=True, workers=1)

    result = image_of(run, image)
    assert (result.printed, result.pages) == (2, 2 * PAGES)  # read again, all compared
    assert (result.counts.inserted, result.counts.updated, result.counts.unchanged) == (1, 1, 43)
    # Page 3, then pages 1 and 2 for their ids, then the image again.
    assert reads.total() == 3 + PAGES
    assert reads["read"] in (0, 2)  # pages 1 and 2 for their ids, when a preparer reads
    assert without_bookkeeping(read_rows(engine)) == expected_table(api.world)
    others = [image_of(run, i) for i in api.world.actions if i != image]
    assert [(r.printed, r.pages) for r in others] == [(PAGES, PAGES)] * 2


def test_pages_past_what_a_scan_keeps_unread_are_read_for_their_ids(
    api: FakeApi,
    engine: Engine,
    database_url: str,
    reads: Counter[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sync(api, database_url)
    image = next(iter(api.world.actions))
    last = api.world.actions[image][44]  # page 3
    last["status"] = "errored" if last["status"] != "errored" else "completed"
    monkeypatch.setattr(image_scan, "QUICK_BYTES", 1)  # no page fits
    reads.clear()

    run = sync(api, database_url, full=True)

    assert reads.total() == 3 * PAGES  # every page taken by print was read for its ids
    assert reads["read"] in (0, 3 * PAGES - 1)
    assert printed(run) == {**dict.fromkeys(api.world.actions, PAGES), image: PAGES - 1}
    assert (run.counts.updated, run.counts.unchanged) == (1, 134)
    assert without_bookkeeping(read_rows(engine)) == expected_table(api.world)


class OtherLinksApi(ScriptedApi):
    """Spells each next link its own way: the query's order turned round."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.next_link_override = self.turned

    def turned(self, image_id: int, page: int, per_page: int, base_url: str) -> str | None:
        if page * per_page >= len(self.world.actions[image_id]):  # the last: none, as ever
            return None
        return f"{base_url}/v2/images/{image_id}/actions?per_page={per_page}&page={page + 1}"


def test_pages_whose_next_link_is_not_ours_are_read_for_it(
    world: World, engine: Engine, database_url: str, reads: Counter[str]
) -> None:
    with OtherLinksApi(world, token=TOKEN) as api:
        sync(api, database_url)
        stored = parse(read_rows(engine, image_sync_state)[0]["page_digests"])
        assert [e.link for e in stored.pages if e] == [OTHER_LINK, OTHER_LINK, NO_LINK]
        reads.clear()

        run = sync(api, database_url, full=True)

    assert printed(run) == dict.fromkeys(world.actions, PAGES)
    assert reads.total() == 3 * PAGES  # taken by print, each read for its link and ids
    assert reads["read"] in (0, 3 * PAGES)
    assert run.counts.unchanged == 135
    assert without_bookkeeping(read_rows(engine)) == expected_table(world)


class FailingPage3Api(ScriptedApi):
    """Answers 404 (not the API's own) for the chosen image's page 3."""

    target = 0

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if path == f"/v2/images/{self.target}/actions" and query.get("page") == "3":
            return 404, {"id": "no_such_page", "message": "gone"}
        return super().answer(path, query)


def test_pages_taken_unread_before_a_failing_page_count_unchanged(
    world: World, engine: Engine, database_url: str
) -> None:
    with FailingPage3Api(world, token=TOKEN) as api:
        sync(api, database_url)
        image = api.target = next(iter(world.actions))
        run = sync(api, database_url, full=True)

    result = image_of(run, image)
    assert result.error is not None
    assert (result.pages, result.counts.unchanged, result.printed) == (2, 40, 0)
    assert without_bookkeeping(read_rows(engine)) == expected_table(world)


@pytest.mark.parametrize(
    "text",
    [
        f"{'a' * 32}.{'b' * 32},{'c' * 32}.{'d' * 32}",  # an earlier version's
        "p2.0123456789abcdef." + "e" * 64 + ".1," + "a" * 32 + "." + "b" * 32 + ".45.20",  # cut
        "p2.0123456789abcdef." + "e" * 64 + ".1," + "a" * 32 + "." + "b" * 32 + ".-1.20.0",
        "p2.0123456789abcdef." + "e" * 64 + ".1," + "A" * 32 + "." + "b" * 32 + ".45.20.0",
        "p2.0123456789abcdef." + "e" * 64 + ".2," + "a" * 32 + "." + "b" * 32 + ".45.20.0",
        "p3.0123456789abcdef." + "e" * 64 + ".1," + "a" * 32 + "." + "b" * 32 + ".45.20.0",
        "p2.0123456789abcdef." + "e" * 64 + ".1," + "a" * 32 + "." + "b" * 32 + ".45.20.x",
    ],
)
def test_prints_that_do_not_read_as_prints_give_no_shortcut(text: str) -> None:
    assert parse(text) == Stored()


def test_an_old_or_broken_print_has_every_page_compared_and_a_new_one_recorded(
    api: FakeApi, engine: Engine, database_url: str, reads: Counter[str]
) -> None:
    sync(api, database_url)
    old = ",".join(f"{n:032x}.{n:032x}" for n in range(PAGES))  # an earlier version's
    with engine.begin() as conn:
        conn.execute(update(image_sync_state).values(page_digests=old))

    run = sync(api, database_url, full=True)

    assert printed(run) == dict.fromkeys(api.world.actions, 0)
    assert run.counts.unchanged == 135
    reads.clear()
    run = sync(api, database_url, full=True)
    assert printed(run) == dict.fromkeys(api.world.actions, PAGES)
    assert reads == Counter()


def page(number: int, digest: int, *, link: str | None, size: int = 2) -> Page:
    return Page(number, [], 90, f"{digest:032x}", link=link, prepared=Sized(size))


class Sized:
    """What Page.size reads of a prepared page."""

    def __init__(self, size: int) -> None:
        self.size = size


def test_a_page_is_taken_unread_only_by_its_own_print_and_our_links() -> None:
    prints = PagePrints(links=LINKS)
    prints.record(page(1, 1, link=LINKS.link(2)), {1: "h1", 2: "h2"})
    prints.record(page(2, 2, link=None), {3: "h3", 4: "h4"})
    stored = parse(prints.text(ordered=True))
    assert stored.whole == whole_print({1: "h1", 2: "h2", 3: "h3", 4: "h4"})
    assert stored.ordered

    again = PagePrints(stored, LINKS)
    first = again.unread(1, f"{1:032x}")
    assert first is not None
    assert (first.total, first.size, first.next_link) == (90, 2, LINKS.link(2))
    assert again.unread(2, f"{2:032x}") is None  # page 1 not yet taken
    again.take_unread(page(1, 1, link=None))
    assert again.unread(2, f"{1:032x}") is None  # another page's bytes
    last = again.unread(2, f"{2:032x}")
    assert last is not None
    assert last.next_link is None
    again.take_unread(page(2, 2, link=None))
    assert again.all_unread
    assert again.whole(whole_print({4: "h4", 3: "h3", 2: "h2", 1: "h1"}))
    assert not again.whole(whole_print({1: "h1", 2: "h2", 3: "h3", 4: "h4", 5: "h5"}))
    assert not again.whole(whole_print({1: "h1", 2: "h2", 3: "h3", 5: "h4"}))
    assert again.text(ordered=True) == prints.text(ordered=True)

    read = PagePrints(stored, LINKS)  # pages taken read are checked one by one
    read.take(page(1, 1, link=None), [1, 2])
    read.take(page(2, 2, link=None), [3, 4])
    assert read.changed({1: "h1", 2: "h2", 3: "h3", 4: "h4", 5: "h5"}) == []
    assert read.changed({1: "h1", 2: "other", 3: "h3", 4: "h4"}) == [1]
    assert read.changed({1: "h1", 2: "h2", 3: "h3"}) == [2]

    for links in (OwnLinks(LINKS.url, 21), OwnLinks(LINKS.url + "/", 20)):  # not the recorded
        assert PagePrints(stored, links).unread(1, f"{1:032x}") is None
        assert PagePrints(stored, links).matches(1, f"{1:032x}")  # read, it may be taken


def test_no_page_is_taken_unread_without_the_whole_listings_print() -> None:
    prints = PagePrints(links=LINKS)
    prints.record(page(1, 1, link=LINKS.link(2)), {1: "h1", 2: "h2"})
    prints.record(page(2, 2, link=None), None)  # not clean
    stored = parse(prints.text(ordered=True))
    assert stored.whole == ""
    again = PagePrints(stored, LINKS)
    assert again.unread(1, f"{1:032x}") is None
    assert again.matches(1, f"{1:032x}")


def test_page_prints_are_recorded_in_order_for_clean_pages_within_the_column() -> None:
    prints = PagePrints(links=LINKS)
    number = 0
    while len(prints.recorded) == number:
        number += 1
        clean = {number: "h"} if number != 2 else None
        prints.record(page(number, number, link=LINKS.link(number + 1)), clean)
    assert prints.recorded[1] == ""
    assert prints.recorded[2].startswith(f"{3:032x}.")
    text = prints.text(ordered=False)
    assert text is not None
    assert len(text.partition(",")[2]) <= MAX_TEXT
    assert len(text) < 2**16  # MySQL's TEXT
    again = parse(text)
    assert again.whole == ""  # page 2 was not clean, and the last pages have no print
    assert len(again.pages) == number - 1 > 600
    assert again.pages[1] is None
    assert again.pages[2] is not None
    assert (again.pages[2].total, again.pages[2].size, again.pages[2].link) == (90, 2, OUR_LINK)


def test_a_listing_taken_unread_keeps_the_order_it_was_read_in(
    api: FakeApi, engine: Engine, database_url: str, reads: Counter[str]
) -> None:
    """Oldest first: no first page may be skipped by its bytes after it, read or unread."""
    api.newest_first = False
    sync(api, database_url)
    stored = parse(read_rows(engine, image_sync_state)[0]["page_digests"])
    assert (bool(stored.whole), stored.ordered) == (True, False)
    reads.clear()

    run = sync(api, database_url, full=True)

    assert printed(run) == dict.fromkeys(api.world.actions, PAGES)
    assert reads == Counter()
    assert [r.ordered for r in run.images] == [False] * 3
    with engine.connect() as conn:
        assert not any(known_state(conn, i).first_page_digest for i in api.world.actions)
    assert sync(api, database_url).requests == 3 * PAGES  # read to the end, as ever


def test_an_images_rows_print_the_same_read_in_python_or_hashed_by_the_server(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    sync(api, database_url)
    image = next(iter(api.world.actions))
    odd = image_actions.c.id == api.world.actions[image][0]["id"]
    with engine.begin() as conn:  # a hand's odd fingerprint: any text spells the same
        conn.execute(update(image_actions).where(odd).values(content_hash="é'\\\"ü,:"))
        conn.execute(
            update(image_actions)
            .where(image_actions.c.image_id != image)
            .values(missing_since=LONG_AGO)
        )
    with engine.connect() as conn:
        for image_id in api.world.actions:
            rows = listed_hashes(conn, image_id)
            assert listed_print(conn, image_id) == (len(rows), whole_print(rows))
        assert listed_print(conn, 1) == (0, whole_print({}))
    assert len(rows) == 0


@pytest.mark.parametrize("edit", ["its check left", "its check made anew"])
def test_a_print_edited_to_end_the_listing_early_gives_no_shortcut(
    api: FakeApi, engine: Engine, database_url: str, edit: str
) -> None:
    """Page 1's mark edited to say it is the last: were it believed, pages 2 and 3 would
    never be fetched (the rows and meta.total would agree), and a change there missed."""
    sync(api, database_url)
    image = next(iter(api.world.actions))
    mine = image_sync_state.c.image_id == image
    [text] = [
        s["page_digests"] for s in read_rows(engine, image_sync_state) if s["image_id"] == image
    ]
    head, first, *rest = text.split(",")
    assert first.endswith(f".{OUR_LINK}")
    body = ",".join([first[:-1] + NO_LINK, *rest])
    fields = head.split(".")
    if edit == "its check made anew":  # as a hand that knew the format would
        fields[-1] = hashlib.blake2b(body.encode(), digest_size=8).hexdigest()
    edited = ".".join(fields) + "," + body
    assert parse(edited) == Stored()
    with engine.begin() as conn:
        conn.execute(update(image_sync_state).where(mine).values(page_digests=edited))
    last = api.world.actions[image][44]  # page 3 changes at the API
    last["status"] = "errored" if last["status"] != "errored" else "completed"

    run = sync(api, database_url, full=True)

    assert image_of(run, image).pages == PAGES
    assert (run.counts.updated, run.counts.unchanged) == (1, 134)
    assert without_bookkeeping(read_rows(engine)) == expected_table(api.world)


class TwiceOnPage1Api(ScriptedApi):
    """Lists each image's first action twice on page 1, in place of its second."""

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        status, body = super().answer(path, query)
        if status == 200 and ACTIONS.match(path):
            if query.get("page", "1") == "1":
                body["actions"][1] = dict(body["actions"][0])
            body["meta"] = {"total": body["meta"]["total"] - 1}
        return status, body


def test_a_page_listing_an_action_twice_is_counted_as_when_compared(
    world: World, engine: Engine, database_url: str
) -> None:
    with TwiceOnPage1Api(world, token=TOKEN) as api:
        sync(api, database_url)
        printed_run = sync(api, database_url, full=True)
        with engine.begin() as conn:  # no prints: every page compared
            conn.execute(update(image_sync_state).values(page_digests=None))
        compared = sync(api, database_url, full=True)

    assert printed_run.outcome == compared.outcome == "succeeded"
    assert printed(printed_run) == dict.fromkeys(world.actions, PAGES - 1)  # page 1 compared
    assert [i.received for i in printed_run.images] == [i.received for i in compared.images]
    assert printed_run.counts.unchanged == compared.counts.unchanged == 3 * 44


class PerPageIgnoredApi(ScriptedApi):
    """Serves 20 a page whatever per_page asks, its links saying so; ``stale`` pages answer
    URLs spelt with per_page=50, which its links never name, with an old listing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stale: dict[tuple[str, str], dict[str, Any]] = {}

    def _paging(self, query: dict[str, str]) -> tuple[int, int]:
        return super()._paging(query)[0], 20

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        stale = self.stale.get((path, query.get("page", "1")))
        if stale is not None and query.get("per_page") == "50":
            return 200, stale
        return super().answer(path, query)


def test_pages_taken_under_other_links_are_printed_by_the_links_they_hold(
    world: World, engine: Engine, database_url: str
) -> None:
    """A print taken by a run with another per_page is judged by that run's links: the
    next run follows the links the API sends, never a URL the API did not name."""
    with PerPageIgnoredApi(world, token=TOKEN) as api:
        sync(api, database_url, per_page=20)
        image = next(iter(world.actions))
        path = f"/v2/images/{image}/actions"
        old = {(path, str(n)): api.answer(path, {"page": str(n), "per_page": "20"})[1]
               for n in range(1, PAGES + 1)}  # fmt: skip
        run = sync(api, database_url, full=True, per_page=50)  # taken by print, read
        assert printed(run) == dict.fromkeys(world.actions, PAGES)
        stored = parse(read_rows(engine, image_sync_state)[0]["page_digests"])
        assert [e.link for e in stored.pages if e] == [OTHER_LINK, OTHER_LINK, NO_LINK]

        last = world.actions[image][44]  # page 3 changes, as the API's own links serve it
        last["status"] = "errored" if last["status"] != "errored" else "completed"
        api.stale = copy.deepcopy(old)
        run = sync(api, database_url, full=True, per_page=50)

    assert image_of(run, image).counts.updated == 1
    assert without_bookkeeping(read_rows(engine)) == expected_table(world)


def test_a_print_whose_pages_do_not_match_its_check_gives_no_shortcut() -> None:
    prints = PagePrints(links=LINKS)
    prints.record(page(1, 1, link=LINKS.link(2)), {1: "h1", 2: "h2"})
    prints.record(page(2, 2, link=None), {3: "h3", 4: "h4"})
    text = prints.text(ordered=True)
    assert text is not None
    assert parse(text).whole
    assert parse(text.replace(".90.2.", ".91.2.", 1)) == Stored()  # meta.total edited
    assert parse(text[:-1]) == Stored()  # cut


def test_a_large_images_rows_print_whole_past_the_servers_concat_limit(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    """MariaDB cuts GROUP_CONCAT at 1 MiB by default: 30,000 rows spell about 1.3 MiB."""
    sync(api, database_url)
    template = read_rows(engine)[0]
    many = [{**template, "id": 10**12 + n, "image_id": 77} for n in range(30_000)]
    with engine.begin() as conn:
        conn.execute(insert(image_actions), many)
    with engine.connect() as conn:
        rows = listed_hashes(conn, 77)
        assert len(rows) == 30_000
        assert listed_print(conn, 77) == (30_000, whole_print(rows))
