"""How the API client asks the run around it: may I send now, and here is what I learned."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class RateLimits:
    """The rate-limit headers of one answer; ``remaining`` is None for a per-minute 429."""

    remaining: int | None
    limit: int | None
    reset: float | None


class Gate(Protocol):
    """What the run around the client decides: the run's coordinator implements it.

    The client calls ``open_call``/``close_call`` around a call (its attempts and
    retries) and ``open_attempt``/``close_attempt`` around each HTTP request; any of
    them may raise to stop the call. ``stop`` set means: cut requests in flight, end waits.
    """

    stop: threading.Event

    def open_call(self) -> None:
        """Before a call: may wait (the run's first call goes alone) or raise."""

    def close_call(self, error: BaseException | None) -> None:
        """After a call, with the error that ended it."""

    def open_attempt(self) -> None:
        """Before each request: may wait (pacing) or raise (stopped, deferred, refused)."""

    def close_attempt(self, limits: RateLimits | None) -> None:
        """After each request; ``limits`` when the API answered."""


class OpenGate:
    """A gate that lets every call through: a client used on its own."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self.stop = stop or threading.Event()

    def open_call(self) -> None:
        """Let the call through."""

    def close_call(self, error: BaseException | None) -> None:
        """Nothing to record."""

    def open_attempt(self) -> None:
        """Let the request through."""

    def close_attempt(self, limits: RateLimits | None) -> None:
        """Nothing to record."""
