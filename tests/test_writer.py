"""SQLite's one writer commits the pages waiting for it together, and a failure stays one page's."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, text

from etl.fake import FakeApi, World
from etl.store.database import open_engine
from etl.sync import writer as writer_module
from etl.sync.image_scan import ImageScan
from etl.sync.writer import MOST_PAGES_A_TRANSACTION, GroupWriter, PageWrite
from tests.support.doubles import TOKEN
from tests.support.oracle import expected_table
from tests.support.rows import read_rows, without_bookkeeping
from tests.support.runs import sync


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[Engine]:
    engine = open_engine(f"sqlite:///{tmp_path / 'writer.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
    yield engine
    engine.dispose()


@pytest.fixture
def commits(sqlite: Engine) -> list[int]:
    """How many COMMITs the engine ran, one entry each."""
    seen: list[int] = []
    event.listen(sqlite, "commit", lambda _conn: seen.append(1))
    return seen


def stored(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT id FROM t ORDER BY id")).scalars())


class Page:
    """A page that inserts its ids, as a scan's store does, and notes what happened to it."""

    def __init__(self, engine: Engine, *ids: int, fail: bool = False) -> None:
        self.engine, self.ids, self.fail = engine, ids, fail
        self.alone = 0

    def write(self, conn: Connection) -> tuple[int, ...]:
        for i in self.ids:
            conn.execute(text("INSERT INTO t (id) VALUES (:i)"), {"i": i})
        if self.fail:
            raise RuntimeError(f"page {self.ids} failed")
        return self.ids

    def by_itself(self) -> tuple[int, ...]:
        self.alone += 1
        with self.engine.begin() as conn:
            return self.write(conn)

    def job(self) -> PageWrite[tuple[int, ...], tuple[int, ...]]:
        return PageWrite(
            image=self.ids[0],
            ids=frozenset(self.ids),
            hold=contextlib.nullcontext,
            write=self.write,
            done=lambda written: written,
            alone=self.by_itself,
        )


def occupied(writer: GroupWriter) -> threading.Event:
    """Keep the writer busy until the returned event is set: what is submitted waits."""
    busy, release = threading.Event(), threading.Event()

    def wait() -> None:
        busy.set()
        release.wait(5)

    writer.submit(wait)
    busy.wait(5)
    return release


def queued(writer: GroupWriter, pages: list[Page]) -> list[Any]:
    """Submit the pages while the writer is busy, so that they wait for it together."""
    release = occupied(writer)
    futures = [writer.submit_page(page.job()) for page in pages]
    release.set()
    return [future.result(timeout=5) for future in futures]


def test_pages_waiting_together_commit_in_one_transaction(
    sqlite: Engine, commits: list[int]
) -> None:
    pages = [Page(sqlite, 1, 2), Page(sqlite, 3), Page(sqlite, 4, 5)]
    with GroupWriter(sqlite) as writer:
        answers = queued(writer, pages)

    assert answers == [(1, 2), (3,), (4, 5)]
    assert len(commits) == 1
    assert stored(sqlite) == [1, 2, 3, 4, 5]
    assert [page.alone for page in pages] == [0, 0, 0]


def test_a_failing_page_rolls_its_group_back_and_each_is_written_alone(
    sqlite: Engine, commits: list[int]
) -> None:
    pages = [Page(sqlite, 1), Page(sqlite, 2, fail=True), Page(sqlite, 3)]
    with GroupWriter(sqlite) as writer:
        release = occupied(writer)
        futures = [writer.submit_page(page.job()) for page in pages]
        release.set()
        with pytest.raises(RuntimeError, match="failed"):
            futures[1].result(timeout=5)

    assert futures[0].result() == (1,)
    assert futures[2].result() == (3,)
    assert stored(sqlite) == [1, 3]  # each once: the group's writes went with its rollback
    # The failure ended the group before the third joined: it made a group of its own.
    assert [page.alone for page in pages] == [1, 1, 0]
    assert len(commits) == 2  # the first, again alone, and the third


def test_a_page_queued_while_a_group_is_written_joins_it(
    sqlite: Engine, commits: list[int]
) -> None:
    submitted = threading.Event()

    class Slow(Page):
        def write(self, conn: Connection) -> tuple[int, ...]:
            submitted.wait(5)  # the second page is queued meanwhile
            return super().write(conn)

    with GroupWriter(sqlite) as writer:
        first = writer.submit_page(Slow(sqlite, 1).job())
        second = writer.submit_page(Page(sqlite, 2).job())
        submitted.set()
        answers = [first.result(timeout=5), second.result(timeout=5)]

    assert answers == [(1,), (2,)]
    assert len(commits) == 1


def test_a_bug_in_the_writer_reaches_the_page_instead_of_a_hang(
    sqlite: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: GroupWriter, first: Any) -> None:
        raise AssertionError("a bug")

    monkeypatch.setattr(GroupWriter, "_write", broken)
    with GroupWriter(sqlite) as writer:
        future = writer.submit_page(Page(sqlite, 1).job())
        with pytest.raises(AssertionError, match="a bug"):
            future.result(timeout=5)
        assert writer.submit(lambda: "still writing").result(timeout=5) == "still writing"


