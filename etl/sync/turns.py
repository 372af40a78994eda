"""Writes of different images that share an action take turns."""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager


class Turns:
    """Let pages and missing marks write side by side unless they share an action.

    An action may be listed under two images. The first image's page to commit stores it;
    a page of the other, reading it stored, leaves it with its owner and notes it in the
    run's ``listed_elsewhere``. Two pages that read it before either committed would both
    insert it: the later would take it over, and both would count it new. And a --full
    scan of the owner marks what it no longer lists, less what is listed elsewhere: marking
    while the other image's page is between its read and its commit would mark missing an
    action the API lists. So (with several writers: PostgreSQL, MariaDB) a page or a mark
    waits for the ones in flight that share an action with it: a page that comes after a
    mark reads the mark, and its write clears it.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._writing: list[frozenset[int]] = []  # from reading what is stored to commit

    @contextmanager
    def turn(self, ids: Collection[int]) -> Iterator[None]:
        """Hold the actions ``ids`` from reading what is stored of them to committing."""
        mine = frozenset(ids)
        with self._changed:
            self._changed.wait_for(lambda: not any(mine & other for other in self._writing))
            self._writing.append(mine)
        try:
            yield
        finally:
            with self._changed:
                self._writing.remove(mine)
                self._changed.notify_all()
