"""The listener (gateway/listener.py) as a client meets it on a raw socket: pipelined requests answered in
order past the parse-ahead bound, a refused body read and dropped so the connection lives on, and a
WebSocket tunnel that carries the bytes sent before the 101 and closes both ways."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest

from .support.processes import eventually
from .support.sockets import SMUGGLED, body_of, read_response, statuses
from .support.upstreams import raw_upstream, reset
from .support.world import Gateway, GatewayFactory, World


async def test_a_hundred_pipelined_requests_are_answered_in_order_on_one_connection(
    gateway: Gateway, world: World
) -> None:
    # more than the 32 requests parsed ahead: reading pauses, then resumes as they are answered
    token = world.github.add_token("alice", 7)
    requests = b"".join(
        f"GET /svc/{n} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
        for n in range(100)
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(requests)
    answers = [await read_response(reader) for _ in range(100)]
    writer.close()
    assert [statuses(a)[0] for a in answers] == [200] * 100
    assert [f'"/svc/{n}"'.encode() in a for n, a in enumerate(answers)] == [True] * 100


async def test_a_body_sent_to_a_refusal_is_read_and_the_connection_serves_the_next_request(
    gateway: Gateway, world: World
) -> None:
    # the 401 comes before the body is read; the listener reads and drops the rest, then goes on
    token = world.github.add_token("alice", 7)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(b"POST /svc/x HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n" + b"a" * 1000)
    refused = await read_response(reader)
    writer.write(b"a" * 299_000)
    writer.write(f"GET /svc/next HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    answered = await read_response(reader)
    writer.close()
    assert statuses(refused) == [401]
    assert statuses(answered) == [200] and b'"/svc/next"' in answered


def _frame(text: str) -> bytes:
    """A masked text frame, as a client sends it (RFC 6455 §5.2), of under 126 bytes."""
    mask = os.urandom(4)
    data = text.encode()
    return bytes([0x81, 0x80 | len(data)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


async def test_a_websocket_frame_sent_with_the_upgrade_reaches_the_upstream_and_both_ends_close(
    gateway: Gateway, world: World
) -> None:
    token = world.github.add_token("alice", 7)
    upgrade = (
        "GET /svc/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(upgrade + _frame("early"))  # one write: the frame is the tail after the head
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    # the upstream's own answer to the caller's key (RFC 6455's example key and accept)
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head
    echoed = await asyncio.wait_for(reader.readexactly(2 + len("alice: early")), 5)
    assert echoed == b"\x81\x0c" + b"alice: early"
    writer.write(bytes([0x88, 0x82]) + b"\0\0\0\0" + (1000).to_bytes(2, "big"))  # close, 1000
    closing = await asyncio.wait_for(reader.read(), 5)  # the upstream's close frame, then EOF
    writer.close()
    assert closing[:1] == b"\x88"


async def test_a_client_that_half_closes_after_its_requests_gets_every_answer(
    gateway: Gateway, world: World
) -> None:
    # `printf '...' | nc -N`: the requests, then the client's end of the connection shut for writing
    token = world.github.add_token("alice", 7)
    requests = b"".join(
        f"GET /svc/{n} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode() for n in (1, 2)
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(requests)
    writer.write_eof()
    answers = await asyncio.wait_for(reader.read(), 5)  # until the gateway closes, after both
    writer.close()
    assert statuses(answers) == [200, 200]
    assert b'"/svc/1"' in answers and b'"/svc/2"' in answers


async def test_a_body_whose_chunking_breaks_midway_is_400_and_nothing_more_is_read(
    start_gateway: GatewayFactory,
) -> None:
    # the request is already on its way upstream when a malformed chunk size arrives
    forwarded = asyncio.Event()

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        forwarded.set()
        await reader.read()  # until the gateway gives up on this request

    async with raw_upstream(upstream) as url:
        gateway = await start_gateway(routes=[{"path": "/", "upstream": url, "auth": "none"}])
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await asyncio.wait_for(forwarded.wait(), 5)
        writer.write(b"0x3\r\nabc\r\n0\r\n\r\n" + SMUGGLED)
        answer = await asyncio.wait_for(reader.read(), 5)  # until the gateway closes
        writer.close()
    assert statuses(answer) == [400]
    assert body_of(answer)["message"] == "the request body is malformed"


async def test_a_client_that_resets_before_its_answer_is_logged_499_and_nothing_is_an_error(
    start_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    asked, gone = asyncio.Event(), asyncio.Event()

    async def upstream(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asked.set()
        await gone.wait()  # answers once the client is gone: streamed, its length unknown
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        await writer.drain()

    async with raw_upstream(upstream) as url:
        gateway = await start_gateway(routes=[{"path": "/", "upstream": url, "auth": "none"}])
        _, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(asked.wait(), 5)
        reset(writer)  # a reset, not a close: the gateway's end is gone at once
        gone.set()
        await eventually(lambda: len(gateway.log_lines()) == 1, "the request's access-log line", within=5)
    assert [(line["path"], line["status"]) for line in gateway.log_lines()] == [("/slow", 499)]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
