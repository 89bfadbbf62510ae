"""The one fake clock: monotonic or wall time, moved by hand."""

from __future__ import annotations


class FakeClock:
    """A clock the test moves by hand (`advance`, or `now` set outright)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
