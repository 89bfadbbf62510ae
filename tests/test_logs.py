"""What the logs say about an answer: the body bytes the client got, an answer the upstream cut short,
and why a 502 or 504 happened (README: Logs)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from .support.headers import bearer
from .support.metrics import value
from .support.sockets import raw_request
from .support.world import GatewayFactory, World

BIG = 200_000  # past the size the gateway relays in one write: streamed


async def big_upstream(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> str:
    """`/big`: BIG bytes with a Content-Length; `/chunked`: three chunks, no length."""

    async def big(_request: web.Request) -> web.Response:
        return web.Response(body=b"b" * BIG)

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for size in (1000, 20_000, 7):
            await response.write(b"c" * size)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/big", big)
    app.router.add_get("/chunked", chunked)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


async def test_bytes_is_the_body_the_client_got_small_streamed_or_refused(
    start_gateway: GatewayFactory, world: World, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    streamed = await big_upstream(aiohttp_server)
    gateway = await start_gateway(
        routes=[
            {"path": "/stream", "upstream": streamed, "auth": "none", "strip_prefix": True},
            {"path": "/", "upstream": world.upstream_url},
        ]
    )
    token = world.github.add_token("alice", 7)
    received = []
    for path, headers in [
        ("/svc", bearer(token)),  # a small answer, relayed in one write
        ("/svc", {}),  # a refusal: 401 with its JSON body
        ("/stream/big", {}),
        ("/stream/chunked", {}),
    ]:
        resp = await gateway.client.get(path, headers=headers)
        received.append(len(await resp.read()))
    assert (await gateway.client.head("/svc")).status == 401  # a HEAD answer has no body
    assert received[2:] == [BIG, 21_007]
    assert [line["bytes"] for line in gateway.log_lines()] == [*received, 0]


@pytest.fixture
async def cutting() -> AsyncIterator[str]:
    """An upstream that promises BIG bytes, sends half of them and closes the connection."""

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG + b"x" * (BIG // 2))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(cut, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_an_answer_the_upstream_cuts_short_is_logged_and_counted_as_cut(
    start_gateway: GatewayFactory, cutting: str, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await start_gateway(routes=[{"path": "/cut", "upstream": cutting, "auth": "none"}])
    before = value("gateway_upstream_errors_total", route="/cut", kind="cut")
    status, answer = await raw_request(gateway.port, "GET /cut/x HTTP/1.1\r\nHost: gateway\r\n")
    body = answer.split(b"\r\n\r\n", 1)[1]
    assert status == 200 and len(body) < BIG  # the client sees a cut connection, not a whole answer
    [line] = gateway.log_lines()
    assert (line["status"], line["error"], line["bytes"]) == (200, "upstream_cut", len(body))
    assert value("gateway_upstream_errors_total", route="/cut", kind="cut") - before == 1
    [warning] = [r for r in caplog.records if r.name == "gateway" and r.levelno == logging.WARNING]
    assert "route /cut broke off its answer mid-body: ClientPayloadError" in warning.getMessage()
    assert cutting.removeprefix("http://") in warning.getMessage()


async def test_a_502_and_a_504_say_on_stderr_which_upstream_failed_and_why(
    start_gateway: GatewayFactory, unused_tcp_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    never = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await never.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    slow = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
        gateway = await start_gateway(
            routes=[
                {"path": "/gone", "upstream": f"http://127.0.0.1:{unused_tcp_port}", "auth": "none"},
                {"path": "/slow", "upstream": f"http://{slow}", "auth": "none", "timeout": "300ms"},
            ]
        )
        assert (await gateway.client.get("/gone/x?q=1")).status == 502
        assert (await gateway.client.get("/slow/x")).status == 504
        never.set()
    unreachable, timed_out = (
        r.getMessage() for r in caplog.records if r.name == "gateway" and r.levelno == logging.WARNING
    )
    assert unreachable.startswith(
        f"upstream http://127.0.0.1:{unused_tcp_port} of route /gone could not be reached: "
        "ClientConnectionError: cannot connect to the upstream: "
    )
    assert timed_out.startswith(f"upstream http://{slow} of route /slow did not answer in time: ")
    assert "Timeout" in timed_out  # aiohttp's SocketTimeoutError, saying it timed out reading


async def test_a_fault_in_the_request_path_is_a_json_500_with_its_log_line(
    start_gateway: GatewayFactory, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug of the gateway's own (injected here into route matching) still gets the JSON 500,
    an access-log line, a metric sample, and a log record that never quotes the exception's text."""
    gateway = await start_gateway()
    secret = "gho_" + "7" * 36

    def broken(path: str) -> None:
        raise RuntimeError(f"a bug that quotes {secret}")

    gateway.app.routes.match = broken  # type: ignore[method-assign]
    before = value("gateway_requests_total", route="", code="500")
    resp = await gateway.client.get("/svc", headers={"X-Request-Id": "fault-1"})
    assert resp.status == 500
    assert (await resp.json())["error"] == "internal_error"
    assert resp.headers["X-Request-Id"] == "fault-1"
    line = gateway.log_lines()[-1]
    assert (line["status"], line["request_id"], line["path"]) == (500, "fault-1", "/svc")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "unhandled RuntimeError serving GET /svc (request fault-1)" in logged
    assert secret not in logged
    assert value("gateway_requests_total", route="", code="500") - before == 1
