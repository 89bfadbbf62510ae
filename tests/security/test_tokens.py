"""Token handling: a token counts only in the one `Authorization: Bearer|token` header (README: How
tokens are checked); anything malformed is refused before GitHub hears of it, and credentials the
gateway did not check are never passed on.
"""

from __future__ import annotations

import base64

import pytest

from ..support.canary import canary
from ..support.sockets import body_of, exchange, raw, statuses
from ..support.upstreams import RecordingUpstream
from ..support.world import Gateway, GatewayFactory, World


async def refused(gateway: Gateway, message: bytes, status: int = 401) -> dict[str, object]:
    answer = await exchange(gateway.port, message)
    assert statuses(answer) == [status], answer[:300]
    return body_of(answer)


async def test_a_token_in_the_query_string_is_never_accepted(
    gateway: Gateway, upstream: RecordingUpstream, world: World
) -> None:
    """RFC 6750 §2.3 query tokens (GitHub removed them in 2021): they land in logs and Referer."""
    token = world.github.add_token("alice", 7)
    for target in (f"/svc?access_token={token}", f"/svc?token={token}", f"/svc?x=1&access_token={token}"):
        body = await refused(gateway, raw("GET", target))
        assert body["error"] == "unauthenticated"
    assert world.github.check_calls() == 0
    assert upstream.received == []
    assert token not in gateway.log_text()


async def test_a_token_in_a_cookie_is_never_accepted(
    gateway: Gateway, upstream: RecordingUpstream, world: World
) -> None:
    """Cookie credentials: a token a browser sends by itself is a CSRF-able credential (README: How tokens
    are checked)."""
    token = world.github.add_token("alice", 7)
    cookie = f"Cookie: access_token={token}; token={token}; Authorization=Bearer%20{token}"
    assert (await refused(gateway, raw("GET", "/svc", cookie)))["error"] == "unauthenticated"
    assert world.github.check_calls() == 0
    assert upstream.received == []


async def test_a_token_in_a_form_field_is_never_accepted(
    gateway: Gateway, upstream: RecordingUpstream, world: World
) -> None:
    """RFC 6750 §2.2 form-encoded tokens: not a credential here (README: How tokens are checked)."""
    token = world.github.add_token("alice", 7)
    form = f"access_token={token}".encode()
    message = raw(
        "POST",
        "/svc",
        "Content-Type: application/x-www-form-urlencoded",
        f"Content-Length: {len(form)}",
        body=form,
    )
    assert (await refused(gateway, message))["error"] == "unauthenticated"
    assert world.github.check_calls() == 0
    assert upstream.received == []


@pytest.mark.parametrize(
    "header", ["Proxy-Authorization: Bearer {}", "X-Access-Token: {}", "X-Forwarded-Access-Token: {}"]
)
async def test_a_token_in_another_header_is_never_accepted(
    gateway: Gateway, upstream: RecordingUpstream, world: World, header: str
) -> None:
    """Credential-header confusion: oauth2-proxy's X-Forwarded-Access-Token is no credential here."""
    token = world.github.add_token("alice", 7)
    assert (await refused(gateway, raw("GET", "/svc", header.format(token))))["error"] == "unauthenticated"
    assert world.github.check_calls() == 0
    assert upstream.received == []


@pytest.mark.parametrize("userpass", ["x-access-token:{}", "{}:x-oauth-basic", "alice:{}"])
async def test_the_basic_scheme_is_refused_without_asking_github(
    gateway: Gateway, upstream: RecordingUpstream, world: World, userpass: str
) -> None:
    """Scheme confusion: GitHub takes a token as a Basic password for git; the gateway does not."""
    token = world.github.add_token("alice", 7)
    basic = base64.b64encode(userpass.format(token).encode()).decode()
    assert (await refused(gateway, raw("GET", "/svc", f"Authorization: Basic {basic}")))["error"] == (
        "invalid_token"
    )
    assert world.github.check_calls() == 0
    assert upstream.received == []


async def test_a_token_longer_than_255_characters_never_reaches_github(
    gateway: Gateway, world: World
) -> None:
    """GitHub's documented maximum is 255 characters: anything longer is junk to spam GitHub with."""
    token = canary("a" * 256)
    answer = await exchange(gateway.port, raw("GET", "/svc", f"Authorization: Bearer {token}"))
    assert statuses(answer) == [401]
    assert body_of(answer)["error"] == "invalid_token"
    assert token.encode() not in answer
    assert world.github.check_calls() == 0


