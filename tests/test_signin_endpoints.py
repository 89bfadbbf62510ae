"""The gateway's side of `gateway auth` (DESIGN §5, §12), over real sockets: what a CLI needs to sign in
(`sign-in/config`), and a GitHub App refresh token exchanged for a new token (`refresh`)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.testing.fake_github import Issued

from .support.world import CLIENT_ID, CLIENT_SECRET, SECOND_APP, SECOND_ID, Gateway, GatewayFactory, World

GITHUB_APP_FIRST = {"apps": [SECOND_APP, {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}]}


@pytest.fixture
async def gateway(start_gateway: GatewayFactory) -> Gateway:
    return await start_gateway(github=GITHUB_APP_FIRST)


@pytest.fixture
def issued(world: World) -> Issued:
    world.github.add_user("alice", 7)
    return world.github.issue("alice", client_id=SECOND_ID)


async def refresh(gateway: Gateway, **body: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
    form = body.pop("form", None)
    async with gateway.client.post("/_gateway/refresh", data=form, json=body or None) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


async def whoami(gateway: Gateway, token: str) -> int:
    async with gateway.client.get("/_gateway/whoami", headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status


async def test_sign_in_config_names_the_first_app_githubs_web_url_and_the_scopes(
    gateway: Gateway, world: World
) -> None:
    async with gateway.client.get("/_gateway/sign-in/config") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        body = await resp.json()
    assert body == {
        "client_id": SECOND_ID,
        "web_url": world.github_url,
        "api_url": world.github_url,
        "scopes": ["admin:org", "read:org"],  # every route's, in the order the routes name them
    }


async def test_a_form_refresh_token_is_exchanged_for_a_working_token(
    gateway: Gateway, issued: Issued
) -> None:
    status, body, headers = await refresh(
        gateway, form={"refresh_token": issued.refresh_token, "client_id": SECOND_ID}
    )
    assert status == 200
    assert headers["Cache-Control"] == "no-store"
    assert body["token_type"] == "bearer"
    assert body["access_token"].startswith("ghu_") and body["access_token"] != issued.access_token
    assert body["refresh_token"].startswith("ghr_") and body["refresh_token"] != issued.refresh_token
    assert body["expires_in"] == 8 * 3600 and body["refresh_token_expires_in"] > 0
    assert await whoami(gateway, body["access_token"]) == 200


async def test_a_json_refresh_token_without_client_id_is_the_first_apps(
    gateway: Gateway, issued: Issued, world: World
) -> None:
    status, body, _ = await refresh(gateway, refresh_token=issued.refresh_token)
    assert status == 200
    assert await whoami(gateway, body["access_token"]) == 200
    assert world.github.count("oauth/access-token", target="refresh_token") == 1


async def test_a_used_refresh_token_is_refused_with_401(gateway: Gateway, issued: Issued) -> None:
    assert (await refresh(gateway, refresh_token=issued.refresh_token))[0] == 200
    status, body, headers = await refresh(gateway, refresh_token=issued.refresh_token)
    assert status == 401
    assert body["error"] == "invalid_token"
    assert "gateway auth login" in body["message"]
    assert 'error="invalid_token"' in headers["WWW-Authenticate"]
    assert issued.refresh_token not in body["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"refresh_token": "not a token!"},
        {"client_id": SECOND_ID},
        {"refresh_token": "ghr_" + "a" * 36, "client_id": "Iv1.unknownapp000000"},
    ],
    ids=["malformed", "missing", "another-app"],
)
async def test_junk_is_refused_with_400(gateway: Gateway, body: dict[str, str]) -> None:
    status, answer, _ = await refresh(gateway, **body)
    assert status == 400
    assert answer["error"] == "bad_request"


async def test_a_body_that_is_not_json_is_refused_with_400(gateway: Gateway) -> None:
    async with gateway.client.post(
        "/_gateway/refresh", data=b"{", headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 400


async def test_github_down_is_503_and_the_refresh_token_is_still_good(
    gateway: Gateway, issued: Issued, world: World
) -> None:
    world.github.outage = 502
    status, body, headers = await refresh(gateway, refresh_token=issued.refresh_token)
    assert status == 503
    assert body["error"] == "github_unavailable"
    assert "Retry-After" in headers
    world.github.outage = None
    assert (await refresh(gateway, refresh_token=issued.refresh_token))[0] == 200
