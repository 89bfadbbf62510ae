"""The shipped Caddy example (config/Caddyfile.forward-auth) in front of the gateway, with a real Caddy."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from .support.headers import bearer, seen_headers
from .support.processes import REPO, until_listening
from .support.sockets import free_port
from .support.world import GatewayFactory, World

CADDY = shutil.which("caddy")

pytestmark = pytest.mark.skipif(CADDY is None, reason="caddy is not installed (make test installs it)")


def caddyfile(port: int, gateway_port: int, upstream_port: int) -> str:
    site = (REPO / "config" / "Caddyfile.forward-auth").read_text()
    site = site.replace("127.0.0.1:8080", f"127.0.0.1:{gateway_port}")
    site = site.replace("127.0.0.1:8081", f"127.0.0.1:{upstream_port}")
    site = site.replace("service.example.com {", f"http://127.0.0.1:{port} {{")
    return "{\n\tadmin off\n\tauto_https off\n}\n" + site


@pytest.fixture
async def caddy(start_gateway: GatewayFactory, world: World, tmp_path: Path) -> AsyncIterator[str]:
    """Caddy on a free port, its forward_auth asking a gateway set up as the example says."""
    assert CADDY is not None
    gateway = await start_gateway(server={"forward_auth_headers": "forwarded"})
    port = free_port()
    conf = tmp_path / "Caddyfile"
    conf.write_text(caddyfile(port, gateway.port, int(world.upstream_url.rsplit(":", 1)[1])))
    log = tmp_path / "caddy.log"
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "XDG_DATA_HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path),
    }
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            CADDY, "run", "--config", str(conf), "--adapter", "caddyfile", env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        await until_listening(url, lambda: proc.returncode is None, log.read_text)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 20)


async def test_caddy_forward_auth_lets_a_valid_token_through_with_identity(caddy: str, world: World) -> None:
    token = world.github.add_token("alice", 7, ["repo"])
    async with aiohttp.ClientSession() as session:
        headers = {**bearer(token), "X-Auth-User": "root", "X-Auth-Token-Expires-At": "2999-01-01T00:00:00Z"}
        async with session.get(caddy + "/svc?x=1", headers=headers) as resp:
            assert resp.status == 200
            echo = await resp.json()
    assert seen_headers(echo, "X-Auth-User") == ["alice"]
    assert seen_headers(echo, "X-Auth-Scopes") == ["repo"]
    assert seen_headers(echo, "X-Auth-Token-Expires-At") == []  # the token never expires
    assert seen_headers(echo, "Authorization") == []
    assert echo["path"] == "/svc?x=1"


async def test_caddy_forward_auth_refuses_what_the_gateway_refuses(caddy: str, world: World) -> None:
    token = world.github.add_token("alice", 7, ["repo"])
    async with aiohttp.ClientSession() as session:
        async with session.get(caddy + "/svc") as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"] == 'Bearer realm="gateway"'
        async with session.get(caddy + "/admin", headers=bearer(token)) as resp:
            assert resp.status == 403
        async with session.post(caddy + "/getonly", headers=bearer(token)) as resp:
            assert resp.status == 403


async def test_a_callers_x_original_uri_cannot_choose_the_policy_behind_caddy(caddy: str) -> None:
    """The bypass: an anonymous DELETE on a protected path, claiming in X-Original-URI/-Method to be a
    GET of a public one. Caddy passes the caller's headers on to the gateway beside its own."""
    spoofed = {"X-Original-URI": "/public/x", "X-Original-Method": "GET"}
    async with aiohttp.ClientSession() as session:
        async with session.delete(caddy + "/svc/records/1", headers=spoofed) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"] == "bad_request"
        async with session.delete(caddy + "/svc/records/1", headers={"X-Original-Method": "GET"}) as resp:
            assert resp.status == 400


async def test_identity_headers_a_caller_writes_never_reach_the_service_behind_caddy(caddy: str) -> None:
    """On a public route the gateway's answer has no identity headers for copy_headers to set: the
    caller's own, in either spelling, must not pass in their place."""
    spoofed = {"X-Auth-User": "root", "X_Auth_User": "root", "x-auth-user-id": "1", "X-Auth-Scopes": "admin"}
    async with aiohttp.ClientSession() as session, session.get(caddy + "/public/x", headers=spoofed) as resp:
        assert resp.status == 200
        echo = await resp.json()
    for name in ("X-Auth-User", "X-Auth-User-Id", "X-Auth-Scopes"):
        assert seen_headers(echo, name) == [], name
