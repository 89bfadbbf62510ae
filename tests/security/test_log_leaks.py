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
    """kubectl's `base64url.bearer.authorization.k8s.io.<token>` subprotocol, beside the one the
    upstream picks: the handshake passes through the gateway's tunnel as it came, the upstream's choice
    comes back, and nothing on the way logs what was offered."""
    offered = "base64url.bearer.authorization.k8s.io." + canary()
    async with gateway.client.ws_connect("/public/ws", protocols=(offered, "v1.example")) as ws:
        await ws.send_str("hello")
        assert (await ws.receive_str()) == "hello"
        assert ws.protocol == "v1.example"
    assert caplog.records  # DEBUG and up, aiohttp's and the gateway's: the check below reads something
    assert CANARY not in caplog.text
    assert CANARY not in gateway.log_text()


async def test_a_query_string_is_not_quoted_in_the_warning_behind_a_502(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    """The 502's warning says which route's upstream declined and how, and quotes nothing the caller
    sent (the query string may hold a signature)."""
    secret = "sig-" + secrets.token_hex(16)  # not the canary: the recording upstream logs its queries
    resp = await gateway.client.get(
        f"/public/refuse?signature={secret}",
        headers={"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                 "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="},
    )  # fmt: skip
    assert resp.status == 502
    [warning] = [r.getMessage() for r in caplog.records if r.name == "gateway"]
    assert "of route /public refused the WebSocket: it answered 200, not 101 Switching Protocols" in warning
    assert secret not in warning
