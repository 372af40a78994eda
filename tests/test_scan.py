"""The incremental rule on its own: no HTTP, no database, every condition and any page sequence."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.sync.scan import ScanState, newest_first


def page(state: ScanState, ids: list[int], *, new: int = 0, total: int) -> bool:
    return state.add_page(ids, [], inserted=new, known=len(ids) - new, total=total)


def test_a_page_with_nothing_new_stops_a_scan_that_may_stop() -> None:
    state = ScanState(stored=10, may_stop=True)

    assert page(state, [10, 9, 8], total=10)
    assert state.received == 3


def test_a_page_whose_new_actions_end_before_a_stored_one_stops_the_scan() -> None:
    state = ScanState(stored=10, may_stop=True)

    assert page(state, [12, 11, 10], new=2, total=12)  # 10 is stored: all after it are older


def test_a_page_of_only_new_actions_does_not_stop_the_scan() -> None:
    state = ScanState(stored=10, may_stop=True)

    assert not page(state, [13, 12, 11], new=3, total=13)  # the new ones may go on


@pytest.mark.parametrize(
    ("may_stop", "ids", "new", "total", "stored"),
    [
        pytest.param(False, [10, 9, 8], 0, 10, 10, id="not-allowed"),
        pytest.param(True, [8, 9, 10], 0, 10, 10, id="not-newest-first"),
        pytest.param(True, [12, 11], 2, 12, 10, id="nothing-stored-on-the-page"),
        pytest.param(True, [10, 9, 8], 0, None, 10, id="no-meta-total"),
        pytest.param(True, [10, 9, 8], 0, 12, 10, id="meta-total-says-two-are-unseen"),
        pytest.param(True, [10, 9, 8], 0, 9, 10, id="meta-total-below-what-is-stored"),
    ],
)
def test_a_page_does_not_stop_a_scan_when_any_condition_fails(
    may_stop: bool, ids: list[int], new: int, total: int | None, stored: int
) -> None:
    state = ScanState(stored=stored, may_stop=may_stop)

    assert not page(state, ids, new=new, total=total)


def test_order_is_checked_across_pages() -> None:
    state = ScanState(stored=4, may_stop=True)

    assert not page(state, [9, 8], new=2, total=6)
    assert not page(state, [10, 3], new=1, total=6)  # 10 > 8: the listing is not newest first
    assert not page(state, [2], total=6)  # and never again in this scan
    assert not state.ordered


def test_new_actions_and_rejects_account_for_what_meta_total_adds() -> None:
    state = ScanState(stored=10, may_stop=True)

    assert not page(state, [13, 12], new=2, total=13)
    # Nothing new on this page, and the reject without an id is the third unseen action.
    assert state.add_page([11], [None], inserted=0, known=1, total=13)
    assert state.accounted == 3
    assert state.received == 4  # 13, 12, 11 and one reject without an id


def test_a_finished_scan_is_complete_when_it_saw_what_meta_total_counts() -> None:
    state = ScanState(stored=0, may_stop=False)
    page(state, [3, 2], new=2, total=4)
    page(state, [2, 1], new=1, total=4)  # 2 again: live data shifted

    assert (state.received, state.complete) == (3, False)
    state.add_page([], [7, None], inserted=0, known=0, total=4)
    assert (state.received, state.complete) == (5, False)


def test_newest_first() -> None:
    assert newest_first([5, 4, 1], None)
    assert newest_first([5, 4], 6)
    assert not newest_first([5, 4], 5)
    assert not newest_first([4, 5], None)
    assert newest_first([], 3)


@st.composite
def listings(draw: st.DrawFn) -> tuple[list[int], int, list[int], int, int]:
    """A truth (ids, newest first), how many of its newest are not stored, how it is listed."""
    truth = sorted(draw(st.sets(st.integers(1, 10_000), min_size=1, max_size=60)), reverse=True)
    new = draw(st.integers(0, len(truth)))
    order = draw(st.sampled_from(["newest-first", "oldest-first", "shuffled"]))
    listed = list(truth)
    if order == "oldest-first":
        listed.reverse()
    elif order == "shuffled":
        listed = draw(st.permutations(truth))
    per_page = draw(st.integers(1, 25))
    total = len(truth)
    if order == "newest-first":  # the order the rule checks page by page, and leans on
        total = draw(st.one_of(st.just(total), st.integers(0, 80)))  # meta.total may lie
    return listed, new, truth[new:], per_page, total


@settings(max_examples=400, deadline=None)
@given(listings())
def test_an_early_stop_never_misses_an_action_of_a_complete_stored_set(
    case: tuple[list[int], int, list[int], int, int],
) -> None:
    """Stored: every action but the ``new`` newest (the last scan was complete).

    Listed newest first, no meta.total fools it. Listed in another order, which a page
    of one action cannot show, a truthful meta.total still keeps it from stopping early.
    """
    listed, _new, stored, per_page, total = case
    state = ScanState(stored=len(stored), may_stop=True)
    known = set(stored)
    for start in range(0, len(listed), per_page):
        ids = listed[start : start + per_page]
        inserted = sum(1 for i in ids if i not in known)
        known.update(ids)
        if page(state, ids, new=inserted, total=total):
            break
    assert known == set(listed)  # nothing was left unread
