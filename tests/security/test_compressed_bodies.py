"""Request smuggling through compressed bodies: a body is bytes, passed through as it came.

A proxy that inflates a `Content-Encoding: gzip` body and forwards the inflated bytes under the
caller's own `Content-Length` desynchronises its keep-alive upstream connection: the surplus reads as a
second request, with identity headers the anonymous caller wrote, and its answer goes to whoever sends
the next request on that connection (docs/architecture.md: never decompress, recompress or re-frame).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import RawTestServer

from ..support.sockets import exchange, raw, statuses
from ..support.world import Gateway, GatewayFactory

# What the attacker hides in the inflated body: a whole request claiming to be alice, to a path the
# route's policy would never let an anonymous caller reach
SMUGGLE = b"x" + b"GET /admin/smuggled HTTP/1.1\r\nHost: upstream\r\nX-Auth-User: alice\r\n\r\n"


class CountingUpstream:
    """A keep-alive upstream that records each request it parses, with the SHA-256 of its body exactly
    as it arrived (it inflates nothing either)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []  # (method, path, body sha256)
        self.answer_encoding: str | None = None
        self.answer_body = b""

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        self.seen.append((request.method, request.raw_path, hashlib.sha256(body).hexdigest()))
        headers = {"Content-Type": "application/octet-stream"}
        if self.answer_encoding is not None:
            headers["Content-Encoding"] = self.answer_encoding
        return web.Response(body=self.answer_body or body, headers=headers)


@pytest.fixture
async def counting(
    aiohttp_raw_server: Callable[..., Awaitable[RawTestServer]],
) -> tuple[CountingUpstream, str]:
    upstream = CountingUpstream()
    server = await aiohttp_raw_server(upstream.handle, auto_decompress=False)
    return upstream, str(server.make_url("")).rstrip("/")


@pytest.fixture
async def open_route(start_gateway: GatewayFactory, counting: tuple[CountingUpstream, str]) -> Gateway:
    """An `auth: none` route in front of the counting upstream: the attack needs no token at all."""
    return await start_gateway(routes=[{"path": "/", "upstream": counting[1], "auth": "none"}])


def _compressed(encoding: str) -> bytes:
    inflated = SMUGGLE * 20
    if encoding == "gzip":
        return gzip.compress(inflated)
    if encoding == "deflate":
        return zlib.compress(inflated)
    return os.urandom(300)  # br, zstd, or gzip that is not gzip: bytes the gateway cannot read either


@pytest.mark.parametrize(
    ("encoding", "label"),
    [("gzip", "gzip"), ("deflate", "deflate"), ("br", "br"), ("zstd", "zstd"), ("gzip", "malformed")],
)
async def test_a_compressed_body_reaches_the_upstream_as_one_request_byte_for_byte(
    open_route: Gateway, counting: tuple[CountingUpstream, str], encoding: str, label: str
) -> None:
    upstream, _ = counting
    body = os.urandom(300) if label == "malformed" else _compressed(encoding)
    attack = raw(
        "POST",
        "/upload",
        f"Content-Encoding: {encoding}",
        f"Content-Length: {len(body)}",
        close=False,
        body=body,
    )
    answer = await exchange(open_route.port, attack, responses=1)
    assert statuses(answer) == [200]  # no 400, no 500: bytes the gateway has no business reading
    assert answer.split(b"\r\n\r\n", 1)[1] == body  # echoed back as they came, not inflated
    # later callers on the gateway's pooled upstream connection get their own answers
    for n in range(5):
        later = await exchange(open_route.port, raw("GET", f"/later/{n}"), responses=1)
        assert statuses(later) == [200]
    digest = hashlib.sha256(body).hexdigest()
    assert upstream.seen[0] == ("POST", "/upload", digest)  # the wire bytes, identical by hash
    assert [path for _, path, _ in upstream.seen] == ["/upload", *(f"/later/{n}" for n in range(5))]


async def test_a_chunked_gzip_body_is_relayed_without_inflating(
    open_route: Gateway, counting: tuple[CountingUpstream, str]
) -> None:
    upstream, _ = counting
    body = gzip.compress(SMUGGLE * 50)
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    attack = raw("POST", "/upload", "Content-Encoding: gzip", "Transfer-Encoding: chunked", body=chunked)
    assert statuses(await exchange(open_route.port, attack)) == [200]
    assert upstream.seen == [("POST", "/upload", hashlib.sha256(body).hexdigest())]


async def test_max_body_size_counts_the_bytes_on_the_wire_not_the_inflated_ones(
    start_gateway: GatewayFactory, counting: tuple[CountingUpstream, str]
) -> None:
    upstream, url = counting
    gateway = await start_gateway(
        server={"host": "127.0.0.1", "port": 0, "max_body_size": 2000},
        routes=[{"path": "/", "upstream": url, "auth": "none"}],
    )
    bomb = gzip.compress(b"\0" * 1_000_000)  # a kilobyte on the wire, a megabyte inflated
    assert len(bomb) < 2000
    request = raw("POST", "/u", "Content-Encoding: gzip", f"Content-Length: {len(bomb)}", body=bomb)
    assert statuses(await exchange(gateway.port, request)) == [200]
    assert upstream.seen == [("POST", "/u", hashlib.sha256(bomb).hexdigest())]


async def test_a_compressed_answer_reaches_the_caller_byte_for_byte(
    open_route: Gateway, counting: tuple[CountingUpstream, str]
) -> None:
    upstream, _ = counting
    upstream.answer_encoding, upstream.answer_body = "gzip", b"\x1f\x8b not really gzip" + os.urandom(64)
    answer = await exchange(open_route.port, raw("GET", "/download"))
    head, body = answer.split(b"\r\n\r\n", 1)
    assert statuses(answer) == [200]
    assert b"\r\nContent-Encoding: gzip\r\n" in head
    assert body == upstream.answer_body
