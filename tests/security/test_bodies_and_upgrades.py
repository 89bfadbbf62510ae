"""Bodies and upgrades: `max_body_size` is enforced while streaming, before the upstream is troubled,
and a WebSocket upgrade is authenticated like any request and never turns into an open tunnel.
"""

from __future__ import annotations

import aiohttp
import pytest

from ..support.canary import canary
from ..support.sockets import SMUGGLED, body_of, exchange, raw, statuses
from ..support.upstreams import RecordingUpstream
from ..support.world import Gateway, GatewayFactory, World

LIMIT = 1000
UPGRADE = (
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
)


@pytest.fixture
async def limited(start_gateway: GatewayFactory) -> Gateway:
    return await start_gateway(server={"host": "127.0.0.1", "port": 0, "max_body_size": LIMIT})


async def test_a_content_length_over_the_limit_is_413_before_the_upstream_is_contacted(
    limited: Gateway, upstream: RecordingUpstream
) -> None:
    """Resource exhaustion: a declared oversized body is refused before a byte of it is read or sent on."""
    head = raw("POST", "/public", f"Content-Length: {100 * LIMIT}", close=False)
    answer = await exchange(limited.port, head, responses=1)  # the body is never sent
    assert statuses(answer) == [413]
    assert body_of(answer)["error"] == "payload_too_large"
    assert upstream.received == []
    answer = await exchange(
        limited.port, raw("POST", "/public", f"Content-Length: {LIMIT}", body=b"x" * LIMIT)
    )
    assert statuses(answer) == [200]
    assert upstream.received[0].body == b"x" * LIMIT


async def test_a_chunked_body_over_the_limit_is_413_while_it_is_still_streaming(
    limited: Gateway, upstream: RecordingUpstream
) -> None:
    """Resource exhaustion without Content-Length: the limit holds mid-stream, never after buffering."""
    chunk = b"%x\r\n%s\r\n" % (LIMIT // 2 + 1, b"y" * (LIMIT // 2 + 1))
    head = raw("POST", "/public", "Transfer-Encoding: chunked", close=False)
    answer = await exchange(limited.port, head + chunk * 2, responses=1)  # no last chunk: still open
    assert statuses(answer) == [413]
    assert all(r.body is None for r in upstream.received)  # nothing whole ever arrived upstream


async def test_a_websocket_upgrade_without_credentials_is_refused_and_opens_nothing(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    """Unauthenticated WebSocket: an upgrade is a request like any other (README: What callers get back)."""
    answer = await exchange(
        gateway.port, raw("GET", "/svc/ws", *UPGRADE, close=False) + SMUGGLED, responses=2
    )
    assert statuses(answer) == [401, 401]  # the bytes after the refused upgrade are a request, judged
    assert upstream.received == []


@pytest.mark.parametrize("suffix", ["", "!"])
async def test_a_websocket_upgrade_with_a_bad_token_is_refused(
    gateway: Gateway, upstream: RecordingUpstream, world: World, suffix: str
) -> None:
    """Unauthenticated WebSocket: an invalid or malformed token gets 401 at the handshake."""
    token = canary(suffix)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with gateway.client.ws_connect("/svc/ws", headers={"Authorization": f"Bearer {token}"}):
            pass
    assert refused.value.status == 401
    assert world.github.check_calls() == (0 if suffix else 1)
    assert upstream.received == []


async def test_a_websocket_upgrade_is_held_to_the_routes_scopes(
    gateway: Gateway, upstream: RecordingUpstream, mallory: str
) -> None:
    """Policy bypass by protocol: a scope the route requires is required of its WebSockets too."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with gateway.client.ws_connect("/admin/ws", headers={"Authorization": f"Bearer {mallory}"}):
            pass
    assert refused.value.status == 403
    assert upstream.received == []


async def test_an_upstream_that_declines_the_websocket_opens_no_tunnel(
    gateway: Gateway, upstream: RecordingUpstream, world: World
) -> None:
    """WebSocket connection smuggling: a proxy that trusts the client's Upgrade and not the upstream's
    answer keeps a raw tunnel open to the upstream, past every route's policy."""
    token = world.github.add_token("alice", 7)
    upgrade = raw("GET", "/svc/refuse", *UPGRADE, f"Authorization: Bearer {token}", close=False)
    answer = await exchange(gateway.port, upgrade + SMUGGLED, responses=2)
    assert statuses(answer) == [502, 401]
    assert upstream.paths == ["/svc/refuse"]
