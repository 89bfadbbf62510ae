"""Secrets that ride where logs look: a token offered as a WebSocket subprotocol, as Kubernetes clients
send theirs, and a query string quoted by the error behind a 502 (CWE-532)."""

from __future__ import annotations

import secrets

import pytest

from ..support.canary import CANARY, canary
from ..support.world import Gateway


async def test_a_token_offered_as_a_websocket_subprotocol_reaches_no_log(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    """kubectl's `base64url.bearer.authorization.k8s.io.<token>` subprotocol, which the upstream does
    not pick: aiohttp logs the protocols a client offered that no server knows."""
    offered = "base64url.bearer.authorization.k8s.io." + canary()
    async with gateway.client.ws_connect("/public/ws", protocols=(offered, "v1.example")) as ws:
        await ws.send_str("hello")
        assert (await ws.receive_str()) == "hello"
        assert ws.protocol is None
    overlaps = [r.getMessage() for r in caplog.records if r.name == "aiohttp.websocket"]
    # the message the gateway's filter withholds the arguments of is still there: if an aiohttp
    # upgrade words it otherwise or moves it to another logger, this fails rather than leak
    assert overlaps and all("Client protocols" in m and "withheld" in m for m in overlaps), overlaps
    assert CANARY not in caplog.text


async def test_a_query_string_is_not_quoted_in_the_warning_behind_a_502(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp's handshake error names the URL, query included: the 502's warning shows no query."""
    secret = "sig-" + secrets.token_hex(16)  # not the canary: the recording upstream logs its queries
    resp = await gateway.client.get(
        f"/public/refuse?signature={secret}",
        headers={"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                 "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="},
    )  # fmt: skip
    assert resp.status == 502
    [warning] = [r.getMessage() for r in caplog.records if r.name == "gateway"]
    assert "of route /public refused the WebSocket: WSServerHandshakeError" in warning
    assert "/public/refuse?…" in warning and secret not in warning
