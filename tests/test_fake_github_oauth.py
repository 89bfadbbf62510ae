"""The fake GitHub's device and web flows over real sockets, as a CLI and a browser see them: the token
endpoint's answers and errors in each encoding, the device page and the consent page submitted as a
browser submits their forms, PKCE, state, redirect_uri rules, refresh tokens."""

from __future__ import annotations

import secrets
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.testing.fake_github import FakeGitHub
from gateway.testing.fake_github_oauth import DEVICE_GRANT, s256

from .support.browser import form_of
from .support.clock import FakeClock

OAUTH, GITHUB = "Ov23liA1b2C3d4E5f6G7", "Iv23liGitHubApp00001"
SECRETS = {OAUTH: "oauth-secret", GITHUB: "app-secret"}
CALLBACK = "http://gw.example/_gateway/callback"
JSON = {"Accept": "application/json"}


@dataclass
class Site:
    fake: FakeGitHub
    url: str
    session: aiohttp.ClientSession
    clock: FakeClock

    async def post(self, path: str, data: dict[str, str], headers: dict[str, str] | None = None) -> Any:
        """POST a form; the answer as JSON (asked for with Accept unless `headers` say otherwise)."""
        async with self.session.post(self.url + path, data=data, headers=headers or JSON) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def token(self, **fields: str) -> Any:
        return await self.post("/login/oauth/access_token", fields)

    async def device_code(self, client_id: str, scope: str = "") -> Any:
        return await self.post("/login/device/code", {"client_id": client_id, "scope": scope})

    async def poll(self, client_id: str, device_code: str) -> Any:
        return await self.token(client_id=client_id, device_code=device_code, grant_type=DEVICE_GRANT)

    async def page(self, path: str, **query: str) -> tuple[int, str, str]:
        """GET a page: its status, body, and where it redirects (no redirect followed)."""
        async with self.session.get(self.url + path, params=query, allow_redirects=False) as resp:
            return resp.status, await resp.text(), resp.headers.get("Location", "")

    async def submit(self, page: str, button: str, **typed: str) -> tuple[int, str, str]:
        """Click a button of the page's form, as a browser does."""
        form = form_of(page)
        assert form.method == "post"
        data = form.submit(button, **typed)
        async with self.session.post(self.url + form.action, data=data, allow_redirects=False) as resp:
            return resp.status, await resp.text(), resp.headers.get("Location", "")


@pytest.fixture
async def site(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> AsyncIterator[Site]:
    clock = FakeClock(1_700_000_000.0)
    fake = FakeGitHub(SECRETS, clock=clock)
    fake.register_app(GITHUB, SECRETS[GITHUB], callback_urls=[CALLBACK])
    fake.add_user("octocat", 1)
    fake.add_user("monalisa", 2)
    server = await aiohttp_server(fake.app())
    async with aiohttp.ClientSession() as session:
        yield Site(fake, str(server.make_url("")).rstrip("/"), session, clock)


def query_of(location: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))


# ---------------------------------------------------------------------------------------------------
# The device flow


async def test_device_code_answers_as_github_does(site: Site) -> None:
    answer = await site.device_code(OAUTH, "repo read:org")
    assert set(answer) == {"device_code", "user_code", "verification_uri", "expires_in", "interval"}
    assert len(answer["device_code"]) == 40 and int(answer["device_code"], 16) >= 0
    code = answer["user_code"]
    assert len(code) == 9 and code[4] == "-" and code.replace("-", "").isalpha() and code.isupper()
    assert answer["verification_uri"] == f"{site.url}/login/device"
    assert (answer["expires_in"], answer["interval"]) == (900, 5)


async def test_device_flow_pending_slow_down_approved_token(site: Site) -> None:
    device = await site.device_code(OAUTH, "repo read:org")
    assert (await site.poll(OAUTH, device["device_code"]))["error"] == "authorization_pending"
    too_soon = await site.poll(OAUTH, device["device_code"])
    assert (too_soon["error"], too_soon["interval"]) == ("slow_down", 10)
    site.clock.advance(10)
    assert (await site.poll(OAUTH, device["device_code"]))["error"] == "authorization_pending"
    status, page, _ = await site.page("/login/device")
    assert status == 200 and form_of(page).fields["login"] == "octocat"  # who is at the browser
    status, done, _ = await site.submit(page, "approve", user_code=device["user_code"].lower())
    assert status == 200 and "all set" in done
    site.clock.advance(10)
    token = await site.poll(OAUTH, device["device_code"])
    assert token == {"access_token": token["access_token"], "scope": "repo,read:org", "token_type": "bearer"}
    entry = site.fake.live(token["access_token"], OAUTH)
    assert entry is not None and (entry.login, entry.scopes) == ("octocat", ("repo", "read:org"))
    site.clock.advance(10)
    assert (await site.poll(OAUTH, device["device_code"]))["error"] == "incorrect_device_code"  # used


