"""Test doubles: the token the fake API accepts, and a sleep that never sleeps."""

from __future__ import annotations

TOKEN = "dop_v1_testtoken_0123456789abcdef0123456789abcdef"


class RecordingSleep:
    """A sleep that records how long it was asked to wait and returns at once."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
