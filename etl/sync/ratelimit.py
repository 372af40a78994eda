"""The API's rate limits as sliding windows: when may the next request start?

Pure bookkeeping with no lock and no clock of its own: the run's coordinator owns it,
guards it with its lock and feeds it the time, so it can be tested with plain numbers.
"""

from __future__ import annotations

from collections import deque

MINUTE = 60.0
HOUR = 3600.0


class _Window:
    """At most ``limit`` requests in any ``length`` seconds."""

    def __init__(self, limit: int, length: float) -> None:
        self.limit = limit
        self.length = length
        self.done: deque[float] = deque()  # completion times of finished requests

    def free_at(self, now: float, in_flight: int) -> float:
        """Return when a new request may start (``now`` when it may start at once)."""
        while self.done and self.done[0] <= now - self.length:
            self.done.popleft()
        if len(self.done) + in_flight < self.limit:
            return now
        if not self.done:
            return now + self.length  # every slot is in flight: look again when one ends
        return self.done[0] + self.length


class RateLimiter:
    """The per-minute and per-hour windows of one token, shared by all workers of a run.

    A request counts from its start (in flight) and is stamped at its completion, which is
    never before the server counted it: so our count of the last minute is never below
    the server's, and a full window frees a slot only once the server's has too. A run
    bursts up to the limit, then goes on at the limit's pace.
    """

    def __init__(self, *, per_minute: int, per_hour: int, minute: float = MINUTE) -> None:
        self._windows = [_Window(per_minute, minute), _Window(per_hour, HOUR)]
        self.in_flight = 0  # the one count of requests under way, also the budget's

    def free_at(self, now: float) -> float:
        """Return when the next request may start."""
        return max(window.free_at(now, self.in_flight) for window in self._windows)

    def start(self) -> None:
        """Count a request as in flight."""
        self.in_flight += 1

    def finish(self, now: float) -> None:
        """Record that a request in flight has ended at ``now``."""
        self.in_flight -= 1
        for window in self._windows:
            window.done.append(now)

    def lower_hourly_limit(self, limit: int) -> None:
        """Adopt the hourly limit the API reports (ratelimit-limit) when it is lower."""
        hourly = self._windows[1]
        hourly.limit = min(hourly.limit, max(limit, 1))
