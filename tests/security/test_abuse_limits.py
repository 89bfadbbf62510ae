"""Abuse limits: guessing tokens costs the guesser (429 per client address beyond
`rate_limit.failed_auth_per_minute`), not GitHub, and no flood of junk tokens ever has more than
`github.max_concurrent_checks` calls in flight at GitHub (DESIGN §2, §4; issue 4).
"""

from __future__ import annotations

import asyncio

from aiohttp import ClientResponse

from gateway.github import WAITING_PER_SLOT

from ..conftest import Gateway, GatewayFactory, World
from .conftest import CraftedGitHub, body_of, canary, exchange, raw, statuses


def junk(i: int) -> str:
    """A well-formed token GitHub does not know."""
    return f"gho_junk{i:032d}"


async def get_svc(gateway: Gateway, token: str, *headers: str) -> bytes:
    return await exchange(gateway.port, raw("GET", "/svc", f"Authorization: Bearer {token}", *headers))


def retry_after(answer: bytes) -> int:
    head = answer.split(b"\r\n\r\n", 1)[0].decode()
    [value] = [
        line.split(":", 1)[1] for line in head.split("\r\n") if line.lower().startswith("retry-after:")
    ]
    return int(value)


async def test_rotating_x_forwarded_for_does_not_escape_the_failed_auth_limit(
    start_gateway: GatewayFactory, world: World
) -> None:
    """Rate-limit evasion by spoofed client address: without trusted proxies the peer is the client."""
    gateway = await start_gateway(rate_limit={"failed_auth_per_minute": 2})
    for i in range(2):
        assert statuses(await get_svc(gateway, junk(i), f"X-Forwarded-For: 10.0.0.{i}")) == [401]
    answer = await get_svc(gateway, junk(9), "X-Forwarded-For: 10.0.0.9")
    assert statuses(answer) == [429]
    assert body_of(answer)["error"] == "too_many_requests"
    assert retry_after(answer) >= 1
    assert world.github.check_calls() == 2


async def test_behind_a_trusted_proxy_a_spoofed_entry_neither_escapes_the_limit_nor_frames_another_client(
    start_gateway: GatewayFactory, world: World
) -> None:
    """Rate-limit evasion and lock-out by X-Forwarded-For: only the right-most untrusted entry counts."""
    gateway = await start_gateway(
        server={"host": "127.0.0.1", "port": 0, "trusted_proxies": ["127.0.0.0/8"]},
        rate_limit={"failed_auth_per_minute": 1},
    )
    assert statuses(await get_svc(gateway, junk(1), "X-Forwarded-For: 6.6.6.6, 203.0.113.7")) == [401]
    assert statuses(await get_svc(gateway, junk(2), "X-Forwarded-For: 1.1.1.1, 203.0.113.7")) == [429]
    assert statuses(await get_svc(gateway, junk(3), "X-Forwarded-For: 203.0.113.7, 203.0.113.8")) == [401]
    assert [line["client"] for line in gateway.log_lines()] == ["203.0.113.7", "203.0.113.7", "203.0.113.8"]


async def test_malformed_token_guessing_is_limited_without_calling_github(
    start_gateway: GatewayFactory, world: World
) -> None:
    """Token guessing: malformed guesses count as failures and never reach GitHub, not even at 429."""
    gateway = await start_gateway(rate_limit={"failed_auth_per_minute": 3})
    for suffix in ("!", "\\", ","):
        assert statuses(await get_svc(gateway, canary(suffix))) == [401]
    for token in (canary("!"), canary()):
        answer = await get_svc(gateway, token)
        assert statuses(answer) == [429]
        assert token.encode() not in answer
    assert world.github.check_calls() == 0


async def test_a_guesser_sharing_an_address_cannot_lock_out_a_user_whose_token_is_known(
    start_gateway: GatewayFactory, world: World
) -> None:
    """Lock-out by proxy: failures from a shared (NAT) address must not refuse a cached valid token."""
    gateway = await start_gateway(rate_limit={"failed_auth_per_minute": 1})
    token = world.github.add_token("alice", 7)
    assert statuses(await get_svc(gateway, token)) == [200]
    assert statuses(await get_svc(gateway, junk(1))) == [401]
    assert statuses(await get_svc(gateway, junk(2))) == [429]
    assert statuses(await get_svc(gateway, token)) == [200]
    assert world.github.check_calls() == 2


async def test_a_flood_of_distinct_junk_tokens_never_exceeds_max_concurrent_checks(
    start_gateway: GatewayFactory, crafted_github: CraftedGitHub
) -> None:
    """GitHub's 422 "endpoint has been spammed": a flood of distinct tokens (no cache, no single
    flight helps) must queue for max_concurrent_checks slots, and a full queue is refused at once."""
    crafted_github.answer = lambda token: (404, {"message": "Not Found"})
    crafted_github.held = asyncio.Event()
    gateway = await start_gateway(github={"api_url": crafted_github.url, "max_concurrent_checks": 1})
    overflow = 3
    flood = [
        asyncio.ensure_future(gateway.client.get("/svc", headers={"Authorization": f"Bearer {junk(i)}"}))
        for i in range(1 + WAITING_PER_SLOT + overflow)
    ]
    try:
        refused: list[ClientResponse] = []
        pending = set(flood)
        while len(refused) < overflow:  # the queue is full only once every request has reached it
            done, pending = await asyncio.wait(pending, timeout=10, return_when=asyncio.FIRST_COMPLETED)
            assert done, "the flood was never refused: nothing queues for a check slot"
            refused += [task.result() for task in done]
        assert [r.status for r in refused] == [503] * overflow
        await asyncio.wait_for(crafted_github.wait_for_calls(1), 10)
        assert (crafted_github.calls, crafted_github.in_flight) == (1, 1)
    finally:
        crafted_github.held.set()
    answered = [r.status for r in await asyncio.gather(*pending)]
    assert answered == [401] * (1 + WAITING_PER_SLOT)
    assert crafted_github.max_in_flight == 1
    assert crafted_github.calls == 1 + WAITING_PER_SLOT
