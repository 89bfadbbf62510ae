"""GitHubClient.check against scripted answers (aioresponses) and, for what is on the wire, a real server."""

from __future__ import annotations

import asyncio
import base64
import logging
import traceback
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aioresponses import CallbackResult, aioresponses
from prometheus_client import REGISTRY

from gateway import metrics
from gateway.errors import AppCredentialsRejected, GitHubUnavailable
from gateway.github import API_VERSION, MEDIA_TYPE, USER_AGENT, GitHubClient
from gateway.identity import Identity

from .support.clock import FakeClock
from .support.github import (
    API,
    CHECK,
    CHECK2,
    CID,
    CID2,
    OCTOCAT,
    SECRET,
    TOKEN,
    TWO_APPS,
    Answered,
    CompatResponse,
    assert_secret_free,
    authorization,
    config,
    sent,
)
from .support.sockets import free_port

# ---------------------------------------------------------------------------------------------------
# Answers


async def test_200_gives_the_identity_in_githubs_scope_order(
    mocked: aioresponses, make: Any, answered: Answered
) -> None:
    clock = FakeClock()
    mocked.post(CHECK, payload=authorization(scopes=["user", "public_repo", "read:org"]))
    client = make(clock)
    identity = await client.check(TOKEN)
    assert identity is not None
    assert identity.scopes == ("user", "public_repo", "read:org")
    assert (identity.login, identity.user_id, identity.client_id) == ("octocat", 1, CID)
    assert identity.expires_at == datetime(2011, 9, 8, 17, 26, 27, tzinfo=UTC).timestamp()
    assert answered.count == 1


async def test_null_expiry_and_null_scopes(mocked: aioresponses, make: Any) -> None:
    mocked.post(CHECK, payload=authorization(expires_at=None, scopes=None))
    assert await make().check(TOKEN) == Identity("octocat", 1, (), None, CID)


async def test_expiry_with_offset_and_absent(mocked: aioresponses, make: Any) -> None:
    mocked.post(CHECK, payload=authorization(expires_at="2011-09-08T19:26:27+02:00"))
    body = authorization()
    del body["expires_at"]  # GHES before 3.4 does not send it
    mocked.post(CHECK, payload=body)
    client = make()
    assert await client.check(TOKEN) == OCTOCAT
    identity = await client.check(TOKEN)
    assert identity is not None and identity.expires_at is None


async def test_the_request_sent(mocked: aioresponses, make: Any) -> None:
    mocked.post(CHECK, payload=authorization())
    await make().check(TOKEN)
    ((_, calls),) = mocked.requests.items()
    kwargs = calls[0].kwargs
    assert kwargs["json"] == {"access_token": TOKEN}
    assert (
        kwargs["headers"]["Authorization"] == "Basic " + base64.b64encode(f"{CID}:{SECRET}".encode()).decode()
    )
    assert kwargs["headers"]["Accept"] == MEDIA_TYPE
    assert kwargs["headers"]["X-GitHub-Api-Version"] == "2022-11-28"
    assert kwargs["timeout"].total == 5.0


async def test_404_from_every_app_is_an_invalid_token(
    mocked: aioresponses, make: Any, answered: Answered
) -> None:
    clock = FakeClock()
    mocked.post(CHECK, status=404, payload={"message": "Not Found"})
    mocked.post(CHECK2, status=404, payload={"message": "Not Found"})
    client = make(clock, apps=TWO_APPS)
    assert await client.check(TOKEN) is None
    assert sent(mocked) == 2
    assert answered.count == 2  # each app's 404 is a usable answer


async def test_404_then_200_names_the_second_app(mocked: aioresponses, make: Any) -> None:
    mocked.post(CHECK, status=404, payload={"message": "Not Found"})
    mocked.post(CHECK2, payload=authorization())
    identity = await make(apps=TWO_APPS).check(TOKEN)
    assert identity is not None and identity.client_id == CID2


async def test_404_that_is_not_githubs_json_is_an_outage(mocked: aioresponses, make: Any) -> None:
    mocked.post(CHECK, status=404, body=b"<html>Not Found</html>", content_type="text/html")
    with pytest.raises(GitHubUnavailable, match="404"):
        await make().check(TOKEN)


