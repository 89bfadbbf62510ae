"""Slow clients (slowloris): a request head must be complete within `server.header_timeout`, or the
connection is closed without an answer; a slow body, a slow answer and an idle keep-alive connection
are never cut by it.

The gateway itself tells the time: a connection opened later that sends nothing is closed after every
header deadline armed before it, so waiting for that close waits them out without a sleep.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from ..support.sockets import raw, read_response, statuses
from ..support.upstreams import RecordingUpstream
from ..support.world import Gateway, GatewayFactory

HEADER_TIMEOUT = 0.3
BOUND = 10.0  # only bounds a hang: every close awaited here comes long before it
TICK = 0.05  # a slow client's pace: one byte per tick


@pytest.fixture
async def gateway(start_gateway: GatewayFactory) -> Gateway:
    return await start_gateway(server={"header_timeout": HEADER_TIMEOUT})


@pytest.fixture
async def connection(gateway: Gateway) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    yield reader, writer
    writer.close()


async def silent_connection_closed(port: int) -> float:
    """Open a connection that sends nothing and wait for the gateway to close it: the seconds it took."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        assert await asyncio.wait_for(reader.read(), BOUND) == b""  # closed, not answered
    finally:
        writer.close()
    return time.monotonic() - started


async def test_a_connection_that_sends_nothing_is_closed_after_header_timeout(gateway: Gateway) -> None:
    """Slowloris' cheapest form: open connections, send nothing, hold them."""
    assert HEADER_TIMEOUT * 0.9 <= await silent_connection_closed(gateway.port) < BOUND / 5


@pytest.mark.parametrize("before", [b"", raw("GET", "/public/first", close=False)], ids=["first", "next"])
async def test_a_request_head_trickled_byte_by_byte_is_cut_after_header_timeout(
    gateway: Gateway,
    upstream: RecordingUpstream,
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    before: bytes,
) -> None:
    """Slowloris: a head sent a byte at a time never completes, on a new connection or after a
    keep-alive request; each byte arriving must not restart the deadline."""
    reader, writer = connection
    if before:
        writer.write(before)
        assert statuses(await read_response(reader)) == [200]
    head = itertools.chain(b"GET /public/slow HTTP/1.1\r\nHost: gateway\r\nX-Slow: ", itertools.repeat(97))
    started = time.monotonic()
    answer = None
    while answer is None and time.monotonic() - started < BOUND:
        writer.write(bytes((next(head),)))
        try:
            answer = await asyncio.wait_for(reader.read(1), TICK)
        except TimeoutError:
            continue  # still open: the next byte
        except ConnectionResetError:
            answer = b""
    assert answer == b""  # closed, not answered
    assert time.monotonic() - started < BOUND / 5
    assert upstream.paths == (["/public/first"] if before else [])


async def test_a_body_uploaded_for_longer_than_header_timeout_arrives_whole(
    gateway: Gateway,
    upstream: RecordingUpstream,
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    """The deadline covers the head only: a slow upload (a large file on a slow link) is no attack."""
    reader, writer = connection
    writer.write(raw("POST", "/public/upload", "Content-Length: 10", "Expect: 100-continue") + b"first")
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND) == b"HTTP/1.1 100 Continue\r\n\r\n"
    await silent_connection_closed(gateway.port)  # the deadline has passed mid-body
    writer.write(b"-last")
    assert statuses(await read_response(reader)) == [200]
    assert [(r.path, r.body) for r in upstream.received] == [("/public/upload", b"first-last")]


async def test_an_idle_keep_alive_connection_outlives_header_timeout(
    gateway: Gateway,
    upstream: RecordingUpstream,
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    """Between requests a connection is idle, not slow: keep-alive reuse (keepalive_timeout's
    business) must not be cut by the header deadline."""
    reader, writer = connection
    writer.write(raw("GET", "/public/first", close=False))
    assert statuses(await read_response(reader)) == [200]
    await silent_connection_closed(gateway.port)
    writer.write(raw("GET", "/public/second"))
    assert statuses(await read_response(reader)) == [200]
    assert upstream.paths == ["/public/first", "/public/second"]


async def test_an_answer_slower_than_header_timeout_is_not_cut(
    start_gateway: GatewayFactory, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    """The deadline ends with the head: an upstream taking its time is the route's `timeout` business."""
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response(text="worth the wait")

    app = web.Application()
    app.router.add_get("/slow", slow)
    slow_upstream = await aiohttp_server(app)
    gateway = await start_gateway(
        server={"header_timeout": HEADER_TIMEOUT},
        routes=[{"path": "/", "upstream": str(slow_upstream.make_url("")).rstrip("/"), "auth": "none"}],
    )
    answer = asyncio.ensure_future(gateway.client.get("/slow"))
    await asyncio.wait_for(arrived.wait(), BOUND)
    await silent_connection_closed(gateway.port)
    release.set()
    resp = await answer
    assert resp.status == 200
    assert await resp.text() == "worth the wait"
