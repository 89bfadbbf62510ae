"""Leaving a dependency alone after it failed (GitHub, Redis): a window from 1 s, doubling with each
failure, capped at 30 s, and closed by the next success."""

from __future__ import annotations

import time
from collections.abc import Callable

START, CAP = 1.0, 30.0


class Backoff:
    """How long a failing dependency is left alone; `hint` (a Retry-After) may stretch a window."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures = 0
        self._until = 0.0

    @property
    def failing(self) -> bool:
        """Whether the last outcome was a failure."""
        return self._failures > 0

    def remaining(self) -> float:
        """Seconds left in the current window (0 when none is open)."""
        return max(0.0, self._until - self._clock()) if self._failures else 0.0

    def failed(self, hint: float | None = None) -> float:
        """Count a failure; the seconds the window now has left."""
        now = self._clock()
        if now >= self._until:  # failures inside an open window are the same failure
            self._failures = min(self._failures + 1, 16)
            window = min(CAP, START * 2.0 ** (self._failures - 1))
            self._until = now + max(window, min(hint or 0.0, CAP))
        return self._until - now

    def succeeded(self) -> None:
        """Close the window: the dependency answers again."""
        self._failures, self._until = 0, 0.0