async def test_401_rejects_the_app_loudly(
    mocked: aioresponses, make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    mocked.post(CHECK, status=401, payload={"message": "Bad credentials"})
    with pytest.raises(AppCredentialsRejected, match=CID) as caught:
        await make(apps=TWO_APPS).check(TOKEN)
    assert sent(mocked) == 1  # the second app is not asked: one broken app must not read as "invalid"
    errors = [r for r in caplog.records if r.name == "gateway.github" and r.levelno == logging.ERROR]
    assert errors and CID in errors[0].getMessage()
    assert_secret_free(caught.value, caplog)


async def test_403_is_unavailable_without_retry_or_backoff(mocked: aioresponses, make: Any) -> None:
    mocked.post(CHECK, status=403, payload={"message": "Forbidden"}, repeat=True)
    client = make()
    for _ in range(2):
        with pytest.raises(GitHubUnavailable) as caught:
            await client.check(TOKEN)
        assert caught.value.status == 403
    assert sent(mocked) == 2


async def test_rate_limit_403_backs_off_for_retry_after(mocked: aioresponses, make: Any) -> None:
    mocked.post(CHECK, status=403, payload={"message": "secondary rate limit"}, headers={"Retry-After": "7"})
    client = make()
    with pytest.raises(GitHubUnavailable):
        await client.check(TOKEN)
    assert client.retry_after() == 7


async def test_422_keeps_details_without_the_token(
    mocked: aioresponses, make: Any, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    body = {
        "message": "Validation Failed",
        "documentation_url": "https://docs.github.com/rest",
        "errors": [
            {"resource": "OauthAccess", "field": "access_token", "code": "invalid", "value": TOKEN},
            f"{TOKEN} was spammed",
        ],
    }
    mocked.post(CHECK, status=422, payload=body)
    client = make()
    with pytest.raises(GitHubUnavailable) as caught:
        await client.check(TOKEN)
    assert caught.value.status == 422
    assert caught.value.details == {
        "message": "Validation Failed",
        "documentation_url": "https://docs.github.com/rest",
        "errors": [
            {"resource": "OauthAccess", "field": "access_token", "code": "invalid"},
            "[token] was spammed",
        ],
    }
    assert sent(mocked) == 1 and sleeps == []  # never retried
    assert client.retry_after() == 1  # backed off
    assert_secret_free(caught.value, caplog)


async def test_500_is_retried_then_succeeds(mocked: aioresponses, make: Any, sleeps: list[float]) -> None:
    mocked.post(CHECK, status=500, payload={"message": "Server Error"})
    mocked.post(CHECK, payload=authorization())
    seen: list[tuple[str, int | None]] = []
    client = make(observer=lambda op, status, _seconds: seen.append((op, status)))
    assert await client.check(TOKEN) == OCTOCAT
    assert len(sleeps) == 1 and 0.05 <= sleeps[0] <= 0.1
    assert seen == [("apps/check-token", 500), ("apps/check-token", 200)]


async def test_500_exhausted(mocked: aioresponses, make: Any, sleeps: list[float]) -> None:
    mocked.post(CHECK, status=502, payload={"message": "Bad Gateway"}, repeat=True)
    with pytest.raises(GitHubUnavailable) as caught:
        await make(retries=2).check(TOKEN)
    assert caught.value.status == 502
    assert sent(mocked) == 3
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0] / 2  # jittered, growing ceiling
    assert_secret_free(caught.value)


async def test_timeout_is_retried_then_unavailable(mocked: aioresponses, make: Any) -> None:
    mocked.post(CHECK, exception=TimeoutError(), repeat=True)
    with pytest.raises(GitHubUnavailable, match="did not answer within 5s") as caught:
        await make().check(TOKEN)
    assert sent(mocked) == 2
    assert isinstance(caught.value.__cause__, TimeoutError)


async def test_refused_connection(make: Any, sleeps: list[float]) -> None:
    client = make(api_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(GitHubUnavailable, match="cannot reach GitHub") as caught:
        await client.check(TOKEN)
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectionError)
    assert caught.value.status is None and len(sleeps) == 1
    assert_secret_free(caught.value)


BAD_ANSWERS = {
    "not json": b"<html>unicorn</html>",
    "a list": [authorization()],
    "empty": b"",
    "login with CR/LF": authorization(user__login="octocat\r\nX-Injected: yes"),
    "login with a space": authorization(user__login="octo cat"),
    "login empty": authorization(user__login=""),
    "login too long": authorization(user__login="a" * 101),
    "login not ASCII": authorization(user__login="octocät"),
    "login a number": authorization(user__login=1),
    "user missing": {k: v for k, v in authorization().items() if k != "user"},
    "user null": authorization(user=None),
    "id a string": authorization(user__id="1"),
    "id a bool": authorization(user__id=True),
    "id zero": authorization(user__id=0),
    "id a float": authorization(user__id=1.0),
    "scopes missing": {k: v for k, v in authorization().items() if k != "scopes"},
    "scopes a string": authorization(scopes="repo"),
    "scope with a space": authorization(scopes=["repo", "X-Injected: yes"]),
    "scope a number": authorization(scopes=[1]),
    "expires_at garbage": authorization(expires_at="tomorrow"),
    "expires_at without zone": authorization(expires_at="2011-09-08T17:26:27"),
    "expires_at a number": authorization(expires_at=1315502787),
}


@pytest.mark.parametrize("answer", BAD_ANSWERS.values(), ids=BAD_ANSWERS.keys())
async def test_an_answer_off_githubs_schema_is_an_outage(
    mocked: aioresponses, make: Any, answer: Any, answered: Answered
) -> None:
    if isinstance(answer, bytes):
        mocked.post(CHECK, body=answer)
    else:
        mocked.post(CHECK, payload=answer)
    client = make()
    with pytest.raises(GitHubUnavailable, match=r"did not fit its schema|not JSON") as caught:
        await client.check(TOKEN)
    assert "X-Injected" not in str(caught.value) and "unicorn" not in str(caught.value)
    assert answered.count == 0
    assert_secret_free(caught.value)


# ---------------------------------------------------------------------------------------------------
# Legacy path, GHES


async def test_legacy_method_gets_the_token_path(mocked: aioresponses, make: Any) -> None:
    mocked.get(f"{API}/applications/{CID}/tokens/{TOKEN}", payload=authorization())
    assert await make(check_method="legacy").check(TOKEN) == OCTOCAT
    ((method, url), calls) = next(iter(mocked.requests.items()))
    assert method == "GET" and url.path == f"/applications/{CID}/tokens/{TOKEN}"
    assert calls[0].kwargs["json"] is None


async def test_legacy_errors_never_carry_the_token_path(mocked: aioresponses, make: Any) -> None:
    odd = "ghu_a/b+c="  # b64token characters that need quoting in a path
    url = f"{API}/applications/{CID}/tokens/ghu_a%2Fb%2Bc%3D"
    mocked.get(url, exception=aiohttp.ClientConnectionError(f"Connection timeout to host {url}"), repeat=True)
    with pytest.raises(GitHubUnavailable) as caught:
        await make(check_method="legacy").check(odd)
    text = "".join(traceback.format_exception(caught.value))
    assert "ghu_a" not in text and "[token]" in str(caught.value)


async def test_ghes_api_prefix(mocked: aioresponses, make: Any) -> None:
    mocked.post(f"https://ghe.example.com/api/v3/applications/{CID}/token", payload=authorization())
    assert await make(api_url="https://ghe.example.com/api/v3/").check(TOKEN) == OCTOCAT


async def test_headers_on_the_wire(aiohttp_server: Any, session: aiohttp.ClientSession) -> None:
    seen: list[web.Request] = []

    async def not_found(request: web.Request) -> web.Response:
        seen.append(request)
        return web.json_response({"message": "Not Found"}, status=404)

    app = web.Application()
    app.router.add_post("/applications/{client_id}/token", not_found)
    server = await aiohttp_server(app)
    cfg = config(api_url=str(server.make_url("/")))
    assert await GitHubClient(cfg, session, user_agent="gateway-test/1").check(TOKEN) is None
    assert await GitHubClient(cfg, session).check(TOKEN) is None
    first, second = seen
    assert first.headers["Accept"] == MEDIA_TYPE
    assert first.headers["X-GitHub-Api-Version"] == API_VERSION == "2022-11-28"
    assert first.headers["User-Agent"] == "gateway-test/1"
    assert first.headers["Authorization"] == "Basic " + base64.b64encode(f"{CID}:{SECRET}".encode()).decode()
    assert second.headers["User-Agent"] == USER_AGENT and USER_AGENT.startswith("gateway/")


# ---------------------------------------------------------------------------------------------------
# Backoff, concurrency, secrets


async def test_backoff_fails_fast_then_calls_again(
    mocked: aioresponses, make: Any, answered: Answered
) -> None:
    clock = FakeClock()
    mocked.post(CHECK, status=500, payload={"message": "Server Error"})
    mocked.post(CHECK, payload=authorization())
    client = make(clock, retries=0)
    with pytest.raises(GitHubUnavailable):
        await client.check(TOKEN)
    assert client.retry_after() == 1
    with pytest.raises(GitHubUnavailable, match="backed off"):
        await client.check(TOKEN)
    assert sent(mocked) == 1  # failed fast, GitHub not asked
    clock.now += 1.0
    assert await client.check(TOKEN) == OCTOCAT
    assert sent(mocked) == 2 and answered.count == 1


async def test_backoff_doubles_caps_and_resets(mocked: aioresponses, make: Any) -> None:
    clock = FakeClock()
    mocked.post(CHECK, exception=aiohttp.ServerDisconnectedError(), repeat=True)
    client = make(clock, retries=0)
    windows = []
    for _ in range(8):
        with pytest.raises(GitHubUnavailable):
            await client.check(TOKEN)
        windows.append(client.retry_after())
        clock.now += windows[-1]
    assert windows == [1, 2, 4, 8, 16, 30, 30, 30]
    mocked.clear()
    mocked.post(CHECK, payload=authorization())
    mocked.post(CHECK, status=503, payload={"message": "Service Unavailable"})
    assert await client.check(TOKEN) == OCTOCAT
    with pytest.raises(GitHubUnavailable):
        await client.check(TOKEN)
    assert client.retry_after() == 1  # a success reset the doubling


async def test_concurrency_cap(mocked: aioresponses, make: Any) -> None:
    release, two_in = asyncio.Event(), asyncio.Event()
    in_flight = peak = 0

    async def held(_url: Any, **_kwargs: Any) -> CallbackResult:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight == 2:
            two_in.set()
        await release.wait()
        in_flight -= 1
        return CallbackResult(payload=authorization(), response_class=CompatResponse)

    mocked.post(CHECK, callback=held, repeat=True)
    client = make(max_concurrent_checks=2)
    tasks = [asyncio.create_task(client.check(TOKEN)) for _ in range(5)]
    await two_in.wait()
    for _ in range(50):  # every chance for a third call to slip past the cap
        await asyncio.sleep(0)
    assert in_flight == 2
    release.set()
    assert await asyncio.gather(*tasks) == [OCTOCAT] * 5
    assert peak == 2 and sent(mocked) == 5


async def test_repr_hides_the_secret(make: Any) -> None:
    assert SECRET not in repr(make()) and CID in repr(make())


async def test_a_full_queue_of_checks_is_refused_at_once(mocked: aioresponses, make: Any) -> None:
    from gateway.github import WAITING_PER_SLOT

    release, one_in = asyncio.Event(), asyncio.Event()

    async def held(_url: Any, **_kwargs: Any) -> CallbackResult:
        one_in.set()
        await release.wait()
        return CallbackResult(payload=authorization(), response_class=CompatResponse)

    mocked.post(CHECK, callback=held, repeat=True)
    client = make(max_concurrent_checks=1)
    first = asyncio.create_task(client.check(TOKEN))
    await one_in.wait()
    queued = [asyncio.create_task(client.check(TOKEN)) for _ in range(WAITING_PER_SLOT)]
    await asyncio.sleep(0)  # let the queued calls reach the semaphore
    with pytest.raises(GitHubUnavailable, match="already waiting"):
        await client.check(TOKEN)
    release.set()
    assert await asyncio.gather(first, *queued) == [OCTOCAT] * (WAITING_PER_SLOT + 1)


async def test_the_last_success_metric_moves_only_for_a_usable_answer(
    mocked: aioresponses, session: aiohttp.ClientSession
) -> None:
    mocked.post(CHECK, payload={**authorization(), "user": None})  # a 200 off GitHub's schema
    mocked.post(CHECK, status=404, payload={"message": "Not Found"})
    client = GitHubClient(  # with the hooks as app.py wires them
        config(retries=0), session, observer=metrics.github_observer, answered=metrics.github_answered
    )
    metrics.GITHUB_LAST_SUCCESS.set(0)
    gauge = "gateway_github_last_success_timestamp_seconds"
    with pytest.raises(GitHubUnavailable):
        await client.check(TOKEN)
    assert REGISTRY.get_sample_value(gauge) == 0
    assert await client.check(TOKEN) is None
    assert (REGISTRY.get_sample_value(gauge) or 0) > 0
