"""One writer thread that commits the pages waiting for it together (SQLite's one writer).

SQLite writes one transaction at a time, so a run hands every write to one thread. With
several workers fetching, pages queue for it, and each page's own BEGIN and COMMIT (and the
thread's waits for Python's lock around them) are most of its time beyond the rows. So a
page is written in one transaction with the pages queued behind it, and those that queue
while it is written (up to MOST_PAGES_A_TRANSACTION; never two of one image, which commit
one after the other, nor two that share an action, which take turns), then one COMMIT,
then each is answered. A page is answered (and counted by its scan) only once committed,
as before; a crash loses at most the pages of one transaction, none of them counted.
Should a page's write fail, or the COMMIT, the transaction is rolled back and each of its
pages written again in a transaction of its own, so that a failure stays the failing
page's, as without grouping. A page's write notes in its scan only what writing it again
notes alike (an action listed under another image, whether the next page is likely new);
the rest is noted once it is answered (see ImageScan._written). A scan whose page could
not be written refuses its later pages, which the writer may already hold.

Any other work (a missing mark, a refresh) runs alone, in the order it came.

The log's checkpoints, which SQLite would run on the committing thread every few pages,
run beside it (etl.store.checkpoint): the writer is what the run waits for.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import Connection, Engine

from etl.store.checkpoint import Checkpointer

logger = logging.getLogger(__name__)

MOST_PAGES_A_TRANSACTION = 8  # a crash loses no more; with 4 workers, at most 4 wait

T = TypeVar("T")
W = TypeVar("W")


@dataclass(eq=False)
class PageWrite(Generic[W, T]):
    """A page's write, as a group takes it (see GroupWriter.submit_page)."""

    image: int  # two pages of an image never share a transaction: one commits, then the next
    ids: frozenset[int]  # its actions: two pages that share one never share a transaction
    hold: Callable[[], AbstractContextManager[Any]]  # held from its write to the commit
    write: Callable[[Connection], W]  # in a transaction it may share with other pages
    done: Callable[[W], T]  # once committed: its answer, and what its scan notes then
    alone: Callable[[], T]  # its write in a transaction of its own, and its answer
    future: Future[T] = field(default_factory=Future)


class GroupWriter(Executor):
    """An executor of one thread that writes the pages queued together in one transaction."""

    def __init__(
        self, engine: Engine, *, name: str = "write", checkpointer: Checkpointer | None = None
    ) -> None:
        """``checkpointer``: runs the log's checkpoints beside the writer (a new one by default)."""
        self._engine = engine
        self._checkpointer = checkpointer or Checkpointer(engine)
        self._queue: deque[PageWrite[Any, Any] | tuple[Future[Any], Callable[[], Any]] | None]
        self._queue = deque()
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"{name}_0", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Run ``fn`` alone on the writer thread, after what was submitted before."""
        future: Future[T] = Future()
        self._put((future, lambda: fn(*args, **kwargs)))
        return future

    def submit_page(self, page: PageWrite[Any, T]) -> Future[T]:
        """Write a page, in one transaction with the pages queued beside it."""
        self._put(page)
        return page.future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop once everything submitted is done (Executor's contract)."""
        del cancel_futures  # nothing is cancelled: each page is answered
        with self._changed:
            if not self._closed:
                self._closed = True
                self._queue.append(None)
                self._changed.notify()
        if wait:
            self._thread.join()

    def _put(self, item: PageWrite[Any, Any] | tuple[Future[Any], Callable[[], Any]]) -> None:
        with self._changed:
            if self._closed:
                raise RuntimeError("cannot write after the writer has shut down")
            self._queue.append(item)
            self._changed.notify()

    def _run(self) -> None:
        try:
            self._take()
        finally:  # what was committed, copied before the writer is done
            self._checkpointer.close()

    def _take(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._queue))
                item = self._queue.popleft()
            if item is None:
                return
            try:
                if isinstance(item, PageWrite):
                    self._write(item)
                else:
                    _answer(*item)
            except BaseException as exc:  # a bug of ours: no scan may wait for ever
                future = item.future if isinstance(item, PageWrite) else item[0]
                if not future.done():
                    future.set_exception(exc)

    def _joining(self, group: list[PageWrite[Any, Any]]) -> PageWrite[Any, Any] | None:
        """Take the page queued next if it may join ``group``: none of its image or actions."""
        with self._changed:
            if len(group) >= MOST_PAGES_A_TRANSACTION or not self._queue:
                return None
            page = self._queue[0]
            if not isinstance(page, PageWrite) or any(
                page.image == other.image or not page.ids.isdisjoint(other.ids) for other in group
            ):
                return None
            return cast("PageWrite[Any, Any]", self._queue.popleft())

    def _write(self, first: PageWrite[Any, Any]) -> None:
        """Write ``first``, and the pages that queue meanwhile, in one transaction."""
        group, written = [first], []
        try:
            # The turns are let go after the commit: the transaction's context exits first.
            with ExitStack() as held, self._engine.begin() as conn:
                self._checkpointer.adopt(conn)
                page: PageWrite[Any, Any] | None = first
                while page is not None:
                    held.enter_context(page.hold())
                    written.append(page.write(conn))
                    page = self._joining(group)
                    if page is not None:
                        group.append(page)
        except Exception as exc:  # each again alone: the failure is the failing page's own
            logger.debug(
                "%d pages written together failed (%s); writing each on its own",
                len(group),
                type(exc).__name__,
            )
            for page in group:
                _answer(page.future, page.alone)
            return
        except BaseException as exc:  # never leave a scan waiting: each scan raises it
            for page in group:
                page.future.set_exception(exc)
            return
        self._checkpointer.committed(len(group))
        for page, value in zip(group, written, strict=True):
            _answer(page.future, partial(page.done, value))


def _answer(future: Future[T], work: Callable[[], T]) -> None:
    """Run ``work`` and settle ``future`` with what it returns or raises."""
    if not future.set_running_or_notify_cancel():
        return
    try:
        result = work()
    except BaseException as exc:
        future.set_exception(exc)
    else:
        future.set_result(result)
