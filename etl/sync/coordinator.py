"""What the workers of one run share, decided in one place.

The stop a signal asks for, the halt a run-ending error causes, the first call that goes
alone (the probe), a fatal answer latched for every worker, the hourly budget and the
pacing of requests (one in-flight count for both), and the table from the exception that
ended a run to the run's outcome.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from etl.errors import (
    ApiError,
    ApiUnreachableError,
    AuthError,
    DeferredError,
    EtlError,
    LockedOutError,
    RunInterrupted,
    TooManyRejectedError,
)
from etl.source.gate import RateLimits
from etl.sync.ratelimit import RateLimiter

MAX_EPOCH = 253_402_300_799  # 9999-12-31: a ratelimit-reset past it is no time at all
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # what systemd, Kubernetes, Docker and Ctrl-C send
STOP_CHECK = 0.1  # a pacing wait looks at the stop this often: a signal ends it within this

# How a run ends, by the error that ended it; any other error is a failure.
ENDINGS: dict[type[BaseException], str] = {
    DeferredError: "deferred",
    RunInterrupted: "interrupted",
    TooManyRejectedError: "failed",
    LockedOutError: "failed",
}
LATCHED = (AuthError, ApiUnreachableError)  # answers no other worker can get past either


def outcome_of(error: BaseException) -> str:
    """Return the run outcome an error that ended a run stands for."""
    for kind in type(error).__mro__:
        if kind in ENDINGS:
            return ENDINGS[kind]
    return "failed"


def describe(error: BaseException) -> str:
    """Return the one sentence the ledger and the operator get for a run-ending error."""
    if isinstance(error, EtlError):
        return str(error)
    return f"unexpected error ({type(error).__name__}: {str(error)[:300]})"


class Coordinator:
    """Shared by all workers and the API client of one run (the client's ``Gate``)."""

    def __init__(
        self,
        *,
        limiter: RateLimiter,
        min_ratelimit_remaining: int = 0,
        max_wait: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stop = threading.Event()  # a signal: waits end, requests in flight are cut
        self.halt = threading.Event()  # the run is ending: no new image, no new page
        self.signal: int | None = None
        self.ended_by: BaseException | None = None  # the first run-ending error
        self.waited = 0.0  # seconds spent pacing
        self._limiter = limiter
        self._floor = min_ratelimit_remaining
        self._max_wait = max_wait  # a longer pacing wait defers the run instead
        self._clock = clock
        self._changed = threading.Condition()
        self._probe: int | None = None  # the thread whose call is the run's probe
        self._answered = False
        self._latched: ApiError | None = None
        self._remaining: int | None = None
        self._reset: float | None = None

    # -- the run ------------------------------------------------------------------------

    def interrupt(self, signum: int) -> None:
        """Stop the run for a signal. Safe in a signal handler: it only sets events."""
        self.signal = self.signal or signum
        self.halt.set()
        self.stop.set()

    def end_run(self, error: BaseException) -> None:
        """Record the first error that ends the run, and halt the other workers."""
        with self._changed:
            self.ended_by = self.ended_by or error
        self.halt.set()

    def check(self) -> None:
        """Between pages and images: raise when the run is stopping.

        Raises:
            RunInterrupted: the run halts (a signal, or another worker's error).
        """
        if self.halt.is_set():
            raise RunInterrupted("the run was asked to stop")

    def interruption(self) -> str | None:
        """Return the sentence for a signal that arrived, or None."""
        if self.signal is None:
            return None
        name = signal.Signals(self.signal).name
        return f"interrupted by {name}; pages committed so far are kept, run again to finish"

    # -- the client's gate --------------------------------------------------------------

    def open_call(self) -> None:
        """Let the run's first call go alone: a refused token or a dead API costs one call."""
        me = threading.get_ident()
        with self._changed:
            while self._probe not in (None, me) and not self._answered:
                self._changed.wait(STOP_CHECK)
                if self.stop.is_set():
                    raise RunInterrupted("the run was asked to stop")
            if self._probe is None and not self._answered:
                self._probe = me

    def close_call(self, error: BaseException | None) -> None:
        """End the probe; latch an answer that no worker can get past."""
        with self._changed:
            if isinstance(error, LATCHED):
                self._latched = self._latched or error
            if self._probe == threading.get_ident():
                self._probe = None
            self._changed.notify_all()

    def open_attempt(self) -> None:
        """Wait until a request may start within the limits, and count it in flight.

        Raises:
            RunInterrupted: the run was asked to stop.
            AuthError, ApiUnreachableError: another worker's call was refused or found
                the API down.
            DeferredError: the hourly budget left is below min_ratelimit_remaining.
        """
        with self._changed:
            while True:
                if self.stop.is_set():
                    raise RunInterrupted("the run was asked to stop")
                if self._latched is not None:
                    raise _again(self._latched)
                self._check_budget()
                now = self._clock()
                start = self._limiter.free_at(now)
                if start <= now:
                    self._limiter.start()
                    return
                if start - now > self._max_wait:
                    raise DeferredError(
                        f"the rate limit leaves no room for another request for "
                        f"{start - now:.0f} s, more than max_total_wait={self._max_wait:g}; "
                        "stopping, and the next run carries on"
                    )
                self._changed.wait(timeout=min(start - now, STOP_CHECK))
                self.waited += self._clock() - now

    def close_attempt(self, limits: RateLimits | None) -> None:
        """Count a request as ended; learn the budget from its answer."""
        with self._changed:
            self._limiter.finish(self._clock())
            if limits is not None:
                self._answered = True  # the API answered: the probe's work is done
                self._learn(limits)
            self._changed.notify_all()

    def _learn(self, limits: RateLimits) -> None:
        if limits.remaining is not None:
            # Answers to concurrent requests arrive in any order: within one window (the
            # same reset) the lowest remaining is the truest.
            same_window = limits.reset is None or limits.reset == self._reset
            known = self._remaining
            self._remaining = (
                min(known, limits.remaining)
                if known is not None and same_window
                else limits.remaining
            )
        if limits.reset is not None:
            self._reset = limits.reset
        if limits.limit is not None:
            self._limiter.lower_hourly_limit(limits.limit)

    def _check_budget(self) -> None:
        """Requests in flight count as spent: their answers will lower the remaining."""
        if self._remaining is None:
            return
        left = self._remaining - self._limiter.in_flight
        if left >= self._floor:
            return
        frees = ""
        if self._reset is not None and self._reset < MAX_EPOCH:
            frees = f"; it frees up from {datetime.fromtimestamp(self._reset, UTC):%H:%M:%S} UTC"
        raise DeferredError(
            f"the hourly API budget is nearly spent (ratelimit-remaining {left} is below "
            f"min_ratelimit_remaining {self._floor}); stopping before any 429{frees}, "
            "and the next run carries on"
        )


def _again(error: ApiError) -> ApiError:
    """Return a fresh copy of a latched error for another worker, with all its context."""
    return type(error)(str(error), status=error.status, url=error.url, request_id=error.request_id)


@contextlib.contextmanager
def stop_on_signals(coordinator: Coordinator) -> Iterator[None]:
    """Turn SIGTERM and SIGINT into a stop of the run, for the run's duration.

    The handler only sets events: workers stop before their next request, the page in
    hand commits or rolls back whole, waits end at once and requests in flight are cut.
    Outside the main thread (an embedding program) signals are left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {
        number: signal.signal(number, lambda signum, _frame: coordinator.interrupt(signum))
        for number in STOP_SIGNALS
    }
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
