"""Truthful relaying: what the caller gets is what the upstream said, no more and no less.

An answer the upstream broke off reaches the caller as a broken answer, never as a whole one; an
upstream that answers before it has read a large upload is heard, not replaced by a 502; and the
gateway adds no Content-Type the upstream did not give (docs/architecture.md: bodies pass through untouched).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from ..support.sockets import exchange, raw, read_response, statuses
from ..support.upstreams import raw_upstream, reset
from ..support.world import GatewayFactory


@pytest.mark.parametrize("ending", ["reset", "close"])
async def test_an_answer_delimited_by_close_and_cut_by_a_reset_reaches_the_caller_cut(
    start_gateway: GatewayFactory, ending: str
) -> None:
    """Truncation hidden as success: an answer without Content-Length ends when the connection closes;
    ended by a reset it is cut short, and a caller told it was whole would act on half a file."""
    seen_part = asyncio.Event()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst part;")
        await writer.drain()
        await seen_part.wait()
        if ending == "reset":
            reset(writer)
        else:
            writer.write(b"second part")
            await writer.drain()

    async with raw_upstream(answer) as url:
        gateway = await start_gateway(routes=[{"path": "/", "upstream": url, "auth": "none"}])
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(raw("GET", "/download"))
        received = await asyncio.wait_for(reader.readuntil(b"first part;"), 5)
        seen_part.set()
        received += await asyncio.wait_for(reader.read(), 5)  # until the gateway closes
        writer.close()
    assert statuses(received) == [200]
    if ending == "reset":
        assert not received.endswith(b"0\r\n\r\n")  # no last chunk: the caller sees a cut connection
        assert b"second part" not in received
        assert gateway.log_lines()[-1]["error"] == "upstream_cut"  # logged as cut, not as a plain 200
    else:
        assert received.endswith(b"second part\r\n0\r\n\r\n")  # the whole answer, properly ended


@pytest.mark.parametrize("then", ["closes", "waits"])
async def test_an_upstream_that_answers_before_reading_a_large_upload_is_heard(
    start_gateway: GatewayFactory, then: str
) -> None:
    """A 403 sent before the upstream reads a 64 MiB upload (and the upstream then closing, or waiting)
    reaches the caller as the upstream's 403, not as a 502 from the broken upload."""
    answered = asyncio.Event()

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = b'{"error":"no uploads here"}'
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n")
        writer.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        if then == "waits":
            await answered.wait()

    async with raw_upstream(refuse) as url:
        gateway = await start_gateway(routes=[{"path": "/", "upstream": url, "auth": "none"}])
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        size = 64 << 20
        writer.write(raw("PUT", "/upload", f"Content-Length: {size}", close=False))

        async def upload() -> None:
            with contextlib.suppress(ConnectionError):
                for _ in range(size >> 16):
                    writer.write(b"u" * (1 << 16))
                    await writer.drain()

        uploading = asyncio.create_task(upload())
        try:
            answer = await read_response(reader, 10)
        finally:
            answered.set()
            uploading.cancel()
            await asyncio.gather(uploading, return_exceptions=True)
            writer.close()
    assert statuses(answer) == [403]
    assert answer.endswith(b'{"error":"no uploads here"}')


@pytest.mark.parametrize("framing", ["Content-Length: 5\r\n", "Transfer-Encoding: chunked\r\n", ""])
async def test_an_answer_without_content_type_gets_none_added(
    start_gateway: GatewayFactory, framing: str
) -> None:
    """A body the upstream did not type stays untyped: `application/octet-stream` added on the way
    would change how a browser handles it (a download instead of a page, or the other way)."""
    body = b"5\r\nhello\r\n0\r\n\r\n" if "chunked" in framing else b"hello"

    async def untyped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n" + framing.encode() + b"\r\n" + body)
        await writer.drain()

    async with raw_upstream(untyped) as url:
        gateway = await start_gateway(routes=[{"path": "/", "upstream": url, "auth": "none"}])
        answer = await exchange(gateway.port, raw("GET", "/file"))
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert statuses(answer) == [200]
    assert b"content-type" not in head.lower()
    assert b"hello" in rest


