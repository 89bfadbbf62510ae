"""The identity cache with a fake checker and a hand-moved clock: TTLs, negative and stale entries,
single flight, bounds."""

from __future__ import annotations

import asyncio
import gc
import json

import pytest

from gateway.errors import GitHubUnavailable
from gateway.identity import Identity, token_digest
from gateway.identity.cache import IdentityCache

from .support.cache import FakeChecker, ident, make
from .support.clock import FakeClock


async def lookup(cache: IdentityCache, token: str) -> Identity | None:
    return await cache.lookup(token, token_digest(token))


async def test_a_cached_identity_is_served_without_a_call_until_ttl() -> None:
    checker, clock = FakeChecker(), FakeClock()
    checker.known["t"] = ident()
    cache = make(checker, clock, ttl=60)
    assert await lookup(cache, "t") == ident()
    clock.now += 59
    assert await lookup(cache, "t") == ident()
    assert checker.calls == 1
    clock.now += 2
    assert await lookup(cache, "t") == ident()
    assert checker.calls == 2


async def test_ttl_never_runs_past_the_tokens_expires_at() -> None:
    checker, clock = FakeChecker(), FakeClock()
    checker.known["t"] = ident(expires_at=clock.now + 10)
    cache = make(checker, clock, ttl=300)
    await lookup(cache, "t")
    clock.now += 9
    await lookup(cache, "t")
    assert checker.calls == 1
    clock.now += 2
    assert await lookup(cache, "t") is None  # expired: GitHub's answer is ignored, it is not valid now
    assert checker.calls == 2


async def test_invalid_tokens_are_remembered_for_negative_ttl() -> None:
    checker, clock = FakeChecker(), FakeClock()
    cache = make(checker, clock, negative_ttl=30)
    assert await lookup(cache, "bad") is None
    clock.now += 29
    assert await lookup(cache, "bad") is None
    assert checker.calls == 1
    clock.now += 2
    await lookup(cache, "bad")
    assert checker.calls == 2


async def test_concurrent_lookups_of_one_token_make_one_call() -> None:
    checker, clock = FakeChecker(), FakeClock()
    checker.known["t"] = ident()
    checker.gate = asyncio.Event()
    cache = make(checker, clock)
    waiters = [asyncio.ensure_future(lookup(cache, "t")) for _ in range(100)]
    await checker.entered.wait()  # the check runs after every waiter has joined it (FIFO scheduling)
    checker.gate.set()
    assert await asyncio.gather(*waiters) == [ident()] * 100
    assert checker.calls == 1


async def test_a_cancelled_caller_does_not_cancel_the_shared_check() -> None:
    checker, clock = FakeChecker(), FakeClock()
    checker.known["t"] = ident()
    checker.gate = asyncio.Event()
    cache = make(checker, clock)
    first = asyncio.ensure_future(lookup(cache, "t"))
    second = asyncio.ensure_future(lookup(cache, "t"))
    await checker.entered.wait()
    first.cancel()
    checker.gate.set()
    assert await second == ident()
    assert checker.calls == 1


async def test_stale_identity_is_served_only_while_github_fails_and_only_for_stale_if_error() -> None:
    checker, clock = FakeChecker(), FakeClock()
    checker.known["t"] = ident()
    cache = make(checker, clock, ttl=60, stale_if_error=120)
    await lookup(cache, "t")
    clock.now += 100
    checker.down = True
    assert await lookup(cache, "t") == ident()
    clock.now += 100  # 200s after the check: past ttl + stale_if_error
    with pytest.raises(GitHubUnavailable):
        await lookup(cache, "t")


async def test_without_stale_if_error_an_outage_fails_closed() -> None:
    checker, clock = FakeChecker(), FakeClock()
    checker.known["t"] = ident()
    cache = make(checker, clock, ttl=60)
    await lookup(cache, "t")
    clock.now += 61
    checker.down = True
    with pytest.raises(GitHubUnavailable):
        await lookup(cache, "t")


async def test_the_cache_is_bounded_and_keyed_by_digest_only() -> None:
    checker, clock = FakeChecker(), FakeClock()
    cache = make(checker, clock, max_entries=10)
    for i in range(50):
        checker.known[f"tok{i}"] = ident()
        await lookup(cache, f"tok{i}")
    assert len(cache) == 10
    keys = list(cache._entries.keys())
    assert all(isinstance(k, bytes) and len(k) == 32 for k in keys)
    assert not any("tok" in repr(v) for v in cache._entries.values())


async def test_a_revoked_token_is_refused_without_a_call() -> None:
    checker, clock = FakeChecker(), FakeClock()
    checker.known["t"] = ident()
    cache = make(checker, clock, negative_ttl=30)
    await lookup(cache, "t")
    assert await cache.revoke(token_digest("t"))
    assert await lookup(cache, "t") is None
    assert checker.calls == 1


async def test_a_logout_while_github_is_being_asked_is_not_overruled_by_its_answer() -> None:
    checker, clock = FakeChecker(), FakeClock()
    checker.known["t"] = ident()
    checker.gate = asyncio.Event()
    cache = make(checker, clock, negative_ttl=30)
    in_flight = asyncio.create_task(lookup(cache, "t"))
    await checker.entered.wait()
    assert await cache.revoke(token_digest("t"))  # GitHub's answer, on its way, predates this
    checker.gate.set()
    assert await in_flight is None
    assert await lookup(cache, "t") is None
    assert checker.calls == 1


async def test_a_full_cache_drops_its_oldest_entries_first() -> None:
    checker, clock = FakeChecker(), FakeClock()
    cache = make(checker, clock, max_entries=3)
    for name in ("a", "b", "c", "d"):
        checker.known[name] = ident()
        await lookup(cache, name)
    assert checker.calls == 4
    await lookup(cache, "d")
    await lookup(cache, "b")
    assert checker.calls == 4  # b, c, d are still cached
    await lookup(cache, "a")
    assert checker.calls == 5  # a was dropped


async def test_cached_identities_with_the_same_scopes_share_one_tuple() -> None:
    checker, clock = FakeChecker(), FakeClock()
    cache = make(checker, clock)
    for name in ("a", "b"):  # equal scopes, decoded separately as GitHub's answers are
        checker.known[name] = Identity(name, 1, tuple(json.loads('["repo", "read:org"]')), None, "Iv1.x")
        await lookup(cache, name)
    first, second = (cache.fresh_identity(token_digest(name)) for name in ("a", "b"))
    assert first is not None and second is not None
    assert first.scopes == ("repo", "read:org")
    assert first.scopes is second.scopes


async def test_cached_entries_cost_the_garbage_collector_nothing() -> None:
    checker, clock = FakeChecker(), FakeClock()
    cache = make(checker, clock)
    for i in range(100):
        checker.known[f"t{i}"] = Identity(f"user{i}", 1000 + i, ("repo",), clock.now + 3600, "Iv1.x")
        await lookup(cache, f"t{i}")
    gc.collect()
    assert not any(gc.is_tracked(entry) for entry in cache._entries.values())
