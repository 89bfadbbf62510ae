"""The gateway's own endpoints and several apps, end to end: whoami, logout, the second app's tokens."""

from __future__ import annotations

from .support.headers import bearer, seen_headers
from .support.world import CLIENT_ID, CLIENT_SECRET, SECOND_ID, SECOND_SECRET, Gateway, GatewayFactory, World

TWO_APPS = {
    "apps": [
        {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        {"client_id": SECOND_ID, "client_secret": SECOND_SECRET},
    ]
}


async def test_logout_revokes_the_token_at_github_and_the_next_request_is_refused(
    gateway: Gateway, world: World
) -> None:
    token = world.github.add_token("alice", 7)
    assert (await gateway.client.get("/svc", headers=bearer(token))).status == 200
    resp = await gateway.client.post("/_gateway/logout", headers=bearer(token))
    assert resp.status == 200
    assert await resp.json() == {"revoked": True, "login": "alice"}
    assert world.github.live(token, CLIENT_ID) is None
    resp = await gateway.client.get("/svc", headers=bearer(token))
    assert resp.status == 401
    assert "invalid_token" in resp.headers["WWW-Authenticate"]


async def test_logout_needs_a_valid_token_and_post(gateway: Gateway, world: World) -> None:
    assert (await gateway.client.post("/_gateway/logout")).status == 401
    assert (await gateway.client.post("/_gateway/logout", headers=bearer("gho_" + "3" * 36))).status == 401
    token = world.github.add_token("alice", 7)
    resp = await gateway.client.get("/_gateway/logout", headers=bearer(token))
    assert resp.status == 405
    assert resp.headers["Allow"] == "POST"
    assert world.github.live(token, CLIENT_ID) is not None


async def test_logout_while_github_is_down_is_503_and_revokes_nothing(gateway: Gateway, world: World) -> None:
    token = world.github.add_token("alice", 7)
    assert (await gateway.client.get("/svc", headers=bearer(token))).status == 200
    world.github.outage = 502
    resp = await gateway.client.post("/_gateway/logout", headers=bearer(token))
    assert resp.status == 503
    world.github.outage = None
    assert (await gateway.client.get("/svc", headers=bearer(token))).status == 200


async def test_unknown_control_endpoint_is_404(gateway: Gateway) -> None:
    assert (await gateway.client.get("/_gateway/nothing")).status == 404


async def test_a_token_of_the_second_app_is_accepted_and_names_its_app(
    start_gateway: GatewayFactory, world: World
) -> None:
    gateway = await start_gateway(github=TWO_APPS)
    token = world.github.add_token("bob", 8, client_id=SECOND_ID)
    resp = await gateway.client.get("/svc", headers=bearer(token))
    assert resp.status == 200
    assert seen_headers(await resp.json(), "X-Auth-Client-Id") == [SECOND_ID]
    whoami = await (await gateway.client.get("/_gateway/whoami", headers=bearer(token))).json()
    assert whoami["client_id"] == SECOND_ID


async def test_logout_revokes_with_the_app_that_issued_the_token(
    start_gateway: GatewayFactory, world: World
) -> None:
    gateway = await start_gateway(github=TWO_APPS)
    token = world.github.add_token("bob", 8, client_id=SECOND_ID)
    assert (await gateway.client.post("/_gateway/logout", headers=bearer(token))).status == 200
    assert world.github.live(token, SECOND_ID) is None
    assert (await gateway.client.get("/svc", headers=bearer(token))).status == 401
