"""A rolling restart on one host (README: Workers): the old `gateway serve` drains after SIGTERM while a
replacement starts on the same main and admin ports and serves, and the old one's request in flight
still completes."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from .support.processes import eventually, serving
from .support.sockets import free_port

BOUND = 20.0


def refused(port: int) -> bool:
    """Nothing listens on the port any more."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_replacement_starts_on_the_same_ports_while_the_old_one_drains(
    tmp_path: Path, aiohttp_server: Callable[..., Awaitable[TestServer]], workers: int
) -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def held(_request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response(text="finished by the old one")

    async def quick(_request: web.Request) -> web.Response:
        return web.Response(text="served")

    app = web.Application()
    app.router.add_get("/held", held)
    app.router.add_get("/quick", quick)
    upstream = await aiohttp_server(app)
    port, admin = free_port(), free_port()
    config = {
        "server": {"host": "127.0.0.1", "port": port, "workers": workers, "shutdown_timeout": "20s"},
        "admin": {"host": "127.0.0.1", "port": admin},
        "github": {"api_url": "http://127.0.0.1:9", "apps": [{"client_id": "Iv1.0", "client_secret": "s"}]},
        "routes": [{"path": "/", "upstream": str(upstream.make_url("")).rstrip("/"), "auth": "none"}],
    }
    async with serving(config, tmp_path, name="old") as old, aiohttp.ClientSession() as session:
        await eventually(lambda: not refused(admin), "the old one never bound the admin port")
        in_flight = asyncio.ensure_future(session.get(f"http://127.0.0.1:{port}/held"))
        try:
            await asyncio.wait_for(arrived.wait(), BOUND)
            old.send_signal(signal.SIGTERM)
            await eventually(lambda: refused(admin) and refused(port), "the old one kept its ports")
            async with serving(config, tmp_path, name="new"):
                # with workers, the parent listens on the main port before a worker has bound the admin one
                await eventually(lambda: not refused(admin), "the new one never bound the admin port")
                async with session.get(f"http://127.0.0.1:{admin}/healthz") as resp:
                    assert resp.status == 200
                async with session.get(f"http://127.0.0.1:{port}/quick") as resp:
                    assert resp.status == 200
                    assert await resp.text() == "served"
                assert old.poll() is None  # still draining
                release.set()
                async with await in_flight as resp:
                    assert resp.status == 200
                    assert await resp.text() == "finished by the old one"
        finally:
            release.set()  # a failure above must not leave the old one draining for ever
        assert await asyncio.to_thread(old.wait, BOUND) == 0
