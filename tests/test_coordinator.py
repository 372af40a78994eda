"""The run's coordinator on its own: budget, latched answers, stops and the outcome table."""

from __future__ import annotations

import threading

import pytest

from etl.errors import (
    ApiError,
    AuthError,
    DatabaseError,
    DeferredError,
    LockedOutError,
    RunInterrupted,
    TooManyRejectedError,
)
from etl.source.gate import RateLimits
from etl.sync.coordinator import Coordinator, describe, outcome_of
from etl.sync.ratelimit import RateLimiter


def coordinator(floor: int = 5, per_minute: int = 100) -> Coordinator:
    limiter = RateLimiter(per_minute=per_minute, per_hour=5000)
    return Coordinator(limiter=limiter, min_ratelimit_remaining=floor, clock=lambda: 0.0)


def test_requests_in_flight_count_against_the_budget() -> None:
    gate = coordinator(floor=5)
    gate.open_attempt()
    gate.close_attempt(RateLimits(remaining=7, limit=5000, reset=100.0))
    gate.open_attempt()  # 7 - 0 in flight
    gate.open_attempt()  # 7 - 1
    gate.open_attempt()  # 7 - 2 = 5: still at the floor

    with pytest.raises(DeferredError, match="ratelimit-remaining 4 is below") as caught:
        gate.open_attempt()  # 7 - 3 in flight
    assert "min_ratelimit_remaining 5" in str(caught.value)


def test_the_lowest_remaining_of_one_window_wins_and_a_new_window_resets_it() -> None:
    gate = coordinator(floor=5)
    for remaining, reset in ((50, 100.0), (40, 100.0), (45, 100.0)):
        gate.open_attempt()
        gate.close_attempt(RateLimits(remaining=remaining, limit=None, reset=reset))
    gate.open_attempt()
    gate.close_attempt(RateLimits(remaining=3, limit=None, reset=100.0))

    with pytest.raises(DeferredError):
        gate.open_attempt()
    gate.close_attempt(RateLimits(remaining=4000, limit=None, reset=200.0))  # a new window
    gate.open_attempt()


def test_a_per_minute_429_never_defers() -> None:
    gate = coordinator(floor=5)
    gate.open_attempt()
    gate.close_attempt(RateLimits(remaining=None, limit=5000, reset=100.0))

    gate.open_attempt()  # no DeferredError: remaining None is the per-minute 429


def test_a_latched_refusal_reaches_every_worker_with_its_context() -> None:
    gate = coordinator()
    refused = AuthError("the API refused the token", status=401, url="/v2/x", request_id="r-1")
    gate.open_call()
    gate.close_call(refused)

    with pytest.raises(AuthError) as caught:
        gate.open_attempt()

    again = caught.value
    assert again is not refused
    assert (str(again), again.status, again.url, again.request_id) == (
        "the API refused the token",
        401,
        "/v2/x",
        "r-1",
    )


def test_other_errors_are_not_latched() -> None:
    gate = coordinator()
    gate.open_call()
    gate.close_call(ApiError("GET /v2/images/1/actions failed (404)"))

    gate.open_attempt()


def test_the_first_call_goes_alone_until_the_api_answers() -> None:
    gate = coordinator()
    gate.open_call()  # this thread is the probe
    entered = threading.Event()

    def second_worker() -> None:
        gate.open_call()
        entered.set()

    worker = threading.Thread(target=second_worker)
    worker.start()
    assert not entered.wait(0.3)
    gate.open_attempt()
    gate.close_attempt(RateLimits(remaining=None, limit=None, reset=None))  # it answered
    assert entered.wait(5)
    worker.join()


def test_a_stop_ends_a_pacing_wait_and_a_probe_wait() -> None:
    gate = coordinator(per_minute=1)
    gate.open_attempt()
    gate.close_attempt(None)  # the minute is full now
    threading.Timer(0.2, gate.interrupt, args=(15,)).start()

    with pytest.raises(RunInterrupted):
        gate.open_attempt()
    assert gate.interruption() == (
        "interrupted by SIGTERM; pages committed so far are kept, run again to finish"
    )
    with pytest.raises(RunInterrupted):
        gate.check()


def test_end_run_keeps_the_first_error_and_halts() -> None:
    gate = coordinator()
    first, second = DeferredError("spent"), DatabaseError("gone")
    gate.end_run(first)
    gate.end_run(second)

    assert gate.ended_by is first
    assert gate.halt.is_set()
    assert not gate.stop.is_set()  # requests in flight finish: only a signal cuts them


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (DeferredError("x"), "deferred"),
        (RunInterrupted("x"), "interrupted"),
        (TooManyRejectedError("x"), "failed"),
        (LockedOutError("x"), "failed"),
        (AuthError("x"), "failed"),
        (DatabaseError("x"), "failed"),
        (RecursionError("x"), "failed"),
    ],
)
def test_outcome_of(error: BaseException, outcome: str) -> None:
    assert outcome_of(error) == outcome


def test_describe_says_what_a_bug_was_in_one_sentence() -> None:
    assert describe(DatabaseError("database x failed")) == "database x failed"
    assert describe(KeyError("id")) == "unexpected error (KeyError: 'id')"
