"""An `https://` upstream: the certificate is verified (system CAs, or `SSL_CERT_FILE` for a private
CA), and one the gateway cannot verify is a 502, never a request sent in the clear or unverified."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from gateway.testing.echo import echo_app

from .support.headers import bearer
from .support.tls import self_signed
from .support.world import GatewayFactory, World


@pytest.fixture
async def tls_upstream(
    aiohttp_server: Callable[..., Awaitable[TestServer]], tmp_path: Path
) -> tuple[str, Path]:
    """An echo upstream over TLS; its URL and the certificate that vouches for it."""
    cert, key = self_signed(tmp_path, "upstream")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = await aiohttp_server(echo_app(), ssl=context)
    return f"https://127.0.0.1:{server.port}", cert


async def test_an_https_upstream_trusted_through_ssl_cert_file_gets_the_request(
    start_gateway: GatewayFactory,
    world: World,
    tls_upstream: tuple[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, cert = tls_upstream
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # a private CA, the way OpenSSL is told of one
    gateway = await start_gateway(routes=[{"path": "/", "upstream": url}])
    token = world.github.add_token("alice", 7)
    for _ in range(2):  # the second request on the pooled TLS connection
        async with gateway.client.get("/svc?x=1", headers=bearer(token)) as resp:
            assert resp.status == 200
            echo = await resp.json()
        assert echo["path"] == "/svc?x=1"
        assert dict(echo["headers"])["X-Auth-User"] == "alice"


async def test_an_https_upstream_whose_certificate_cannot_be_verified_is_a_502(
    start_gateway: GatewayFactory, world: World, tls_upstream: tuple[str, Path]
) -> None:
    url, _ = tls_upstream
    gateway = await start_gateway(routes=[{"path": "/", "upstream": url}])
    async with gateway.client.get("/svc", headers=bearer(world.github.add_token("alice", 7))) as resp:
        assert resp.status == 502
        body = await resp.json()
    assert body["error"] == "bad_gateway"
