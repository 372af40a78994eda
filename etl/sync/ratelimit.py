"""Pace requests from every worker so a run stays inside the API's rate limits."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from etl.errors import RunInterrupted

MINUTE = 60.0
HOUR = 3600.0
STOP_CHECK = 0.1  # a wait looks at the stop event this often: a signal ends it within this


class _Window:
    """A sliding window: at most ``limit`` requests in any ``length`` seconds."""

    def __init__(self, limit: int, length: float) -> None:
        self.limit = limit
        self.length = length
        self.done: deque[float] = deque()  # completion times of finished requests
        self.in_flight = 0

    def free_at(self, now: float) -> float:
        """Return when a new request may start (``now`` when it may start at once)."""
        while self.done and self.done[0] <= now - self.length:
            self.done.popleft()
        if len(self.done) + self.in_flight < self.limit:
            return now
        if not self.done:
            return now + self.length  # all slots are in flight: look again soon
        return self.done[0] + self.length


class RateLimiter:
    """Shared by all workers of a run: waits before a request that would pass a limit.

    Each window counts requests in flight and stamps each at its completion, which is
    never before the server counted it: so our count of the last minute is never below
    the server's, and a full window frees a slot only once the server's has too. It lets
    a run burst up to the limit, then go on at the limit's pace.
    """

    def __init__(
        self,
        *,
        per_minute: int,
        per_hour: int,
        clock: Callable[[], float] = time.monotonic,
        minute: float = MINUTE,
        stop: threading.Event | None = None,
    ) -> None:
        self._windows = [_Window(per_minute, minute), _Window(per_hour, HOUR)]
        self._clock = clock
        self._changed = threading.Condition()
        self._stop = stop or threading.Event()
        self.waited = 0.0

    def acquire(self) -> None:
        """Block until a request may start, and count it as in flight.

        Raises:
            RunInterrupted: the run was asked to stop while waiting.
        """
        with self._changed:
            while True:
                if self._stop.is_set():
                    raise RunInterrupted("the run was asked to stop")
                now = self._clock()
                start = max(window.free_at(now) for window in self._windows)
                if start <= now:
                    break
                self._changed.wait(timeout=min(start - now, STOP_CHECK))
                self.waited += self._clock() - now
            for window in self._windows:
                window.in_flight += 1

    def release(self) -> None:
        """Record that the request started by the last acquire() has finished."""
        with self._changed:
            now = self._clock()
            for window in self._windows:
                window.in_flight -= 1
                window.done.append(now)
            self._changed.notify_all()

    def lower_hourly_limit(self, limit: int) -> None:
        """Adopt the hourly limit the API reports (ratelimit-limit) when it is lower."""
        with self._changed:
            hourly = self._windows[1]
            hourly.limit = min(hourly.limit, max(limit, 1))
