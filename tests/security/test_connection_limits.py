"""Clients that hold what a connection costs: idle connections by the thousand, heads of hundreds of
kilobytes, bodies that stall, keep-alive connections never used again. Each is bounded by a `server.*`
key (README: Configuration) and answered as the README's "What callers get back" says.

The gateway itself tells the time: waits here end when the gateway closes a connection or answers,
and `BOUND` only bounds a hang.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from ..support.metrics import value
from ..support.sockets import body_of, exchange, raw, read_response, statuses
from ..support.upstreams import RecordingUpstream
from ..support.world import GatewayFactory

BOUND = 10.0
TIMEOUT = 0.3  # body_timeout and keepalive_timeout where a test waits them out

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
async def connections() -> AsyncIterator[Callable[[int, int], Awaitable[list[Connection]]]]:
    """Opens `n` connections to a port that send nothing; all closed afterwards."""
    opened: list[Connection] = []

    async def open_idle(port: int, n: int) -> list[Connection]:
        batch = [await asyncio.open_connection("127.0.0.1", port) for _ in range(n)]
        opened.extend(batch)
        return batch

    yield open_idle
    for _, writer in opened:
        writer.close()


async def closed_unanswered(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), BOUND) == b""
    except ConnectionResetError:
        return True


async def test_a_thousand_idle_connections_do_not_lock_out_a_client_with_a_request(
    start_gateway: GatewayFactory,
    upstream: RecordingUpstream,
    connections: Callable[[int, int], Awaitable[list[Connection]]],
) -> None:
    """Connection exhaustion: 1,100 connections that send nothing, against max_connections 1000. The
    longest-idle ones make room, so a real client is still served."""
    gateway = await start_gateway(server={"max_connections": 1000})
    evicted_before = value("gateway_connections_refused_total", closed="idle")
    idle = await connections(gateway.port, 1100)
    resp = await gateway.client.get("/public/real")
    assert resp.status == 200
    assert upstream.paths == ["/public/real"]
    # the first 101 opened (100 over the limit, and room for the real client) were closed, unanswered
    assert all([await closed_unanswered(reader) for reader, _ in idle[:101]])
    assert value("gateway_connections_refused_total", closed="idle") - evicted_before == 101
    assert value("gateway_connections_open") <= 1000


async def test_over_max_connections_with_none_idle_a_new_connection_is_closed_at_once(
    start_gateway: GatewayFactory, connections: Callable[[int, int], Awaitable[list[Connection]]]
) -> None:
    """A connection mid-request is never the one closed to make room: the newcomer is."""
    gateway = await start_gateway(server={"max_connections": 3})
    refused_before = value("gateway_connections_refused_total", closed="new")
    busy = await connections(gateway.port, 3)
    for _, writer in busy:
        writer.write(b"GET /public/busy HTTP/1.1\r\nHost: gateway\r\n")  # a head on its way
    assert all([await closed_unanswered(reader) for reader, _ in await connections(gateway.port, 2)])
    assert value("gateway_connections_refused_total", closed="new") - refused_before == 2
    for reader, writer in busy:  # each one's request still completes
        writer.write(b"Connection: close\r\n\r\n")
        assert statuses(await asyncio.wait_for(reader.read(), BOUND)) == [200]


def many_headers(total: int) -> list[str]:
    """Headers of 1 KiB each, within aiohttp's limits per line and count, `total` bytes together."""
    return [f"X-Filler-{i}: {'a' * 1010}" for i in range(total // 1024)]


@pytest.mark.parametrize("ended", [True, False], ids=["complete", "endless"])
async def test_a_request_head_over_max_header_size_gets_431_and_the_connection_closes(
    start_gateway: GatewayFactory, upstream: RecordingUpstream, ended: bool
) -> None:
    """Memory exhaustion through headers: 100 KiB of them (aiohttp alone takes 128 lines of 8 KiB),
    as one whole head, or one that never ends."""
    gateway = await start_gateway()
    head = raw("GET", "/public/big", *many_headers(100 * 1024), close=False)
    answer = await exchange(gateway.port, head if ended else head[:-2])  # read until the gateway closes
    assert statuses(answer) == [431]
    assert body_of(answer)["error"] == "request_header_fields_too_large"
    assert upstream.paths == []


async def test_a_large_body_read_with_its_head_is_no_large_head(
    start_gateway: GatewayFactory, upstream: RecordingUpstream
) -> None:
    """The size is the head's: a body arriving in the same reads is not counted in it."""
    gateway = await start_gateway(server={"max_header_size": 4096})
    body = b"b" * (512 * 1024)
    answer = await exchange(
        gateway.port, raw("POST", "/public/upload", f"Content-Length: {len(body)}") + body
    )
    assert statuses(answer) == [200]
    assert upstream.received[0].body == body


async def stalled_body(port: int) -> tuple[bytes, float]:
    """A POST whose body stops half way: what came back until the gateway closed, and when."""
    started = time.monotonic()
    answer = await exchange(
        port, raw("POST", "/public/stall", "Content-Length: 10", close=False) + b"half-", within=BOUND
    )
    return answer, time.monotonic() - started


async def test_a_body_that_stalls_gets_408_and_the_connection_closes_after_body_timeout(
    start_gateway: GatewayFactory,
) -> None:
    """Slow POST (slowloris' body form): a body that stops sending holds nothing past body_timeout."""
    gateway = await start_gateway(server={"body_timeout": TIMEOUT})
    answer, seconds = await stalled_body(gateway.port)
    assert statuses(answer) == [408]
    assert body_of(answer)["error"] == "request_timeout"
    assert TIMEOUT * 0.9 <= seconds < BOUND / 5


async def test_an_upstream_slow_to_take_a_body_is_not_the_clients_stall(
    start_gateway: GatewayFactory, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    """body_timeout times the client only: an upstream that reads a large upload late is no 408."""
    arrived, release = asyncio.Event(), asyncio.Event()

    async def late_reader(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response(text=str(len(await request.read())))

    async def reader(request: web.Request) -> web.Response:
        return web.Response(text=str(len(await request.read())))

    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/late", late_reader)
    app.router.add_post("/public/stall", reader)  # waits for the body: only the client can stall it
    late = await aiohttp_server(app)
    gateway = await start_gateway(
        server={"body_timeout": TIMEOUT},
        routes=[{"path": "/", "upstream": str(late.make_url("")).rstrip("/"), "auth": "none"}],
    )
    size = 32 << 20  # far more than socket buffers hold: the gateway waits on the upstream

    async def body() -> AsyncIterator[bytes]:
        for _ in range(size // (1 << 20)):
            yield b"u" * (1 << 20)

    upload = asyncio.ensure_future(gateway.client.post("/late", data=body()))
    try:
        await asyncio.wait_for(arrived.wait(), BOUND)
        answer, _ = await stalled_body(gateway.port)  # body_timeout has passed meanwhile
        assert statuses(answer) == [408]
    finally:
        release.set()
    resp = await asyncio.wait_for(upload, BOUND)
    assert resp.status == 200
    assert await resp.text() == str(size)


async def test_an_idle_keep_alive_connection_is_closed_after_keepalive_timeout(
    start_gateway: GatewayFactory,
) -> None:
    """Idle keep-alive connections are not kept for aiohttp's hour: keepalive_timeout closes them."""
    gateway = await start_gateway(server={"keepalive_timeout": TIMEOUT})
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(raw("GET", "/public/once", close=False))
        assert statuses(await read_response(reader)) == [200]
        started = time.monotonic()
        assert await closed_unanswered(reader)
        assert TIMEOUT * 0.9 <= time.monotonic() - started < BOUND / 5
    finally:
        writer.close()