async def test_a_github_app_device_flow_gives_an_expiring_token_and_a_refresh_token(site: Site) -> None:
    device = await site.device_code(GITHUB, "repo")  # a GitHub App's token has no scopes, whatever is asked
    site.fake.flows.approve_device(login="monalisa")
    token = await site.poll(GITHUB, device["device_code"])
    assert token["access_token"].startswith("ghu_") and token["refresh_token"].startswith("ghr_")
    assert (token["expires_in"], token["refresh_token_expires_in"], token["scope"]) == (28800, 15897600, "")
    entry = site.fake.live(token["access_token"], GITHUB)
    assert entry is not None and entry.login == "monalisa" and entry.expires_at == site.clock.now + 28800


async def test_device_flow_denied_at_the_device_page(site: Site) -> None:
    device = await site.device_code(OAUTH)
    _, page, _ = await site.page("/login/device", user_code=device["user_code"])
    assert form_of(page).fields["user_code"] == device["user_code"]
    status, text, _ = await site.submit(page, "deny")
    assert status == 200 and "cancelled" in text
    assert (await site.poll(OAUTH, device["device_code"]))["error"] == "access_denied"


async def test_device_page_refuses_an_unknown_code_or_user(site: Site) -> None:
    device = await site.device_code(OAUTH)
    _, page, _ = await site.page("/login/device")
    assert (await site.submit(page, "approve", user_code="BCDF-GHJK"))[0] == 404
    assert (await site.submit(page, "approve", user_code=device["user_code"], login="nobody"))[0] == 422
    assert (await site.poll(OAUTH, device["device_code"]))["error"] == "authorization_pending"


async def test_device_code_expires_after_15_minutes(site: Site) -> None:
    device = await site.device_code(OAUTH)
    site.clock.advance(900)
    assert (await site.poll(OAUTH, device["device_code"]))["error"] == "expired_token"
    with pytest.raises(LookupError):
        site.fake.flows.approve_device(device["user_code"])


async def test_device_flow_refusals(site: Site) -> None:
    device = await site.device_code(OAUTH)
    assert (await site.poll(GITHUB, device["device_code"]))["error"] == "incorrect_device_code"
    assert (await site.poll(OAUTH, "0" * 40))["error"] == "incorrect_device_code"
    assert (await site.poll("Ov23liUnknown0000000", device["device_code"]))["error"] == (
        "incorrect_client_credentials"
    )
    async with site.session.post(f"{site.url}/login/device/code", data={"client_id": "nope"}) as resp:
        assert resp.status == 404
    site.fake.register_app(OAUTH, SECRETS[OAUTH], device_flow=False)
    async with site.session.post(
        f"{site.url}/login/device/code", data={"client_id": OAUTH}, headers=JSON
    ) as resp:
        assert (resp.status, (await resp.json())["error"]) == (400, "device_flow_disabled")
    assert (await site.poll(OAUTH, device["device_code"]))["error"] == "device_flow_disabled"


async def test_auto_approve_approves_device_codes_as_they_are_issued(site: Site) -> None:
    site.fake.flows.auto_approve = "monalisa"
    device = await site.device_code(OAUTH, "gist")
    token = await site.poll(OAUTH, device["device_code"])
    entry = site.fake.live(token["access_token"], OAUTH)
    assert entry is not None and (entry.login, entry.scopes) == ("monalisa", ("gist",))


# ---------------------------------------------------------------------------------------------------
# The web flow


def authorize_query(client_id: str = GITHUB, **extra: str) -> dict[str, str]:
    return {"client_id": client_id, "redirect_uri": CALLBACK, "state": "st4te", **extra}


async def consent(site: Site, verifier: str | None = None, **extra: str) -> str:
    """Ask for the consent page, approve it as a browser does, and return the code it redirects with."""
    if verifier is not None:
        extra |= {"code_challenge": s256(verifier), "code_challenge_method": "S256"}
    status, page, _ = await site.page("/login/oauth/authorize", **authorize_query(**extra))
    assert status == 200, page
    status, _, location = await site.submit(page, "approve")
    assert status == 302 and location.startswith(CALLBACK + "?")
    query = query_of(location)
    assert query["state"] == "st4te"
    return query["code"]


