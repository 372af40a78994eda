"""Dead letters across an image's scans: each saved once a run, wherever it was listed."""

from __future__ import annotations

from etl.store.ledger import Rejected
from etl.sync.dead_letters import DeadLetters


def saved_by_scans(*scans: list[Rejected]) -> list[list[Rejected]]:
    """Return what each scan saves of its rejected actions, one page each."""
    letters, saved = DeadLetters(), []
    for rejected in scans:
        letters.new_scan()
        page = letters.unsaved(rejected)
        letters.saved(page)
        saved.append(page.rejected)
    return saved


def test_an_action_rejected_again_elsewhere_on_a_rescan_is_not_saved_again() -> None:
    first = Rejected(
        77, "page 2 action 10: started_at 'x' is not an ISO 8601 timestamp", {"id": 77}
    )
    moved = Rejected(77, "page 3 action 1: started_at 'x' is not an ISO 8601 timestamp", {"id": 77})

    assert saved_by_scans([first], [moved]) == [[first], []]


def test_what_differs_in_id_reason_or_payload_is_another_dead_letter() -> None:
    base = Rejected(None, "page 1 action 1: id must be a whole number, not str", {"id": "a"})
    others = [
        Rejected(5, "page 1 action 1: id must be a whole number, not str", {"id": "a"}),
        Rejected(None, "page 1 action 1: status must be a string", {"id": "a"}),
        Rejected(None, "page 1 action 1: id must be a whole number, not str", {"id": "b"}),
    ]

    assert saved_by_scans([base], others) == [[base], others]


def test_a_scan_that_finds_a_dead_letter_more_often_saves_the_extra_ones() -> None:
    twice = [Rejected(None, "page 1 action 1: id must be a whole number, not str", {"id": "a"})] * 2
    thrice = twice + twice[:1]

    assert [len(saved) for saved in saved_by_scans(twice[:1], thrice, twice)] == [1, 2, 0]


def test_a_payload_that_cannot_be_encoded_is_always_saved() -> None:
    odd = Rejected(9, "page 1 action 1: payload holds a lone surrogate", {"name": "\ud800"})

    assert saved_by_scans([odd], [odd]) == [[odd], [odd]]


def test_a_page_that_did_not_commit_counts_for_nothing() -> None:
    item = Rejected(77, "page 1 action 1: started_at 'x' is not an ISO 8601 timestamp", {"id": 77})
    letters = DeadLetters()
    letters.saved(letters.unsaved([item]))  # the first scan saved it
    letters.new_scan()
    letters.unsaved([item])  # the second scan's page failed: never given to saved

    assert letters.unsaved([item]).rejected == []  # the same page again: saved already
