"""Browser sign-in (DESIGN §12): a browser without credentials on a `browser_login` route goes through
GitHub's web flow (the fake's, with PKCE and state) and comes back with a session cookie that
authenticates it like a bearer token; what a tampered, stolen-state or mis-aimed request gets."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from gateway.config import SessionsConfig
from gateway.sessions import Sealer, Session

from .support.headers import bearer
from .support.sockets import free_port
from .support.world import CLIENT_ID, SECOND_APP, SECOND_ID, Gateway, GatewayFactory, World

SECRET = "correct horse battery staple, but longer"
OLD_SECRET = "an older secret of thirty-two characters"
HTML = {"Accept": "text/html,application/xhtml+xml"}


def _config(world: World, port: int, **sessions: Any) -> dict[str, Any]:
    return {
        "port": port,
        "server": {"public_url": f"http://127.0.0.1:{port}"},
        "sessions": {"cookie_secret": SECRET, **sessions},
        "routes": [
            {"path": "/app", "upstream": world.upstream_url, "browser_login": True},
            {"path": "/", "upstream": world.upstream_url},
        ],
    }


async def _signed_in_gateway(start_gateway: GatewayFactory, world: World, **overrides: Any) -> Gateway:
    world.github.add_token("alice", 7, ["read:org"])  # alice exists at the fake GitHub
    world.github.flows.auto_approve = "alice"
    return await start_gateway(**{**_config(world, free_port()), **overrides})


def _browser() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers=HTML)


async def _sign_in(browser: aiohttp.ClientSession, gateway: Gateway, path: str = "/app/page?x=1") -> Any:
    async with browser.get(gateway.client.make_url(path)) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def _session_cookie(gateway: Gateway) -> str:
    """The session cookie a browser holds once signed in."""
    async with _browser() as browser:
        await _sign_in(browser, gateway)
        return next(c.value for c in browser.cookie_jar if c.key == "gateway_session")


async def test_a_browser_signs_in_through_github_and_sees_the_upstream(
    start_gateway: GatewayFactory, world: World
) -> None:
    gateway = await _signed_in_gateway(start_gateway, world)
    async with _browser() as browser:
        async with browser.get(gateway.client.make_url("/app/page?x=1"), allow_redirects=False) as first:
            assert first.status == 302
            assert first.headers["Location"] == "/_gateway/sign-in?rd=%2Fapp%2Fpage%3Fx%3D1"

        echoed = await _sign_in(browser, gateway)

        assert echoed["path"] == "/app/page?x=1"
        headers = dict(echoed["headers"])
        assert headers["X-Auth-User"] == "alice"
        assert "gateway_session" not in headers.get("Cookie", "")  # SECURITY: never upstream
        again = await _sign_in(browser, gateway, "/other")  # the cookie works on every route
        assert dict(again["headers"])["X-Auth-User"] == "alice"
        async with browser.get(gateway.client.make_url("/_gateway/whoami")) as whoami:
            assert (await whoami.json())["login"] == "alice"
    assert world.github.count("oauth/access-token", target="authorization_code") == 1


async def test_the_session_cookie_is_httponly_lax_and_bounded(
    start_gateway: GatewayFactory, world: World
) -> None:
    gateway = await _signed_in_gateway(
        start_gateway, world, sessions={"cookie_secret": SECRET, "max_age": "1h"}
    )
    async with _browser() as browser:
        await _sign_in(browser, gateway)
        cookie = next(c for c in browser.cookie_jar if c.key == "gateway_session")

    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert cookie["path"] == "/"
    assert 3590 <= int(cookie["max-age"]) <= 3600
    assert not cookie["secure"]  # public_url is http here; https makes it Secure (below)


async def test_api_clients_on_a_browser_login_route_still_get_401(
    start_gateway: GatewayFactory, world: World
) -> None:
    gateway = await _signed_in_gateway(start_gateway, world)

    resp = await gateway.client.get("/app", headers={"Accept": "application/json"})
    posted = await gateway.client.post("/app", headers=HTML)

    assert resp.status == 401 and posted.status == 401
    assert resp.headers["Link"] == '</_gateway/sign-in/config>; rel="help"'
    assert "gateway auth login --gateway http://127.0.0.1:" in (await resp.json())["message"]


async def test_a_callback_whose_state_is_not_this_browsers_is_refused(
    start_gateway: GatewayFactory, world: World
) -> None:
    gateway = await _signed_in_gateway(start_gateway, world)
    async with _browser() as browser, _browser() as other:
        async with browser.get(
            gateway.client.make_url("/_gateway/sign-in?rd=/app"), allow_redirects=False
        ) as r:
            authorize = urlsplit(r.headers["Location"])
        query = parse_qs(authorize.query)
        assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
        async with browser.get(r.headers["Location"], allow_redirects=False) as approved:
            callback = approved.headers["Location"]
        state = parse_qs(urlsplit(callback).query)["state"][0]

        forged = callback.replace(state, state[:-2] + ("AA" if not state.endswith("AA") else "BB"))
        async with browser.get(forged, allow_redirects=False) as wrong_state:
            assert wrong_state.status == 400
        async with other.get(callback, allow_redirects=False) as another_browser:
            assert another_browser.status == 400
        async with browser.get(callback, allow_redirects=False) as right:
            assert right.status == 302 and right.headers["Location"].endswith("/app")
        async with browser.get(callback, allow_redirects=False) as replayed:
            assert replayed.status == 400


@pytest.mark.parametrize(
    "rd",
    [
        "//evil.example/x",
        "https://evil.example/",
        "/\\evil.example",
        "http:/evil.example",
        "/\r\nSet-Cookie:x=y",
        "x",
        "/\tevil",
    ],
)
async def test_sign_in_never_redirects_to_another_origin(
    rd: str, start_gateway: GatewayFactory, world: World
) -> None:
    gateway = await _signed_in_gateway(start_gateway, world)

    resp = await gateway.client.get("/_gateway/sign-in", params={"rd": rd}, allow_redirects=False)

    assert resp.status == 400, resp.headers.get("Location")


async def test_a_tampered_or_foreign_cookie_counts_as_no_credentials(
    start_gateway: GatewayFactory, world: World
) -> None:
    gateway = await _signed_in_gateway(start_gateway, world)
    value = await _session_cookie(gateway)
    flipped = value[:-5] + ("A" if value[-5] != "A" else "B") + value[-4:]
    other_key = Sealer(SessionsConfig(cookie_secret=OLD_SECRET)).seal("session", {"t": "x", "until": 2e9})
    for cookie in (flipped, other_key, "v1.garbage", value + "x"):
        resp = await gateway.client.get("/x", headers={"Cookie": f"gateway_session={cookie}"})
        assert resp.status == 401, cookie


async def test_cookies_sealed_with_a_previous_secret_still_open(
    start_gateway: GatewayFactory, world: World
) -> None:
    token = world.github.add_token("alice", 7, ["read:org"])
    old = Sealer(SessionsConfig(cookie_secret=OLD_SECRET))
    cookie = {"Cookie": "gateway_session=" + old.seal_session(Session(token, None, None, None, 2e9))}
    rotated = await start_gateway(**_config(world, free_port(), previous_cookie_secrets=[OLD_SECRET]))
    forgotten = await start_gateway(**_config(world, free_port()))

    assert (await rotated.client.get("/x", headers=cookie)).status == 200
    assert (await forgotten.client.get("/x", headers=cookie)).status == 401


async def test_the_upstream_gets_the_callers_other_cookies_but_never_the_session(
    start_gateway: GatewayFactory, world: World
) -> None:
    gateway = await _signed_in_gateway(start_gateway, world)
    value = await _session_cookie(gateway)
    cookie = f"theme=dark; gateway_session={value}; GATEWAY_SESSION=x; lang=en"

    echoed = await (await gateway.client.get("/x", headers={"Cookie": cookie})).json()

    assert [v for k, v in echoed["headers"] if k == "Cookie"] == ["theme=dark; lang=en"]
    assert dict(echoed["headers"])["X-Auth-User"] == "alice"


async def test_an_authorization_header_wins_over_the_cookie(
    start_gateway: GatewayFactory, world: World
) -> None:
    gateway = await _signed_in_gateway(start_gateway, world)
    bob = world.github.add_token("bob", 8)
    async with _browser() as browser:
        await _sign_in(browser, gateway)
        async with browser.get(gateway.client.make_url("/x"), headers=bearer(bob)) as resp:
            assert dict((await resp.json())["headers"])["X-Auth-User"] == "bob"
        async with browser.get(gateway.client.make_url("/x"), headers=bearer("gho_" + "0" * 36)) as resp:
            assert resp.status == 401


async def test_logout_revokes_the_token_and_clears_the_cookie(
    start_gateway: GatewayFactory, world: World
) -> None:
    gateway = await _signed_in_gateway(start_gateway, world)
    async with _browser() as browser:
        await _sign_in(browser, gateway)
        value = next(c.value for c in browser.cookie_jar if c.key == "gateway_session")
        async with browser.post(gateway.client.make_url("/_gateway/logout")) as resp:
            assert resp.status == 200
            assert (
                "gateway_session=;" in resp.headers["Set-Cookie"]
                and "Max-Age=0" in resp.headers["Set-Cookie"]
            )
        assert not [c for c in browser.cookie_jar if c.key == "gateway_session"]
    kept = await gateway.client.get("/x", headers={"Cookie": f"gateway_session={value}"})
    assert kept.status == 401  # the token itself was revoked at GitHub


async def test_an_expiring_github_app_token_is_refreshed_once_and_the_cookie_reissued(
    start_gateway: GatewayFactory, world: World
) -> None:
    world.github.add_token("monalisa", 2, client_id=SECOND_ID)
    issued = world.github.issue("monalisa", client_id=SECOND_ID)
    gateway = await start_gateway(**_config(world, free_port()), github={"apps": [SECOND_APP]})
    now = time.time()
    expiring = Session(issued.access_token, issued.refresh_token, now + 60, now + 3600, now + 7200)
    cookie = {
        "Cookie": "gateway_session=" + Sealer(SessionsConfig(cookie_secret=SECRET)).seal_session(expiring)
    }

    answers = await asyncio.gather(*(gateway.client.get("/x", headers=cookie) for _ in range(5)))

    assert [a.status for a in answers] == [200] * 5
    assert world.github.count("oauth/access-token", target="refresh_token") == 1
    reissued = {a.headers["Set-Cookie"] for a in answers}
    assert len(reissued) >= 1 and all("gateway_session=v1." in c for c in reissued)
    fresh = next(iter(reissued)).split(";")[0]
    again = await gateway.client.get("/x", headers={"Cookie": fresh})
    assert again.status == 200 and "Set-Cookie" not in again.headers
    assert dict((await again.json())["headers"])["X-Auth-User"] == "monalisa"


async def test_sign_in_config_tells_a_cli_what_it_needs(start_gateway: GatewayFactory, world: World) -> None:
    gateway = await start_gateway(routes=[{"path": "/", "upstream": world.upstream_url, "scopes": ["repo"]}])

    resp = await gateway.client.get("/_gateway/sign-in/config")

    assert await resp.json() == {
        "client_id": CLIENT_ID,
        "web_url": world.github_url,
        "api_url": world.github_url,
        "scopes": ["repo"],
    }
    assert (await gateway.client.get("/_gateway/sign-in")).status == 404  # no sessions configured


async def test_cookies_are_secure_behind_an_https_public_url(
    start_gateway: GatewayFactory, world: World
) -> None:
    config = _config(world, free_port())
    gateway = await start_gateway(**{**config, "server": {"public_url": "https://gw.example.com"}})

    resp = await gateway.client.get("/_gateway/sign-in", params={"rd": "/app"}, allow_redirects=False)

    assert resp.status == 302
    assert "redirect_uri=https%3A%2F%2Fgw.example.com%2F_gateway%2Fcallback" in resp.headers["Location"]
    state = resp.headers["Set-Cookie"]
    assert state.startswith("gateway_session_signin=v1.") and "; Path=/_gateway;" in state
    assert state.endswith("; HttpOnly; SameSite=Lax; Secure")


async def test_codes_github_refuses_spend_the_failed_auth_budget(
    start_gateway: GatewayFactory, world: World
) -> None:
    gateway = await _signed_in_gateway(start_gateway, world, rate_limit={"failed_auth_per_minute": 2})
    statuses = []
    async with _browser() as browser:
        for _ in range(3):
            start = gateway.client.make_url("/_gateway/sign-in?rd=/app")
            async with browser.get(start, allow_redirects=False) as started:
                authorize = started.headers["Location"]
            async with browser.get(authorize, allow_redirects=False) as approved:
                callback = approved.headers["Location"]
            junk = callback.replace("code=", "code=junk")
            async with browser.get(junk, allow_redirects=False) as resp:
                statuses.append(resp.status)

    assert statuses == [400, 400, 429]
    assert world.github.count("oauth/access-token", target="authorization_code") == 2


async def test_forward_auth_sends_a_browser_to_sign_in_back_to_the_original_request(
    start_gateway: GatewayFactory, world: World
) -> None:
    gateway = await _signed_in_gateway(start_gateway, world)
    original = {"X-Original-URI": "/app/page?x=1", "X-Original-Method": "GET"}

    browser = await gateway.client.get("/_gateway/auth", headers={**HTML, **original}, allow_redirects=False)
    api = await gateway.client.get("/_gateway/auth", headers=original, allow_redirects=False)

    assert browser.status == 302
    assert browser.headers["Location"] == "/_gateway/sign-in?rd=%2Fapp%2Fpage%3Fx%3D1"
    assert api.status == 401
