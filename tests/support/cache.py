"""The identity cache over a checker that answers from a dict, on a clock the test moves."""

from __future__ import annotations

import asyncio

from gateway.config import CacheConfig
from gateway.errors import GitHubUnavailable
from gateway.identity import Identity
from gateway.identity.cache import IdentityCache

from .clock import FakeClock


class FakeChecker:
    """Answers from a dict; counts calls; can be held to release many waiters at once, or fail."""

    def __init__(self) -> None:
        self.known: dict[str, Identity] = {}
        self.calls = 0
        self.gate: asyncio.Event | None = None
        self.down = False
        self.entered = asyncio.Event()

    async def check(self, token: str) -> Identity | None:
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise GitHubUnavailable("down")
        return self.known.get(token)


def ident(expires_at: float | None = None) -> Identity:
    return Identity("alice", 1, ("repo",), expires_at, "Iv1.x")


def make(checker: FakeChecker, clock: FakeClock, **cfg: object) -> IdentityCache:
    # one clock for both monotonic and wall time keeps the arithmetic readable
    return IdentityCache(CacheConfig.model_validate(cfg), checker, clock=clock, wall_clock=clock)
