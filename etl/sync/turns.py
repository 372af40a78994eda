"""Pages of different images that share an action, and --full's missing marks, take turns."""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager


class Turns:
    """Let pages write side by side unless they share an action; missing marks go alone.

    An action may be listed under two images. The first image's page to commit stores it;
    a page of the other, reading it stored, leaves it with its owner and notes it in the
    run's ``listed_elsewhere``. Two pages that read it before either committed would both
    insert it: the later would take it over and both would count it new. And a --full scan
    of the owner marks what it no longer lists, less what is listed elsewhere: marking
    while the other image's page is between its read and its commit would mark missing an
    action the API lists. So (with several writers: PostgreSQL, MariaDB) a page waits for
    the pages in flight that share an action with it, and for a mark being made; a mark
    waits for every page in flight, and holds new ones off until it commits.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._pages: list[frozenset[int]] = []  # pages between reading stored rows and commit
        self._marking = False  # a mark is made, or waits for the pages in flight

    def _clear_for(self, ids: frozenset[int]) -> bool:
        return not self._marking and not any(ids & other for other in self._pages)

    @contextmanager
    def page(self, ids: Collection[int]) -> Iterator[None]:
        """Hold a page of ``ids`` from reading what is stored of them to committing."""
        mine = frozenset(ids)
        with self._changed:
            self._changed.wait_for(lambda: self._clear_for(mine))
            self._pages.append(mine)
        try:
            yield
        finally:
            with self._changed:
                self._pages.remove(mine)
                self._changed.notify_all()

    @contextmanager
    def marking(self) -> Iterator[None]:
        """Hold a scan's missing marks from reading ``listed_elsewhere`` to committing."""
        with self._changed:
            self._changed.wait_for(lambda: not self._marking)
            self._marking = True  # no page starts from here on: those in flight drain
        try:
            with self._changed:
                self._changed.wait_for(lambda: not self._pages)
            yield
        finally:
            with self._changed:
                self._marking = False
                self._changed.notify_all()
