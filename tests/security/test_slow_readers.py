"""Slow readers: clients that ask for a large download and read none of it, to make the gateway hold
the answer for them. What each one holds is bounded (README, *Connection limits*), measured here on
`gateway serve` itself, as an operator would see it: the process's resident memory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestServer

from ..support.processes import eventually, rss_kib, serving
from ..support.sockets import free_port, raw

READERS = 20
SIZE = 256 << 20  # per download: far more than the kernel buffers on its way hold
BLOCK = bytes(range(256)) * 256  # 64 KiB
# README: a slow reader holds at most 512 KiB of its answer; the rest is the connection's own objects
BOUND_KIB = 640


class Download:
    """An upstream sending SIZE bytes per request as fast as it is taken; counts what it has sent."""

    def __init__(self) -> None:
        self.started = 0
        self.sent = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = SIZE
        await response.prepare(request)
        self.started += 1
        for _ in range(SIZE // len(BLOCK)):
            await response.write(BLOCK)
            self.sent += len(BLOCK)
        return response


async def test_slow_readers_of_a_large_download_hold_a_bounded_amount_of_memory_each(
    tmp_path: Path, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    """20 clients each ask for 256 MiB and read nothing; once the gateway has stopped taking the
    answers from the upstream, its memory has grown by less than the bound per client (it was
    1.6 MiB each before the answer was relayed in bounded pieces)."""
    download = Download()
    app = web.Application()
    app.router.add_get("/big", download.handle)
    upstream = await aiohttp_server(app)
    port = free_port()
    config = {
        "server": {"host": "127.0.0.1", "port": port, "shutdown_timeout": "1s"},
        "admin": None,
        "github": {"api_url": "http://127.0.0.1:9", "apps": [{"client_id": "Iv1.0", "client_secret": "s"}]},
        "routes": [{"path": "/", "upstream": str(upstream.make_url("")).rstrip("/"), "auth": "none"}],
    }
    async with serving(config, tmp_path) as proc:
        before = rss_kib(proc.pid)
        readers = [await asyncio.open_connection("127.0.0.1", port) for _ in range(READERS)]
        try:
            for _, writer in readers:
                writer.write(raw("GET", "/big"))
            last = [-1, time.monotonic()]

            def stalled() -> bool:  # every download started, and nothing more taken for a while
                if download.sent != last[0]:
                    last[:] = [download.sent, time.monotonic()]
                return download.started == READERS and time.monotonic() - last[1] > 0.5

            await eventually(stalled, "the gateway never stalled on its slow readers")
            per_reader = (rss_kib(proc.pid) - before) / READERS
            assert per_reader < BOUND_KIB, f"{per_reader:.0f} KiB per slow reader"
        finally:
            for _, writer in readers:
                writer.close()
