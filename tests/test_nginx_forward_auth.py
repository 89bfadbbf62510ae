"""The shipped nginx example (config/forward-auth-nginx.conf) in front of the gateway, with a real nginx."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from .support.headers import bearer, seen_headers
from .support.processes import REPO, until_listening
from .support.sockets import free_port
from .support.world import Gateway, World

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)

pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (make test installs nginx-light)"
)


def nginx_conf(prefix: Path, port: int, gateway_port: int, upstream_port: int) -> str:
    site = (REPO / "config" / "forward-auth-nginx.conf").read_text()
    site = site.replace("127.0.0.1:8080", f"127.0.0.1:{gateway_port}")
    site = site.replace("127.0.0.1:8081", f"127.0.0.1:{upstream_port}")
    site = re.sub(r"listen 80;", f"listen 127.0.0.1:{port};", site)
    temp = "\n".join(
        f"  {kind}_temp_path {prefix}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"worker_processes 1;\ndaemon off;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log warn;\n"
        f"events {{ worker_connections 256; }}\nhttp {{\n  access_log off;\n{temp}\n{site}\n}}\n"
    )


@pytest.fixture
async def nginx(gateway: Gateway, world: World, tmp_path: Path) -> AsyncIterator[str]:
    assert NGINX is not None
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    prefix.chmod(0o777)  # nginx workers may run as nobody
    port = free_port()
    upstream_port = int(world.upstream_url.rsplit(":", 1)[1])
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_conf(prefix, port, gateway.port, upstream_port))
    proc = await asyncio.create_subprocess_exec(NGINX, "-p", str(prefix), "-c", str(conf))
    url = f"http://127.0.0.1:{port}"
    try:
        await until_listening(url, lambda: proc.returncode is None, (prefix / "error.log").read_text)
        yield url
    finally:
        proc.send_signal(signal.SIGQUIT)
        await asyncio.wait_for(proc.wait(), 20)


async def test_nginx_auth_request_lets_a_valid_token_through_with_identity(nginx: str, world: World) -> None:
    token = world.github.add_token("alice", 7, ["repo"])
    async with aiohttp.ClientSession() as session:
        headers = {**bearer(token), "X-Auth-User": "root"}
        async with session.get(nginx + "/svc?x=1", headers=headers) as resp:
            assert resp.status == 200
            echo = await resp.json()
    assert seen_headers(echo, "X-Auth-User") == ["alice"]
    assert seen_headers(echo, "X-Auth-Scopes") == ["repo"]
    assert seen_headers(echo, "Authorization") == []
    assert echo["path"] == "/svc?x=1"


async def test_nginx_auth_request_refuses_what_the_gateway_refuses(nginx: str, world: World) -> None:
    token = world.github.add_token("alice", 7, ["repo"])
    async with aiohttp.ClientSession() as session:
        async with session.get(nginx + "/svc") as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"] == 'Bearer realm="gateway"'
        async with session.get(nginx + "/admin", headers=bearer(token)) as resp:
            assert resp.status == 403
        async with session.get(nginx + "/_gateway/whoami", headers=bearer(token)) as resp:
            assert (await resp.json())["login"] == "alice"
