"""Scripted and random misbehaviour for the tests' fake API (see scripted.py)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Fault:
    """One scripted misbehaviour for a request whose path starts with ``path``.

    It is spent on the first such request after ``skip`` of them went through.

    kind: "status" (answer ``status`` with ``headers`` and the DO error body), "truncated"
    (a 200 whose body stops halfway), "not_json" (a 200 whose body is HTML), "reset"
    (close the connection without answering), "stall" (wait ``seconds`` before answering).
    Hostile ones: "redirect" (``status`` 3xx to ``location``), "drip" (the real page, one
    byte every ``seconds``), "gzip" (the real page, gzip-compressed), "bomb" (a gzip body
    that inflates to ``size`` bytes), "raw" (``status`` with ``body`` as given), "echo"
    (``status`` with an error message that quotes the request's Authorization header),
    "headers" (the real page with ``headers`` added or replaced).
    """

    kind: str
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    location: str = ""
    body: bytes = b""
    size: int = 0
    reason: str = ""  # the status line's reason phrase, for "raw"
    path: str = "/"
    skip: int = 0  # let this many matching requests through first


# What a random fault can be: the transient failures a real API and its proxies produce.
FAULT_KINDS = (
    "500",
    "502",
    "503",
    "429",  # the per-minute limit: with retry-after
    "429-hourly",  # the hourly limit: no retry-after, wait until ratelimit-reset
    "reset",  # connection closed before any answer
    "truncated",  # the real page, cut off mid-body
    "not_json",  # a proxy's HTML error page with status 200
    "stall",  # no answer until past the client's timeout
)


@dataclass
class FaultPlan:
    """Random misbehaviour: a share of requests fail, and pages shift while being read."""

    rate: float = 0.0  # share of requests that get a fault, drawn evenly from kinds
    kinds: tuple[str, ...] = FAULT_KINDS
    shift_rate: float = 0.0  # chance that new actions are pushed to the head before a page > 1
    stall_seconds: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)  # noqa: S311  (reproducible faults, not secrets)

    def draw(self, now: float) -> Fault | None:
        """Return a fault for the next request, or None."""
        if self.rng.random() >= self.rate:
            return None
        kind = self.rng.choice(self.kinds)
        if kind == "429":  # before the numeric statuses: the per-minute 429 says when to retry
            return Fault("status", 429, headers={"retry-after": "1"})
        if kind.isdigit():
            return Fault("status", int(kind))
        if kind == "429-hourly":
            return Fault("status", 429, headers={"ratelimit-reset": str(int(now) + 2)})
        return Fault(kind, seconds=self.stall_seconds)

    def shift(self) -> int:
        """Return how many actions to push to an image's head now (usually 0)."""
        return self.rng.randint(1, 3) if self.rng.random() < self.shift_rate else 0
