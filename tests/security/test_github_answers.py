"""GitHub answer abuse: an answer off GitHub's schema (a compromised, misrouted or odd GitHub, a
captive portal) is treated like an outage: 503, never passed on, never cached (README: How tokens are
checked).
"""

from __future__ import annotations

from typing import Any

import pytest

from ..support.canary import canary
from ..support.github import CraftedGitHub, authorization
from ..support.sockets import body_of, exchange, raw, statuses
from ..support.upstreams import RecordingUpstream
from ..support.world import Gateway, GatewayFactory, World


async def against(start_gateway: GatewayFactory, github: CraftedGitHub) -> Gateway:
    return await start_gateway(github={"api_url": github.url})


async def get_svc(gateway: Gateway, token: str) -> bytes:
    return await exchange(gateway.port, raw("GET", "/svc", f"Authorization: Bearer {token}"))


@pytest.mark.parametrize(
    "login",
    [
        "alice\r\nX-Auth-User: root",
        "alice\n",
        "alice\r",
        "al\x00ice",
        "\x1b[31malice",
        "alice bob",
        "alice,root",
        "",
        "a" * 101,
        42,
        None,
    ],
)
async def test_an_off_schema_login_from_github_is_503_and_never_forwarded(
    start_gateway: GatewayFactory, crafted_github: CraftedGitHub, upstream: RecordingUpstream, login: Any
) -> None:
    """Header injection through the identity: a login with CR/LF or control characters would become
    an X-Auth-User line of the attacker's choosing upstream."""
    crafted_github.answer = lambda token: (200, authorization(token, expires_at=None, user__login=login))
    gateway = await against(start_gateway, crafted_github)
    answer = await get_svc(gateway, canary())
    assert statuses(answer) == [503]
    assert body_of(answer)["error"] == "github_unavailable"
    assert b"Retry-After: " in answer
    assert upstream.received == []


@pytest.mark.parametrize(
    "body",
    [
        {"scopes": ["repo"], "token": "x"},  # no user
        {"scopes": ["repo"], "user": "alice"},
        {"scopes": ["repo"], "user": {"login": "alice", "id": 0}},
        {"scopes": ["repo"], "user": {"login": "alice", "id": "7"}},
        {"scopes": ["repo\r\nX-Auth-Scopes: admin:org"], "user": {"login": "alice", "id": 7}},
        {"scopes": "admin:org", "user": {"login": "alice", "id": 7}},
        {"scopes": ["repo"], "user": {"login": "alice", "id": 7}, "expires_at": "tomorrow"},
        ["not", "an", "object"],
    ],
)
async def test_an_answer_that_does_not_fit_githubs_schema_is_503(
    start_gateway: GatewayFactory, crafted_github: CraftedGitHub, upstream: RecordingUpstream, body: object
) -> None:
    """Schema confusion: an identity made up from a half-understood answer is worse than none."""
    crafted_github.answer = lambda token: (200, body)
    gateway = await against(start_gateway, crafted_github)
    assert statuses(await get_svc(gateway, canary())) == [503]
    assert upstream.received == []


async def test_an_off_schema_answer_is_never_cached(
    start_gateway: GatewayFactory, crafted_github: CraftedGitHub, upstream: RecordingUpstream
) -> None:
    """Cache poisoning: one odd answer must not decide the token's fate for the cache's lifetime."""
    crafted_github.answer = lambda token: (
        200,
        authorization(token, expires_at=None, user__login="alice\r\nX-Injected: 1"),
    )
    gateway = await against(start_gateway, crafted_github)
    token = canary()
    assert statuses(await get_svc(gateway, token)) == [503]
    crafted_github.answer = lambda token: (200, authorization(token, expires_at=None, user__login="alice"))
    assert statuses(await get_svc(gateway, token)) == [200]
    assert crafted_github.calls == 2
    assert upstream.received[0].values("X-Auth-User") == ["alice"]


async def test_githubs_spammed_422_is_503_backed_off_and_never_taken_for_an_invalid_token(
    start_gateway: GatewayFactory, crafted_github: CraftedGitHub, world: World
) -> None:
    """GitHub's 422 "validation failed, or the endpoint has been spammed" says nothing of the token:
    calling it invalid (and caching that) would lock a real user out; calling again spams it more."""
    crafted_github.answer = lambda token: (422, {"message": "Validation Failed"})
    gateway = await against(start_gateway, crafted_github)
    token = canary()
    for _ in range(3):
        answer = await get_svc(gateway, token)
        assert statuses(answer) == [503]
        assert b"Retry-After: " in answer
    assert crafted_github.calls == 1  # backed off: the next two never reached GitHub
    crafted_github.answer = lambda token: (200, authorization(token, expires_at=None))
    world.clock.advance(2)  # past the first back-off window, well inside negative_ttl
    assert statuses(await get_svc(gateway, token)) == [200]
    assert crafted_github.calls == 2


@pytest.mark.parametrize("status", [404, 200])
async def test_an_answer_that_is_not_githubs_json_is_503_not_a_verdict(
    start_gateway: GatewayFactory, crafted_github: CraftedGitHub, upstream: RecordingUpstream, status: int
) -> None:
    """A wrong api_url or a captive portal: its 404 page is no "invalid token", its 200 no identity."""
    crafted_github.answer = lambda token: (status, b"<html>Sign in to the Wi-Fi</html>")
    gateway = await against(start_gateway, crafted_github)
    answer = await get_svc(gateway, canary())
    assert statuses(answer) == [503]
    assert upstream.received == []


async def test_an_answer_too_large_to_be_githubs_is_an_outage_backed_off_and_logged(
    start_gateway: GatewayFactory,
    crafted_github: CraftedGitHub,
    upstream: RecordingUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Resource exhaustion from upstream of the gateway: a GitHub (or something posing as it) that
    answers without end is cut off at 1 MiB, treated as an outage and backed off from."""
    crafted_github.answer = lambda token: (200, b"x" * (2 << 20))
    gateway = await against(start_gateway, crafted_github)
    for _ in range(3):
        answer = await get_svc(gateway, canary())
        assert statuses(answer) == [503]
        assert body_of(answer)["error"] == "github_unavailable"
    assert crafted_github.calls == 1  # backed off: the next two never reached GitHub
    assert upstream.received == []
    assert any("was over 1048576 bytes; backing off" in r.getMessage() for r in caplog.records)
