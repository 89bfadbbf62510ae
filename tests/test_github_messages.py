"""What GitHubClient says when the answer is not about the token: a scope target GitHub does not know,
`check_method: legacy` on a GitHub without the path forms, `verify` for check-config --online; and
what it sends without a body. Scripted answers (aioresponses), and a real server for the wire."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aioresponses import aioresponses

from gateway.config import UpstreamTokenConfig
from gateway.errors import CheckMethodUnsupported, TargetNotFound
from gateway.github import GitHubClient
from gateway.github.client import NEVER_ISSUED

from .support.github import API, CHECK, CHECK2, CID, CID2, TOKEN, TWO_APPS, authorization, config, sent

SCOPE, SCOPE2 = f"{CHECK}/scoped", f"{CHECK2}/scoped"
PATH_FORM = f"{API}/applications/{CID}/tokens/{TOKEN}"
NOT_SERVED = {"message": "Not Found", "documentation_url": "https://docs.github.com/rest", "status": "404"}
NOT_THIS_APPS = {
    "message": "Not Found",
    "documentation_url": "https://docs.github.com/rest/apps/oauth-applications#check-an-authorization",
}
SPEC = UpstreamTokenConfig(target="nope")

# ---------------------------------------------------------------------------------------------------
# Scope: the token's app tells an unknown target from an unknown token


async def test_an_unknown_target_is_named_and_no_other_app_is_asked(mocked: aioresponses, make: Any) -> None:
    mocked.post(SCOPE, status=404, payload={"message": "Not Found"})
    mocked.post(CHECK, payload=authorization())  # the first app knows the token
    with pytest.raises(TargetNotFound, match=r"no target 'nope' to scope the token to \(404\)") as caught:
        await make(apps=TWO_APPS).scoped(TOKEN, SPEC)
    assert sent(mocked) == 2 and TOKEN not in str(caught.value)  # the second app is never asked
    with pytest.raises(TargetNotFound, match="no target_id 99 "):
        mocked.post(SCOPE, status=404, payload={"message": "Not Found"})
        mocked.post(CHECK, payload=authorization())
        await make().scoped(TOKEN, UpstreamTokenConfig(target_id=99))


async def test_an_unknown_token_is_still_none_after_each_app_is_asked(
    mocked: aioresponses, make: Any
) -> None:
    for url in (SCOPE, CHECK, SCOPE2, CHECK2):
        mocked.post(url, status=404, payload={"message": "Not Found"})
    assert await make(apps=TWO_APPS).scoped(TOKEN, SPEC) is None
    assert sent(mocked) == 4


# ---------------------------------------------------------------------------------------------------
# check_method: legacy on a GitHub that has no path forms


async def test_legacy_on_a_github_without_path_forms_is_a_config_problem(
    mocked: aioresponses, make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    mocked.get(PATH_FORM, status=404, payload=NOT_SERVED)
    mocked.post(CHECK, payload=authorization())  # the token is valid: the path forms are what is missing
    client = make(check_method="legacy")
    with (
        caplog.at_level(logging.ERROR),
        pytest.raises(CheckMethodUnsupported, match="set check_method: token"),
    ):
        await client.check(TOKEN)
    assert "config: check_method: legacy, but GitHub at" in caplog.text and TOKEN not in caplog.text
    assert not client.usable and client.problem is not None and "path forms" in client.problem
    with pytest.raises(CheckMethodUnsupported):
        await client.delete(TOKEN)  # nothing more is asked until the config is reloaded
    assert sent(mocked) == 2


async def test_legacy_with_an_unknown_token_stays_an_invalid_token(mocked: aioresponses, make: Any) -> None:
    mocked.get(PATH_FORM, status=404, payload=NOT_SERVED)
    mocked.post(CHECK, status=404, payload={"message": "Not Found"})
    client = make(check_method="legacy")
    assert await client.check(TOKEN) is None and client.usable


async def test_legacy_on_an_old_ghes_asks_nothing_more_about_an_unknown_token(
    mocked: aioresponses, make: Any
) -> None:
    mocked.get(PATH_FORM, status=404, payload=NOT_THIS_APPS)  # the operation's own 404
    assert await make(check_method="legacy").check(TOKEN) is None
    assert sent(mocked) == 1


# ---------------------------------------------------------------------------------------------------
# verify: check-config --online, without a real token


async def test_verify_says_what_each_app_got(mocked: aioresponses, make: Any) -> None:
    mocked.post(CHECK, status=404, payload=NOT_THIS_APPS)
    mocked.post(CHECK2, status=401, payload={"message": "Bad credentials"})
    assert await make(apps=TWO_APPS).verify() == {
        CID: None,
        CID2: f"GitHub rejected the credentials of app {CID2} (401)",
    }
    first = next(iter(mocked.requests.values()))[0]
    assert first.kwargs["json"] == {"access_token": NEVER_ISSUED}


async def test_verify_finds_legacy_on_a_github_without_path_forms(mocked: aioresponses, make: Any) -> None:
    mocked.get(f"{API}/applications/{CID}/tokens/{NEVER_ISSUED}", status=404, payload=NOT_SERVED)
    problem = (await make(check_method="legacy").verify())[CID]
    assert problem is not None and problem.startswith(f"check_method: legacy, but GitHub at {API}")


# ---------------------------------------------------------------------------------------------------
# The wire


@pytest.mark.parametrize("check_method", ["token", "legacy"])
async def test_a_request_without_a_body_has_no_content_type(
    aiohttp_server: Any, session: aiohttp.ClientSession, check_method: str
) -> None:
    seen: dict[str, str | None] = {}

    async def answer(request: web.Request) -> web.Response:
        seen[request.method] = request.headers.get("Content-Type")
        return web.json_response(NOT_THIS_APPS, status=404)

    app = web.Application()
    app.router.add_route("*", "/applications/{client_id}/{path:.*}", answer)
    server = await aiohttp_server(app)
    client = GitHubClient(config(api_url=str(server.make_url("/")), check_method=check_method), session)
    assert await client.check(TOKEN) is None and await client.reset(TOKEN) is None
    assert await client.delete(TOKEN) is False
    if check_method == "token":
        assert seen == {"POST": "application/json", "PATCH": "application/json", "DELETE": "application/json"}
    else:  # GET, POST and DELETE of …/tokens/{t}: no body, so no type (aiohttp would say octet-stream)
        assert seen == {"GET": None, "POST": None, "DELETE": None}
