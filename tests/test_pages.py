"""split_page: what is transformed, what is known unchanged, what is a dead letter."""

from __future__ import annotations

from etl.model import content_hash
from etl.sync.pages import split_page


def action(action_id: int, status: str = "completed") -> dict:
    return {"id": action_id, "status": status, "started_at": "2026-11-01T10:00:00Z"}


def test_an_action_stored_unchanged_is_counted_not_transformed() -> None:
    same, changed, new = action(1), action(2, "errored"), action(3)
    known = {1: content_hash(same, 7), 2: content_hash(action(2), 7)}

    split = split_page([same, changed, new], 7, 1, known)

    assert split.unchanged == 1
    assert [row["id"] for row in split.rows] == [2, 3]
    assert split.ids == [1, 2, 3]  # page order, for the newest-first check
    assert split.statuses == ["completed", "errored", "completed"]
    assert split.rejected == []


def test_an_id_listed_twice_on_a_page_is_always_transformed() -> None:
    first, second = action(1), action(1, "errored")  # the last one wins, as before

    split = split_page([first, second], 7, 1, {1: content_hash(first, 7)})

    assert split.unchanged == 0
    assert [row["status"] for row in split.rows] == ["completed", "errored"]


def test_a_known_fingerprint_under_another_image_does_not_match() -> None:
    raw = action(1)

    split = split_page([raw], 8, 1, {1: content_hash(raw, 7)})  # listed under image 8 now

    assert (split.unchanged, len(split.rows)) == (0, 1)


def test_a_known_id_whose_action_is_now_invalid_is_a_dead_letter() -> None:
    raw = {"id": 1, "started_at": "not a time"}

    split = split_page([raw, {"id": True}, ["x"]], 7, 1, {1: "0" * 32})

    assert split.rows == []
    assert [r.action_id for r in split.rejected] == [1, None, None]
    assert "not an ISO 8601 timestamp" in split.rejected[0].reason


def test_max_depth_turns_deep_nesting_into_a_dead_letter() -> None:
    deep: object = 1
    for _ in range(33):
        deep = [deep]
    raw = {"id": 4, "x": deep}

    bounded = split_page([raw], 7, 1, max_depth=32)
    unbounded = split_page([raw], 7, 1)

    assert "nests deeper than 32 levels" in bounded.rejected[0].reason
    assert [row["id"] for row in unbounded.rows] == [4]
    assert split_page([{"id": 4, "x": "[" * 40}], 7, 1, max_depth=32).rows  # brackets in text
