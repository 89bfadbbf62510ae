"""The fake GitHub keeps GitHub's rules at the edges, so a client that breaks them fails against it as it
would against github.com: User-Agent and API version, rate limits and their headers, the body of a
request, and an old GHES's answers (its schema checked with GHES 2.22's description)."""

from __future__ import annotations

import argparse
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gateway.testing.fake_github import FakeGitHub
from gateway.testing.fake_github_cli import add_arguments

from .support.github import CID, CID2, SECRET, SECRET2
from .support.openapi import OPENAPI, Env, Schemas, open_env

pytestmark = pytest.mark.skipif(
    not OPENAPI.is_dir(), reason=f"GitHub's OpenAPI description is not at {OPENAPI}"
)

CHECK = f"/applications/{CID}/token"
BASIC = {"Authorization": aiohttp.encode_basic_auth(CID, SECRET)}


@pytest.fixture
async def env(aiohttp_server: Any, schemas: Schemas) -> AsyncIterator[Env]:
    async with open_env(aiohttp_server, schemas) as env:
        yield env


@pytest.fixture
async def bare(aiohttp_server: Any) -> AsyncIterator[tuple[FakeGitHub, str]]:
    """A fake GitHub without the schema check (some answers here are GitHub's text, not JSON)."""
    fake = FakeGitHub({CID: SECRET, CID2: SECRET2})
    yield fake, str((await aiohttp_server(fake.app())).make_url("")).rstrip("/")


async def call(
    env: Env, method: str, path: str, *, headers: dict[str, str] | None = None, **kw: Any
) -> tuple[int, Any, Any]:
    async with env.session.request(method, env.url + path, headers={**BASIC, **(headers or {})}, **kw) as r:
        return r.status, r.headers, await r.json()


# ---------------------------------------------------------------------------------------------------
# The body of a request


@pytest.mark.parametrize("method", ["POST", "PATCH", "DELETE"])
async def test_a_request_without_a_body_is_refused_as_an_empty_object_is(env: Env, method: str) -> None:
    kws: list[dict[str, Any]] = [{}, {"json": {}}]
    for kw in kws:
        status, _, body = await call(env, method, CHECK, **kw)
        assert status == 422
        assert body["errors"] == [
            {"resource": "OauthAccess", "field": "access_token", "code": "missing_field"}
        ]
    assert not env.problems


@pytest.mark.parametrize("value", [123, ["gho_x"], {"token": "gho_x"}, True])
async def test_a_value_of_the_wrong_type_is_invalid_not_missing(env: Env, value: object) -> None:
    status, _, body = await call(env, "POST", CHECK, json={"access_token": value})
    assert (status, body["errors"][0]["code"]) == (422, "invalid")


async def test_a_body_that_is_not_json_is_still_400(env: Env) -> None:
    status, _, body = await call(env, "POST", CHECK, data=b"{")
    assert (status, body["message"]) == (400, "Problems parsing JSON")


# ---------------------------------------------------------------------------------------------------
# User-Agent and API version: the API's rules, not the web host's


async def test_no_user_agent_is_403_with_githubs_text(bare: tuple[FakeGitHub, str]) -> None:
    fake, url = bare
    async with aiohttp.ClientSession(skip_auto_headers=["User-Agent"]) as anonymous:
        for path in (CHECK, "/api/v3" + CHECK, "/user/orgs"):
            async with anonymous.post(url + path, json={"access_token": "x"}, headers=BASIC) as resp:
                assert resp.status == 403 and resp.content_type == "text/html"
                assert "Please make sure your request has a User-Agent header" in await resp.text()
        # the web host's flows are not the API: a browser's headers are its own business
        async with anonymous.post(url + "/login/device/code", data={"client_id": CID2}) as resp:
            assert resp.status == 200 and "device_code" in await resp.text()
    assert fake.calls[-1].op == "oauth/device-code" and len(fake.calls) == 1  # refused before any endpoint


async def test_an_unsupported_api_version_is_400(bare: tuple[FakeGitHub, str]) -> None:
    fake, url = bare
    token = fake.add_token("alice", 1)
    async with aiohttp.ClientSession() as session:
        for version, expected in (("v3", 400), ("2021-01-01", 400), ("2022-11-28", 200), ("2026-03-10", 200)):
            headers = {**BASIC, "X-GitHub-Api-Version": version}
            async with session.post(url + CHECK, json={"access_token": token}, headers=headers) as resp:
                assert resp.status == expected, version
                if expected == 400:
                    message = (await resp.json())["message"]
                    assert f'"{version}", is not a supported version' in message
                    assert '"2022-11-28"' in message
        async with session.post(
            url + "/login/device/code", data={"client_id": CID2}, headers={"X-GitHub-Api-Version": "v3"}
        ) as resp:
            assert resp.status == 200


# ---------------------------------------------------------------------------------------------------
# Rate limits on the OAuth Apps API


def rate(headers: Any) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.startswith("X-RateLimit")}