async def test_an_answer_trickled_slower_than_the_routes_timeout_in_all_arrives_whole(
    start_gateway: GatewayFactory,
) -> None:
    """The route's `timeout` bounds the upstream's silence, not its whole answer: pieces 100 ms apart
    for 600 ms under a 300 ms timeout are relayed whole."""

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in range(6):
            writer.write(b"1\r\n%d\r\n" % piece)
            await writer.drain()
            await asyncio.sleep(0.1)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with raw_upstream(trickle) as url:
        gateway = await start_gateway(
            routes=[{"path": "/", "upstream": url, "auth": "none", "timeout": "300ms"}]
        )
        answer = await exchange(gateway.port, raw("GET", "/slowly"))
    assert statuses(answer) == [200]
    assert answer.endswith(b"".join(b"1\r\n%d\r\n" % piece for piece in range(6)) + b"0\r\n\r\n")


async def test_an_answer_that_falls_silent_is_cut_the_routes_timeout_after_its_last_byte(
    start_gateway: GatewayFactory,
) -> None:
    """An upstream silent mid-body for the route's `timeout` is cut then, counted from its last byte
    (not from when it began to answer), and the caller sees the cut."""
    silent = asyncio.Event()

    async def falls_silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"1\r\na\r\n")
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(b"1\r\nb\r\n")
        await writer.drain()
        await silent.wait()

    async with raw_upstream(falls_silent) as url:
        gateway = await start_gateway(
            routes=[{"path": "/", "upstream": url, "auth": "none", "timeout": "500ms"}]
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(raw("GET", "/stalls"))
        received = await asyncio.wait_for(reader.readuntil(b"1\r\nb\r\n"), 5)
        last_byte = time.monotonic()
        received += await asyncio.wait_for(reader.read(), 5)  # until the gateway closes
        silence = time.monotonic() - last_byte
        silent.set()
        writer.close()
    assert statuses(received) == [200]
    assert not received.endswith(b"0\r\n\r\n")  # no last chunk: the caller sees a cut connection
    assert 0.45 <= silence < 0.8
    assert gateway.log_lines()[-1]["error"] == "upstream_cut"


@pytest.mark.parametrize(
    ("beyond", "later"),
    [
        # a whole second answer
        (b"HTTP/1.1 302 Found\r\nLocation: /evil\r\nSet-Cookie: evil=1\r\nContent-Length: 0\r\n\r\n", b""),
        # a head begun, finished a moment later
        (b"HTTP/1.1 302 Found\r\nSet-Cookie: evil=1\r\n", b"Content-Length: 0\r\n\r\n"),
    ],
)
async def test_bytes_an_upstream_sends_beyond_its_answer_never_answer_the_next_caller(
    start_gateway: GatewayFactory, beyond: bytes, later: bytes
) -> None:
    """Response desync: an answer of known length followed, in the same write, by a second one. Read
    as the answer to the next request sent on that kept-alive connection, it would reach another
    caller (a cookie set, a redirect); the next caller gets the upstream's answer to its own request."""
    served = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        with contextlib.suppress(asyncio.IncompleteReadError):  # the gateway may close it: it should
            while True:
                served += 1
                body = f"answer {served}".encode()
                extra = beyond if served == 1 else b""
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b%b" % (len(body), body, extra))
                await writer.drain()
                if served == 1 and later:
                    writer.write(later)
                    await writer.drain()
                await reader.readuntil(b"\r\n\r\n")

    async with raw_upstream(answer) as url:
        gateway = await start_gateway(routes=[{"path": "/", "upstream": url, "auth": "none"}])
        first = await exchange(gateway.port, raw("GET", "/one"))
        second = await exchange(gateway.port, raw("GET", "/two"))
    assert statuses(first) == [200] and first.endswith(b"answer 1")
    assert statuses(second) == [200] and second.endswith(b"answer 2"), second
    assert b"evil" not in first + second
