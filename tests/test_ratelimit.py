"""Failed-authentication rate limiting: the token bucket alone, the authenticator paying for checks
from it, then end to end."""

from __future__ import annotations

import asyncio

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.auth import Authenticator
from gateway.errors import InvalidToken, TooManyRequests
from gateway.ratelimit import FailedAuthLimiter

from .support.cache import FakeChecker, ident, make
from .support.clock import FakeClock
from .support.headers import bearer
from .support.world import GatewayFactory, World


def headers(token: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(Authorization=f"Bearer {token}"))


def test_an_address_may_fail_n_times_a_minute_then_waits() -> None:
    clock = FakeClock()
    limiter = FailedAuthLimiter(3, clock=clock)
    for _ in range(3):
        assert limiter.retry_after("10.0.0.1") is None
        limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 20  # one failure refills every 60/3 s
    assert limiter.retry_after("10.0.0.2") is None
    clock.advance(20)
    assert limiter.retry_after("10.0.0.1") is None


def test_an_idle_address_starts_afresh() -> None:
    clock = FakeClock()
    limiter = FailedAuthLimiter(2, clock=clock)
    limiter.failed("a")
    limiter.failed("a")
    clock.advance(61)
    assert limiter.retry_after("a") is None
    limiter.failed("a")
    assert limiter.retry_after("a") is None


def test_a_reservation_is_taken_only_when_the_address_may_go_ahead_and_a_refund_gives_it_back() -> None:
    limiter = FailedAuthLimiter(2, clock=FakeClock())
    assert [limiter.reserve("a") for _ in range(3)] == [None, None, 30]
    limiter.refund("a")
    assert [limiter.reserve("a") for _ in range(2)] == [None, 30]


def test_refunds_never_raise_a_budget_past_its_size() -> None:
    limiter = FailedAuthLimiter(2, clock=FakeClock())
    limiter.refund("a")
    assert limiter.reserve("a") is None
    limiter.refund("a")
    limiter.refund("a")
    assert [limiter.reserve("a") for _ in range(3)] == [None, None, 30]


def test_zero_disables_the_limit() -> None:
    limiter = FailedAuthLimiter(0, clock=FakeClock())
    for _ in range(100):
        limiter.failed("a")
        assert limiter.reserve("a") is None
    assert limiter.retry_after("a") is None


async def test_requests_joining_one_check_need_no_budget_of_their_own() -> None:
    """Single flight: more concurrent requests with one new valid token than the address's budget make
    one call between them, and every one passes: only the request that makes the call reserves."""
    checker, clock = FakeChecker(), FakeClock()
    checker.known["gho_new"] = ident()
    checker.gate = asyncio.Event()
    auth = Authenticator(make(checker, clock), FailedAuthLimiter(1, clock=clock), retry_after=lambda: 5)
    requests = [asyncio.ensure_future(auth.authenticate(headers("gho_new"), client="a")) for _ in range(10)]
    await checker.entered.wait()  # the check runs after every request has joined it (FIFO scheduling)
    checker.gate.set()
    assert [caller.identity for caller in await asyncio.gather(*requests) if caller] == [ident()] * 10
    assert checker.calls == 1


async def test_each_request_joining_a_check_of_an_invalid_token_is_a_failure() -> None:
    """Every request refused 401 counts, those that shared another request's check included."""
    checker, clock = FakeChecker(), FakeClock()
    checker.gate = asyncio.Event()
    auth = Authenticator(make(checker, clock), FailedAuthLimiter(3, clock=clock), retry_after=lambda: 5)
    requests = [asyncio.ensure_future(auth.authenticate(headers("gho_bad"), client="a")) for _ in range(3)]
    await checker.entered.wait()
    checker.gate.set()
    for refused in await asyncio.gather(*requests, return_exceptions=True):
        assert isinstance(refused, InvalidToken)
    with pytest.raises(TooManyRequests):
        await auth.authenticate(headers("gho_other"), client="a")
    assert checker.calls == 1


async def test_too_many_failed_attempts_get_429_without_asking_github(
    start_gateway: GatewayFactory, world: World
) -> None:
    gateway = await start_gateway(rate_limit={"failed_auth_per_minute": 3})
    for i in range(3):
        resp = await gateway.client.get("/svc", headers=bearer(f"gho_{i}" + "0" * 35))
        assert resp.status == 401
    resp = await gateway.client.get("/svc", headers=bearer("gho_9" + "0" * 35))
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "20"
    assert (await resp.json())["error"] == "too_many_requests"
    assert world.github.check_calls() == 3
    malformed = await gateway.client.get("/svc", headers={"Authorization": "Bearer a b"})
    assert malformed.status == 429
    world.clock.advance(20)
    assert (await gateway.client.get("/svc", headers=bearer("gho_8" + "0" * 35))).status == 401


async def test_a_known_good_token_still_passes_from_a_limited_address(
    start_gateway: GatewayFactory, world: World
) -> None:
    gateway = await start_gateway(rate_limit={"failed_auth_per_minute": 1})
    good = world.github.add_token("alice", 7)
    assert (await gateway.client.get("/svc", headers=bearer(good))).status == 200
    assert (await gateway.client.get("/svc", headers=bearer("gho_" + "5" * 36))).status == 401
    assert (await gateway.client.get("/svc", headers=bearer("gho_" + "6" * 36))).status == 429
    assert (await gateway.client.get("/svc", headers=bearer(good))).status == 200
    new = world.github.add_token("alice", 7)
    assert (await gateway.client.get("/svc", headers=bearer(new))).status == 429


async def test_behind_a_trusted_proxy_each_client_has_its_own_budget(
    start_gateway: GatewayFactory, world: World
) -> None:
    gateway = await start_gateway(
        rate_limit={"failed_auth_per_minute": 1},
        server={"host": "127.0.0.1", "port": 0, "trusted_proxies": ["127.0.0.1/32"]},
    )

    def from_(addr: str, token: str) -> dict[str, str]:
        return {**bearer(token), "X-Forwarded-For": addr}

    assert (await gateway.client.get("/svc", headers=from_("198.51.100.1", "gho_" + "7" * 36))).status == 401
    assert (await gateway.client.get("/svc", headers=from_("198.51.100.1", "gho_" + "8" * 36))).status == 429
    assert (await gateway.client.get("/svc", headers=from_("198.51.100.2", "gho_" + "8" * 36))).status == 401


async def test_without_trusted_proxies_x_forwarded_for_cannot_dodge_the_limit(
    start_gateway: GatewayFactory, world: World
) -> None:
    gateway = await start_gateway(rate_limit={"failed_auth_per_minute": 1})
    first = {**bearer("gho_" + "7" * 36), "X-Forwarded-For": "198.51.100.1"}
    second = {**bearer("gho_" + "8" * 36), "X-Forwarded-For": "198.51.100.2"}
    assert (await gateway.client.get("/svc", headers=first)).status == 401
    assert (await gateway.client.get("/svc", headers=second)).status == 429
