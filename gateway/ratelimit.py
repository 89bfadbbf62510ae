"""Failed-authentication rate limiting per client address (`rate_limit.failed_auth_per_minute`).

A token bucket per address: it holds up to N failures and refills at N per minute. While it is
empty, the address's requests get 429 instead of a check call, so guessing tokens costs the guesser,
not GitHub. A check call is paid for before it is made (`reserve`) and paid back when the token turns
out valid or GitHub gives no answer (`refund`): however many requests an address sends at once, it
makes at most N calls. Buckets live in a bounded TTL cache, so a flood of addresses cannot grow memory.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from cachetools import TTLCache

from .errors import TooManyRequests

MAX_ADDRESSES = 100_000
WINDOW = 60.0


class _Bucket:
    __slots__ = ("level", "stamp")

    def __init__(self, level: float, stamp: float) -> None:
        self.level = level  # failures still allowed
        self.stamp = stamp


class FailedAuthLimiter:
    """Counts failed authentications per client address; says when an address must wait."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._capacity = float(per_minute)
        self._rate = per_minute / WINDOW
        self._clock = clock
        self._buckets: TTLCache[str, _Bucket] = TTLCache(MAX_ADDRESSES, WINDOW, timer=clock)

    @property
    def enabled(self) -> bool:
        """False when `failed_auth_per_minute` is 0."""
        return self._capacity > 0

    def retry_after(self, client: str) -> int | None:
        """Seconds the address must wait before its next attempt, or None when it may go ahead."""
        bucket = self._refilled(client)
        if bucket is None or bucket.level >= 1:
            return None
        return max(1, math.ceil((1 - bucket.level) / self._rate))

    def reserve(self, client: str) -> int | None:
        """Take one failure from the address's budget, before the attempt is judged: None when it was
        taken, else the seconds the address must wait (and nothing is taken)."""
        wait = self.retry_after(client)
        if wait is None:
            self.failed(client)
        return wait

    def reserve_or_refuse(self, client: str) -> None:
        """`reserve`, or TooManyRequests (429 with Retry-After) when the address's budget is spent."""
        wait = self.reserve(client)
        if wait is not None:
            raise TooManyRequests("too many failed authentications from this address", retry_after=wait)

    def refund(self, client: str) -> None:
        """Give back a unit `reserve` took: the attempt turned out not to be a failure."""
        bucket = self._refilled(client)
        if bucket is not None:  # no bucket: the address's budget is full already
            bucket.level = min(self._capacity, bucket.level + 1)

    def failed(self, client: str) -> None:
        """Count one failed authentication from the address."""
        if not self.enabled:
            return
        bucket = self._refilled(client) or _Bucket(self._capacity, self._clock())
        bucket.level = max(0.0, bucket.level - 1)
        self._buckets[client] = bucket  # (re)inserting restarts its TTL: idle buckets expire full

    def _refilled(self, client: str) -> _Bucket | None:
        bucket = self._buckets.get(client)
        if bucket is not None:
            now = self._clock()
            bucket.level = min(self._capacity, bucket.level + (now - bucket.stamp) * self._rate)
            bucket.stamp = now
        return bucket
