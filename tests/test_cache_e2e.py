"""The identity cache seen from outside: how many times GitHub is asked, over real sockets."""

from __future__ import annotations

import asyncio

from .support.headers import bearer
from .support.world import SECOND_APP, SECOND_ID, Gateway, GatewayFactory, World


async def test_a_hundred_concurrent_requests_with_one_new_token_make_one_check(
    gateway: Gateway, world: World
) -> None:
    token = world.github.add_token("alice", 7)
    world.github.latency = 0.2  # GitHub answers slowly, so the requests overlap
    responses = await asyncio.gather(*(gateway.client.get("/svc", headers=bearer(token)) for _ in range(100)))
    assert [r.status for r in responses] == [200] * 100
    assert world.github.check_calls(token) == 1


async def test_a_cached_identity_lasts_until_ttl(start_gateway: GatewayFactory, world: World) -> None:
    gateway = await start_gateway(cache={"ttl": "60s"})
    token = world.github.add_token("alice", 7)
    assert (await gateway.client.get("/svc", headers=bearer(token))).status == 200
    world.github.revoke(token)
    world.clock.advance(59)
    assert (await gateway.client.get("/svc", headers=bearer(token))).status == 200
    assert world.github.check_calls(token) == 1
    world.clock.advance(2)
    assert (await gateway.client.get("/svc", headers=bearer(token))).status == 401
    assert world.github.check_calls(token) == 2


async def test_an_expiring_token_is_rechecked_at_its_expires_at(
    start_gateway: GatewayFactory, world: World
) -> None:
    gateway = await start_gateway(cache={"ttl": "1h"}, github={"apps": [SECOND_APP]})
    token = world.github.add_token("monalisa", 2, client_id=SECOND_ID, expires_in=30)
    resp = await gateway.client.get("/svc", headers=bearer(token))
    assert resp.status == 200
    assert any(k == "X-Auth-Token-Expires-At" for k, _ in (await resp.json())["headers"])
    world.clock.advance(31)
    await gateway.client.get("/svc", headers=bearer(token))
    assert world.github.check_calls(token) == 2


async def test_invalid_tokens_are_remembered_for_negative_ttl(
    start_gateway: GatewayFactory, world: World
) -> None:
    gateway = await start_gateway(cache={"negative_ttl": "30s"})
    token = "gho_" + "1" * 36
    for _ in range(3):
        assert (await gateway.client.get("/svc", headers=bearer(token))).status == 401
    assert world.github.check_calls(token) == 1
    world.clock.advance(31)
    assert (await gateway.client.get("/svc", headers=bearer(token))).status == 401
    assert world.github.check_calls(token) == 2


async def test_stale_if_error_serves_a_known_identity_through_an_outage(
    start_gateway: GatewayFactory, world: World
) -> None:
    gateway = await start_gateway(cache={"ttl": "60s", "stale_if_error": "10m"})
    token = world.github.add_token("alice", 7)
    other = world.github.add_token("bob", 8)
    assert (await gateway.client.get("/svc", headers=bearer(token))).status == 200
    world.clock.advance(120)
    world.github.outage = 500
    assert (await gateway.client.get("/svc", headers=bearer(token))).status == 200
    assert (await gateway.client.get("/svc", headers=bearer(other))).status == 503


async def test_access_log_has_one_line_per_request_and_never_the_token(
    gateway: Gateway, world: World
) -> None:
    token = world.github.add_token("alice", 7)
    await gateway.client.get("/svc/x?access_token=" + token, headers=bearer(token))
    await gateway.client.get("/svc/y", headers=bearer("gho_" + "2" * 36))
    first, second = gateway.log_lines()
    assert first["user"] == "alice" and first["status"] == 200 and first["upstream_status"] == 200
    assert first["path"] == "/svc/x" and first["route"] == "/" and first["method"] == "GET"
    assert len(first["token_id"]) == 12 and first["request_id"] and first["duration_ms"] >= 0
    assert second["status"] == 401 and second["user"] is None
    assert token not in gateway.log_text()