async def test_every_api_answer_says_the_apps_budget_and_githubs_request_id(env: Env) -> None:
    token = env.fake.add_token("alice", 1)
    _, first, _ = await call(env, "POST", CHECK, json={"access_token": token})
    _, second, _ = await call(env, "POST", CHECK, json={"access_token": "gho_unknown"})  # a 404 spends too
    assert rate(first) == {
        "X-RateLimit-Limit": "5000",
        "X-RateLimit-Remaining": "4999",
        "X-RateLimit-Reset": str(int(env.wall.now) + 3600),
        "X-RateLimit-Used": "1",
        "X-RateLimit-Resource": "core",
    }
    assert (second["X-RateLimit-Used"], second["X-RateLimit-Remaining"]) == ("2", "4998")
    assert re.fullmatch(
        r"[0-9A-F]{4}:[0-9A-F]{4}:[0-9A-F]{6}:[0-9A-F]{6}:[0-9A-F]{8}", first["X-GitHub-Request-Id"]
    )
    assert first["X-GitHub-Request-Id"] != second["X-GitHub-Request-Id"]
    assert first["X-GitHub-Media-Type"] == "github.v3; format=json"
    # before the caller is known: the address's budget, GitHub's 60 an hour
    _, unknown, _ = await call(env, "POST", CHECK, json={}, headers={"Authorization": "Basic eDp5"})
    assert (unknown["X-RateLimit-Limit"], unknown["X-RateLimit-Used"]) == ("60", "1")
    async with env.session.post(env.url + "/login/device/code", data={"client_id": CID2}) as resp:
        assert "X-RateLimit-Limit" not in resp.headers  # the web host is not the API


@pytest.mark.parametrize("status", [403, 429])
async def test_an_exhausted_budget_refuses_oauth_apps_calls_until_the_reset(env: Env, status: int) -> None:
    token = env.fake.add_token("alice", 1)
    env.fake.exhaust_rate_limit(reset_in=120, status=status)
    code, headers, body = await call(env, "POST", CHECK, json={"access_token": token})
    assert code == status and body["message"].startswith(f"API rate limit exceeded for app {CID}.")
    assert rate(headers)["X-RateLimit-Remaining"] == "0" and "Retry-After" not in headers
    assert rate(headers)["X-RateLimit-Reset"] == str(int(env.wall.now) + 120)
    env.wall.now += 120
    assert (await call(env, "POST", CHECK, json={"access_token": token}))[0] == 200


async def test_a_secondary_limit_says_retry_after_and_a_budget_runs_out_by_itself(env: Env) -> None:
    token = env.fake.add_token("alice", 1)
    env.fake.exhaust_rate_limit(reset_in=30, status=429, retry_after=30, budgets=["oauth-app"])
    code, headers, body = await call(env, "POST", CHECK, json={"access_token": token})
    assert (code, headers["Retry-After"]) == (429, "30") and "secondary rate limit" in body["message"]
    env.fake.restore_rate_limit()
    env.fake.rate_budget = 2
    answers = [(await call(env, "DELETE", CHECK, json={"access_token": "gho_x"}))[:2] for _ in range(3)]
    assert [code for code, _ in answers] == [404, 404, 403]
    assert rate(answers[2][1])["X-RateLimit-Remaining"] == "0"


def test_the_cli_switch_exhausts_the_budget() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args([]).exhaust_rate_limit is None
    assert parser.parse_args(["--exhaust-rate-limit", "primary"]).exhaust_rate_limit == (403, None)
    assert parser.parse_args(["--exhaust-rate-limit", "secondary:429"]).exhaust_rate_limit == (429, 60)
    with pytest.raises(SystemExit):
        parser.parse_args(["--exhaust-rate-limit", "tertiary"])


# ---------------------------------------------------------------------------------------------------
# An old GHES, and a path GitHub does not serve


async def test_an_old_ghes_answers_fit_ghes_2_22(aiohttp_server: Any) -> None:
    async with open_env(aiohttp_server, Schemas("ghes-2.22.apps-oauth.json")) as env:
        env.fake.legacy_paths = True
        token = env.fake.add_token("alice", 1)
        _, _, checked = await call(env, "POST", CHECK, json={"access_token": token})
        _, _, by_path = await call(env, "GET", f"/api/v3/applications/{CID}/tokens/{token}")
        _, _, reset = await call(env, "PATCH", CHECK, json={"access_token": token})
    assert "installation" not in checked and "installation" not in by_path and "installation" not in reset
    assert [status for _, status in env.validated] == [200, 200, 200]


async def test_a_removed_path_form_is_githubs_404_for_a_path_it_does_not_serve(env: Env) -> None:
    token = env.fake.add_token("alice", 1)
    status, _, removed = await call(env, "GET", f"/applications/{CID}/tokens/{token}")
    _, _, unknown = await call(env, "GET", "/no/such/path")
    _, _, not_found = await call(env, "POST", CHECK, json={"access_token": "gho_unknown"})
    assert status == 404 and removed == unknown
    assert removed == {
        "message": "Not Found",
        "documentation_url": "https://docs.github.com/rest",
        "status": "404",
    }
    assert not_found["documentation_url"].endswith("#check-a-token")  # the operation's own 404
