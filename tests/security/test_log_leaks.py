"""Secrets that ride where logs look: a query string quoted by the error behind a 502 (CWE-532)."""

from __future__ import annotations

import secrets

import pytest

from ..conftest import Gateway


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
