"""Routes with `upstream_token`: the upstream sees a scoped token minted from the caller's, never theirs."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from .support.headers import bearer, seen_headers
from .support.world import BOTH_APPS, SECOND_ID, GatewayFactory, World

SPEC = {"target": "octo-org", "repositories": ["api"], "permissions": {"contents": "read"}}


def routes(world: World, **extra: Any) -> list[dict[str, Any]]:
    return [
        {"path": "/scoped", "upstream": world.upstream_url, "upstream_token": SPEC, **extra},
        {"path": "/", "upstream": world.upstream_url},
    ]


def scope_calls(world: World) -> int:
    return sum(1 for c in world.github.calls if c.op == "apps/scope-token")


async def test_upstream_sees_a_scoped_token_and_never_the_callers(
    start_gateway: GatewayFactory, world: World
) -> None:
    world.github.add_account("octo-org", 100, ["api", "web"])
    gateway = await start_gateway(github={"apps": BOTH_APPS}, routes=routes(world), pass_authorization=True)
    token = world.github.add_token("monalisa", 2, client_id=SECOND_ID)
    resp = await gateway.client.get("/scoped/x", headers=bearer(token))
    assert resp.status == 200, await resp.text()
    echo = await resp.json()
    [authorization] = seen_headers(echo, "Authorization")
    scoped = authorization.removeprefix("Bearer ")
    assert scoped != token and token not in str(echo)
    minted = world.github.lookup(scoped)
    assert minted is not None and minted.restriction is not None
    assert minted.restriction.account == "octo-org"
    assert minted.restriction.repositories == ("api",)
    assert dict(minted.restriction.permissions) == {"contents": "read"}
    assert seen_headers(echo, "X-Auth-User") == ["monalisa"]


async def test_the_scoped_token_is_minted_once_and_reused(
    start_gateway: GatewayFactory, world: World
) -> None:
    world.github.add_account("octo-org", 100, ["api"])
    gateway = await start_gateway(github={"apps": BOTH_APPS}, routes=routes(world))
    token = world.github.add_token("monalisa", 2, client_id=SECOND_ID)
    seen = set()
    for _ in range(3):
        echo = await (await gateway.client.get("/scoped", headers=bearer(token))).json()
        seen.update(seen_headers(echo, "Authorization"))
    assert len(seen) == 1
    assert scope_calls(world) == 1


async def test_a_scoped_token_is_not_used_past_its_expiry(
    start_gateway: GatewayFactory, world: World
) -> None:
    world.github.add_account("octo-org", 100, ["api"])
    gateway = await start_gateway(github={"apps": BOTH_APPS}, routes=routes(world), cache={"ttl": "1h"})
    token = world.github.add_token("monalisa", 2, client_id=SECOND_ID, expires_in=600)
    await gateway.client.get("/scoped", headers=bearer(token))
    world.clock.advance(600 - 30)  # inside the expiry margin: a new one is minted
    await gateway.client.get("/scoped", headers=bearer(token))
    assert scope_calls(world) == 2


async def test_an_oauth_app_token_on_an_upstream_token_route_is_403(
    start_gateway: GatewayFactory, world: World
) -> None:
    world.github.add_account("octo-org", 100, ["api"])
    gateway = await start_gateway(github={"apps": BOTH_APPS}, routes=routes(world))
    token = world.github.add_token("alice", 7, ["repo"])
    for _ in range(2):
        resp = await gateway.client.get("/scoped", headers=bearer(token))
        assert resp.status == 403
        assert (await resp.json())["error"] == "forbidden"
    assert scope_calls(world) == 1  # the refusal is remembered, GitHub is not asked per request
    assert (await gateway.client.get("/other", headers=bearer(token))).status == 200


async def test_a_route_whose_target_github_does_not_know_is_403_and_logged_as_config(
    start_gateway: GatewayFactory, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await start_gateway(github={"apps": BOTH_APPS}, routes=routes(world))  # no octo-org
    token = world.github.add_token("monalisa", 2, client_id=SECOND_ID)
    with caplog.at_level(logging.ERROR, logger="gateway.upstream_token"):
        for _ in range(2):
            assert (await gateway.client.get("/scoped", headers=bearer(token))).status == 403
    assert "no target 'octo-org' to scope the token to" in caplog.text and token not in caplog.text
    assert "check the route's upstream_token target" in caplog.text
    assert scope_calls(world) == 1  # remembered like any refusal


async def test_logout_revokes_the_scoped_tokens_minted_from_the_callers(
    start_gateway: GatewayFactory, world: World
) -> None:
    world.github.add_account("octo-org", 100, ["api"])
    gateway = await start_gateway(github={"apps": BOTH_APPS}, routes=routes(world))
    token = world.github.add_token("monalisa", 2, client_id=SECOND_ID)
    echo = await (await gateway.client.get("/scoped", headers=bearer(token))).json()
    scoped = seen_headers(echo, "Authorization")[0].removeprefix("Bearer ")
    assert (await gateway.client.post("/_gateway/logout", headers=bearer(token))).status == 200
    assert world.github.live(scoped, SECOND_ID) is None
    assert world.github.live(token, SECOND_ID) is None