def test_a_failing_commit_writes_each_page_alone(sqlite: Engine) -> None:
    failed: list[int] = []

    def fail_once(_conn: Any) -> None:
        if not failed:
            failed.append(1)
            raise RuntimeError("the commit failed")

    event.listen(sqlite, "commit", fail_once)
    pages = [Page(sqlite, 1), Page(sqlite, 2)]
    with GroupWriter(sqlite) as writer:
        answers = queued(writer, pages)

    assert answers == [(1,), (2,)]
    assert stored(sqlite) == [1, 2]
    assert [page.alone for page in pages] == [1, 1]


def test_pages_that_share_an_action_never_share_a_transaction(
    sqlite: Engine, commits: list[int]
) -> None:
    """Each holds its actions' turn until it commits: together they would wait for ever."""
    held: list[str] = []

    @contextlib.contextmanager
    def turn(name: str) -> Iterator[None]:
        held.append(f"+{name}")
        yield
        held.append(f"-{name}")

    pages = [Page(sqlite, 1), Page(sqlite, 2), Page(sqlite, 3)]
    jobs = [page.job() for page in pages]
    jobs[1].ids = frozenset({1, 2})  # shares action 1 with the first
    for job, name in zip(jobs, "abc", strict=True):
        job.hold = lambda name=name: turn(name)  # type: ignore[misc]
    with GroupWriter(sqlite) as writer:
        release = occupied(writer)
        futures = [writer.submit_page(job) for job in jobs]
        release.set()
        answers = [future.result(timeout=5) for future in futures]

    assert answers == [(1,), (2,), (3,)]
    assert held == ["+a", "-a", "+b", "+c", "-c", "-b"]  # b began the second group
    assert len(commits) == 2


def test_other_work_runs_alone_in_its_turn(sqlite: Engine, commits: list[int]) -> None:
    order: list[str] = []
    pages = [Page(sqlite, 1), Page(sqlite, 2)]
    with GroupWriter(sqlite) as writer:
        release = occupied(writer)
        first = writer.submit_page(pages[0].job())
        between = writer.submit(lambda: order.append(f"between, {stored(sqlite)} stored"))
        second = writer.submit_page(pages[1].job())
        release.set()
        first.result(timeout=5), between.result(timeout=5), second.result(timeout=5)

    assert order == ["between, [1] stored"]
    assert len(commits) == 2


def test_a_group_takes_at_most_its_number_of_pages(sqlite: Engine, commits: list[int]) -> None:
    pages = [Page(sqlite, i) for i in range(1, MOST_PAGES_A_TRANSACTION + 2)]
    with GroupWriter(sqlite) as writer:
        queued(writer, pages)

    assert len(commits) == 2
    assert stored(sqlite) == list(range(1, MOST_PAGES_A_TRANSACTION + 2))


def test_a_shut_writer_takes_no_more(sqlite: Engine) -> None:
    writer = GroupWriter(sqlite)
    writer.shutdown()

    with pytest.raises(RuntimeError, match="shut down"):
        writer.submit(print)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_first_sync_on_sqlite_commits_its_pages_in_groups(
    api: FakeApi, world: World, database_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits: list[int] = []
    real = GroupWriter._joining

    def counted(self: GroupWriter, group: list[Any]) -> Any:
        if not commits and len(group) == 1:  # the first write: another image's page comes
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not any(
                isinstance(item, PageWrite) and item.image != group[0].image
                for item in list(self._queue)
            ):
                time.sleep(0.001)
        joining = real(self, group)
        if joining is None:  # the group is complete: its transaction commits
            commits.append(len(group))
        return joining

    monkeypatch.setattr(writer_module.GroupWriter, "_joining", counted)

    run = sync(api, database_url, workers=3, per_page=50)  # a page an image

    assert run.outcome == "succeeded"
    assert without_bookkeeping(read_rows(engine)) == expected_table(world)
    assert sum(commits) == 3  # every page, each in one transaction
    assert max(commits) > 1  # another image's page joined the first


def test_no_page_of_an_image_is_written_after_one_that_could_not_be(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer holds an image's next page when the one before fails: it is not written,
    so the stored pages have no gap, and the run ends with the first failure."""
    world = World.generate(images=1, actions_per_image=80, seed=3)
    [image] = world.actions
    real = ImageScan._write

    def failing(self: ImageScan, conn: Any, items: Any, ids: Any, page: int) -> Any:
        if page == 2:
            raise RuntimeError("page 2 cannot be written")
        return real(self, conn, items, ids, page)

    monkeypatch.setattr(ImageScan, "_write", failing)
    database_url = f"sqlite:///{tmp_path / 'gap.db'}"
    with FakeApi(world, token=TOKEN) as api, pytest.raises(RuntimeError, match="page 2"):
        sync(api, database_url, workers=1)

    engine = open_engine(database_url)
    try:
        with engine.connect() as conn:
            stored = set(conn.execute(text("SELECT id FROM image_actions")).scalars())
            ledger = conn.execute(text("SELECT pages, rows_inserted FROM sync_runs")).one()
    finally:
        engine.dispose()
    assert stored == {action["id"] for action in world.actions[image][:20]}  # page 1 only
    assert tuple(ledger) == (1, 20)