async def test_web_flow_with_pkce(site: Site) -> None:
    verifier = secrets.token_urlsafe(48)
    code = await consent(site, verifier, login="monalisa")
    wrong = await site.token(client_id=GITHUB, client_secret="app-secret", code=code, code_verifier="x" * 43)
    assert wrong["error"] == "bad_verification_code"
    fields = {"client_id": GITHUB, "client_secret": "app-secret", "code": code, "redirect_uri": CALLBACK}
    token = await site.token(**fields, code_verifier=verifier)
    assert token["access_token"].startswith("ghu_") and token["refresh_token"].startswith("ghr_")
    entry = site.fake.live(token["access_token"], GITHUB)
    assert entry is not None and entry.login == "monalisa"  # the login prefilled from the request
    again = await site.token(**fields, code_verifier=verifier)
    assert again["error"] == "bad_verification_code"  # a code works once


async def test_web_flow_code_needs_the_secret_the_redirect_uri_and_expires(site: Site) -> None:
    code = await consent(site)
    assert (await site.token(client_id=GITHUB, client_secret="wrong", code=code))["error"] == (
        "incorrect_client_credentials"
    )
    mismatch = await site.token(
        client_id=GITHUB, client_secret="app-secret", code=code, redirect_uri=CALLBACK + "x"
    )
    assert mismatch["error"] == "redirect_uri_mismatch"
    site.clock.advance(600)
    assert (await site.token(client_id=GITHUB, client_secret="app-secret", code=code))["error"] == (
        "bad_verification_code"
    )


async def test_cancel_at_the_consent_page_redirects_with_access_denied(site: Site) -> None:
    _, page, _ = await site.page("/login/oauth/authorize", **authorize_query())
    status, _, location = await site.submit(page, "deny")
    query = query_of(location)
    assert status == 302 and (query["error"], query["state"]) == ("access_denied", "st4te")
    assert "code" not in query


async def test_the_consent_page_signs_in_a_known_user_and_answers_once(site: Site) -> None:
    _, page, _ = await site.page("/login/oauth/authorize", **authorize_query())
    assert form_of(page).fields["login"] == "octocat"
    assert (await site.submit(page, "approve", login="nobody"))[0] == 422
    status, _, location = await site.submit(page, "approve", login="monalisa")  # corrected, and again
    assert status == 302 and "code" in query_of(location)
    assert (await site.submit(page, "approve"))[0] == 404  # that request was answered


async def test_a_redirect_uri_the_app_does_not_admit_goes_to_its_callback_with_an_error(site: Site) -> None:
    status, _, location = await site.page(
        "/login/oauth/authorize", **authorize_query(redirect_uri="https://evil.example/cb")
    )
    assert status == 302 and location.startswith(CALLBACK + "?")
    assert query_of(location)["error"] == "redirect_uri_mismatch" and query_of(location)["state"] == "st4te"
    under = authorize_query(redirect_uri=CALLBACK + "/deeper")  # a GitHub App's must match exactly
    assert (
        query_of((await site.page("/login/oauth/authorize", **under))[2])["error"] == "redirect_uri_mismatch"
    )
    site.fake.register_app(OAUTH, SECRETS[OAUTH], callback_urls=[CALLBACK])  # an OAuth App's may be under it
    status, _, _ = await site.page(
        "/login/oauth/authorize", **authorize_query(OAUTH, redirect_uri=CALLBACK + "/x")
    )
    assert status == 200


async def test_a_bad_pkce_challenge_is_refused_at_authorize(site: Site) -> None:
    plain = authorize_query(code_challenge="a" * 43, code_challenge_method="plain")
    status, _, location = await site.page("/login/oauth/authorize", **plain)
    assert status == 302 and query_of(location)["error"] == "invalid_request"


async def test_auto_approve_redirects_at_once_with_scopes_for_an_oauth_app(site: Site) -> None:
    site.fake.flows.auto_approve = "octocat"
    query = authorize_query(OAUTH, redirect_uri="http://127.0.0.1:8080/cb", scope="repo")
    status, _, location = await site.page("/login/oauth/authorize", **query)
    assert status == 302 and location.startswith("http://127.0.0.1:8080/cb?")
    token = await site.token(client_id=OAUTH, client_secret="oauth-secret", code=query_of(location)["code"])
    assert (token["scope"], "refresh_token" in token) == ("repo", False)
    assert token["access_token"].startswith("gho_")


