"""The admin listener's answers: health, readiness from what is already known, metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.admin import Readiness, admin_app

from .support.headers import bearer
from .support.metrics import value
from .support.world import GatewayFactory, World

Client = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


async def test_readiness_follows_github_and_draining(aiohttp_client: Client) -> None:
    problem: list[str | None] = [None]
    readiness = Readiness(lambda: problem[0])
    client = await aiohttp_client(admin_app(readiness))
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    problem[0] = "GitHub is backed off after failing; next try in 3s"
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["problems"] == ["github: GitHub is backed off after failing; next try in 3s"]
    problem[0] = None
    readiness.draining = True
    assert (await client.get("/readyz")).status == 503
    assert (await client.get("/healthz")).status == 200


async def test_requests_decisions_cache_and_github_calls_are_counted(
    start_gateway: GatewayFactory, world: World, aiohttp_client: Client
) -> None:
    gateway = await start_gateway()
    token = world.github.add_token("alice", 7)
    before: dict[str, Any] = {
        "ok": value("gateway_requests_total", route="/", code="200"),
        "allowed": value("gateway_auth_decisions_total", result="allowed"),
        "hit": value("gateway_cache_lookups_total", tier="memory", result="hit"),
        "miss": value("gateway_cache_lookups_total", tier="memory", result="miss"),
        "calls": value("gateway_github_calls_total", endpoint="apps/check-token", code="200"),
        "timed": value("gateway_github_call_duration_seconds_count", endpoint="apps/check-token"),
        "scope": value("gateway_auth_decisions_total", result="insufficient_scope"),
    }
    for _ in range(3):
        assert (await gateway.client.get("/svc", headers=bearer(token))).status == 200
    assert (await gateway.client.get("/admin", headers=bearer(token))).status == 403
    assert value("gateway_requests_total", route="/", code="200") - before["ok"] == 3
    assert value("gateway_auth_decisions_total", result="allowed") - before["allowed"] == 3
    assert value("gateway_cache_lookups_total", tier="memory", result="miss") - before["miss"] == 1
    assert value("gateway_cache_lookups_total", tier="memory", result="hit") - before["hit"] == 3
    assert value("gateway_github_calls_total", endpoint="apps/check-token", code="200") - before["calls"] == 1
    assert (
        value("gateway_github_call_duration_seconds_count", endpoint="apps/check-token") - before["timed"]
        == 1
    )
    assert value("gateway_auth_decisions_total", result="insufficient_scope") - before["scope"] == 1
    client = await aiohttp_client(admin_app(Readiness(lambda: None)))
    text = await (await client.get("/metrics")).text()
    assert "gateway_request_duration_seconds_bucket" in text and token not in text


async def test_upstream_failures_are_counted_by_route_and_kind(
    start_gateway: GatewayFactory, world: World, unused_tcp_port: int
) -> None:
    dead = f"http://127.0.0.1:{unused_tcp_port}"  # nothing listens there
    gateway = await start_gateway(routes=[{"path": "/gone", "upstream": dead, "auth": "none"}])
    before = value("gateway_upstream_errors_total", route="/gone", kind="unreachable")
    assert (await gateway.client.get("/gone/x")).status == 502
    assert value("gateway_upstream_errors_total", route="/gone", kind="unreachable") - before == 1