@pytest.mark.parametrize("suffix", ["!", '"', ",x", "=x", "\\", "<>", "%0d%0a", "'", "{}"])
async def test_a_token_outside_b64token_never_reaches_github(
    gateway: Gateway, upstream: RecordingUpstream, world: World, suffix: str
) -> None:
    """RFC 6750 b64token: a token with other characters is malformed, refused before any call."""
    token = canary(suffix)
    answer = await exchange(gateway.port, raw("GET", "/svc", f"Authorization: Bearer {token}"))
    assert statuses(answer) == [401]
    assert body_of(answer)["error"] == "invalid_token"
    assert token.encode() not in answer
    assert world.github.check_calls() == 0
    assert upstream.received == []


@pytest.mark.parametrize(
    "value",
    [
        "Bearer",
        "Bearer {}x {}",
        "Bearer  {}",
        "Bearer\t{}",
        "Bearer:{}",
        "Bearer{}",
        "Beare {}",
        "Bearer {}, Bearer {}",
        "\u0412earer {}",  # a Cyrillic capital Ve for the B
        "Bearer {}é",
    ],
)
async def test_a_malformed_authorization_never_reaches_github(
    gateway: Gateway, upstream: RecordingUpstream, world: World, value: str
) -> None:
    """Authorization parsing differentials: whatever is not exactly `Bearer <b64token>` is refused
    without a check call, so no reading of it is ever sent to GitHub."""
    message = f"GET /svc HTTP/1.1\r\nHost: gateway\r\nAuthorization: {value.format(canary(), canary())}\r\n"
    answer = await exchange(gateway.port, (message + "Connection: close\r\n\r\n").encode())
    assert statuses(answer) == [401]
    assert body_of(answer)["error"] == "invalid_token"
    assert world.github.check_calls() == 0
    assert upstream.received == []


@pytest.mark.parametrize("path", ["/svc", "/public"])
async def test_two_authorization_headers_are_400_without_asking_github(
    gateway: Gateway, upstream: RecordingUpstream, world: World, path: str
) -> None:
    """Duplicate-credential confusion: the gateway would check one, the upstream read the other."""
    token = world.github.add_token("alice", 7)
    for pair in (
        (f"Authorization: Bearer {token}", "Authorization: Bearer junk"),
        ("authorization: Bearer junk", f"Authorization: Bearer {token}"),
        (f"Authorization: Bearer {token}", f"AUTHORIZATION: Bearer {token}"),
    ):
        assert (await refused(gateway, raw("GET", path, *pair), status=400))["error"] == "bad_request"
    assert world.github.check_calls() == 0
    assert upstream.received == []


@pytest.mark.parametrize("pass_authorization", [False, True])
async def test_a_public_route_neither_checks_nor_forwards_credentials(
    start_gateway: GatewayFactory, upstream: RecordingUpstream, world: World, pass_authorization: bool
) -> None:
    """Unvalidated credentials passed on: an upstream behind an `auth: none` route would take a token
    the gateway never checked for one it had (issue 4)."""
    gateway = await start_gateway(pass_authorization=pass_authorization)
    token = canary()
    answer = await exchange(gateway.port, raw("GET", "/public", f"Authorization: Bearer {token}"))
    assert statuses(answer) == [200]
    assert world.github.check_calls() == 0
    [seen] = upstream.received
    assert seen.values("Authorization") == []
    assert token.encode() not in answer


async def test_an_invalid_token_on_an_optional_route_is_not_downgraded_to_anonymous(
    gateway: Gateway, upstream: RecordingUpstream, world: World
) -> None:
    """Fail-open on bad credentials: a revoked or made-up token must not pass as "no token"."""
    revoked = world.github.add_token("alice", 7)
    world.github.revoke(revoked)
    for value in (f"Bearer {revoked}", f"Bearer {canary()}", f"Bearer {canary('!')}"):
        body = await refused(gateway, raw("GET", "/maybe", f"Authorization: {value}"))
        assert body["error"] == "invalid_token"
    assert upstream.received == []