async def test_unknown_app_at_authorize_is_404(site: Site) -> None:
    assert (await site.page("/login/oauth/authorize", client_id="nope"))[0] == 404


# ---------------------------------------------------------------------------------------------------
# Refresh tokens and the token endpoint's encodings


async def test_refresh_gives_a_new_pair_once(site: Site) -> None:
    site.fake.flows.auto_approve = "monalisa"
    first = await site.poll(GITHUB, (await site.device_code(GITHUB))["device_code"])
    fields = {"client_id": GITHUB, "client_secret": "app-secret", "grant_type": "refresh_token"}
    second = await site.token(**fields, refresh_token=first["refresh_token"])
    assert (
        second["access_token"] != first["access_token"] and second["refresh_token"] != first["refresh_token"]
    )
    assert site.fake.live(first["access_token"], GITHUB) is None
    assert (await site.token(**fields, refresh_token=first["refresh_token"]))["error"] == "bad_refresh_token"
    wrong = await site.token(**{**fields, "client_secret": "x"}, refresh_token=second["refresh_token"])
    assert wrong["error"] == "incorrect_client_credentials"
    assert site.fake.count("oauth/access-token", target="refresh_token") == 3


async def test_an_oauth_app_cannot_refresh(site: Site) -> None:
    site.fake.flows.auto_approve = "octocat"
    token = await site.poll(OAUTH, (await site.device_code(OAUTH))["device_code"])
    refused = await site.token(
        client_id=OAUTH,
        client_secret="oauth-secret",
        grant_type="refresh_token",
        refresh_token=token["access_token"],
    )
    assert refused["error"] == "bad_refresh_token"


async def test_the_token_endpoint_answers_form_encoded_unless_asked_for_json_or_xml(site: Site) -> None:
    fields = {"client_id": OAUTH, "grant_type": "password"}
    url = f"{site.url}/login/oauth/access_token"
    async with site.session.post(url, data=fields) as resp:
        assert resp.status == 200 and resp.content_type == "application/x-www-form-urlencoded"
        answer = dict(urllib.parse.parse_qsl(await resp.text()))
    assert answer["error"] == "unsupported_grant_type" and answer["error_uri"].startswith(
        "https://docs.github.com/"
    )
    async with site.session.post(url, json=fields, headers=JSON) as resp:  # a JSON body is read too
        assert (
            resp.content_type == "application/json"
            and (await resp.json())["error"] == "unsupported_grant_type"
        )
    async with site.session.post(url, data=fields, headers={"Accept": "application/xml"}) as resp:
        assert resp.content_type == "application/xml"
        assert "<error>unsupported_grant_type</error>" in await resp.text()


async def test_unverified_email_gets_no_github_app_token(site: Site) -> None:
    site.fake.flows.auto_approve = "monalisa"
    site.fake.flows.unverified_emails.add("monalisa")
    answer = await site.poll(GITHUB, (await site.device_code(GITHUB))["device_code"])
    assert answer["error"] == "unverified_user_email"


# ---------------------------------------------------------------------------------------------------
# Where the flows are, what they log, the switches


async def test_the_flows_are_on_the_web_url_not_under_api_v3(site: Site) -> None:
    async with site.session.post(f"{site.url}/api/v3/login/device/code", data={"client_id": OAUTH}) as resp:
        assert resp.status == 404
    assert (await site.page("/api/v3/login/oauth/authorize", client_id=GITHUB))[0] == 404


async def test_flow_calls_are_logged_by_name_without_secrets(site: Site) -> None:
    verifier = secrets.token_urlsafe(48)
    code = await consent(site, verifier)
    token = await site.token(client_id=GITHUB, client_secret="app-secret", code=code, code_verifier=verifier)
    device = await site.device_code(OAUTH)
    await site.poll(OAUTH, device["device_code"])
    fake = site.fake
    assert (
        fake.count("oauth/authorize") == 1 and fake.count("oauth/authorize-decision", target="approve") == 1
    )
    assert fake.count("oauth/access-token", target="authorization_code") == 1
    assert (
        fake.count("oauth/device-code") == 1 and fake.count("oauth/access-token", target="device_code") == 1
    )
    logged = repr(fake.calls)
    for secret in (code, token["access_token"], token["refresh_token"], device["device_code"], "app-secret"):
        assert secret not in logged


async def test_an_outage_reaches_the_flows_too(site: Site) -> None:
    site.fake.outage = 503
    async with site.session.post(f"{site.url}/login/oauth/access_token", data={"client_id": OAUTH}) as resp:
        assert resp.status == 503
