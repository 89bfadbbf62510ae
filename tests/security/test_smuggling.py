"""Request smuggling: a message whose framing two parsers could read differently is refused, and
what the gateway accepts reaches the upstream framed by the gateway itself, so a request hidden in
another never arrives there unauthorized.

Every attack carries a second request for /admin/smuggled (SMUGGLED) without credentials: the
recording upstream must never receive it. Sent as raw bytes; a client library would fix them.
"""

from __future__ import annotations

import pytest

from ..support.sockets import SMUGGLED, body_of, exchange, statuses
from ..support.upstreams import RecordingUpstream
from ..support.world import Gateway

HEAD = b"POST /public HTTP/1.1\r\nHost: gateway\r\n"


async def assert_refused(gateway: Gateway, upstream: RecordingUpstream, message: bytes) -> None:
    answer = await exchange(gateway.port, message)
    assert statuses(answer) == [400], answer[:200]
    assert body_of(answer)["error"] == "bad_request"
    assert upstream.received == []


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",  # CL.TE
        b"Transfer-Encoding: chunked\r\nContent-Length: 6\r\n",  # TE.CL
    ],
)
async def test_content_length_with_transfer_encoding_is_400(
    gateway: Gateway, upstream: RecordingUpstream, framing: bytes
) -> None:
    """CL.TE / TE.CL desync (RFC 9112 §6.1): each hop picks a different header to frame by."""
    await assert_refused(gateway, upstream, HEAD + framing + b"\r\n0\r\n\r\n" + SMUGGLED)


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 5\r\nContent-Length: 45\r\n",
        b"Content-Length: 5\r\nContent-Length: 5\r\n",
        b"Content-Length: 5, 45\r\n",
    ],
)
async def test_duplicate_content_length_is_400(
    gateway: Gateway, upstream: RecordingUpstream, framing: bytes
) -> None:
    """CL.CL desync: one hop takes the first Content-Length, the next the last."""
    await assert_refused(gateway, upstream, HEAD + framing + b"\r\nabcde" + SMUGGLED)


@pytest.mark.parametrize("value", [b"+5", b"-1", b"0x5", b"5_0", b"5 5", b""])
async def test_content_length_that_is_not_plain_digits_is_400(
    gateway: Gateway, upstream: RecordingUpstream, value: bytes
) -> None:
    """GHSA-gfw2-4jvh-wgfg (CVE-2023-47627): aiohttp's Python parser read Content-Length with int(),
    so `+5` or `1_0` framed a body another hop saw differently."""
    await assert_refused(gateway, upstream, HEAD + b"Content-Length: " + value + b"\r\n\r\nabcde" + SMUGGLED)


@pytest.mark.parametrize(
    "framing",
    [
        b"Transfer-Encoding: xchunked\r\n",
        b"Transfer-Encoding: chunked, identity\r\n",
        b"Transfer-Encoding: identity\r\n",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n",
        b"Transfer-Encoding : chunked\r\n",
        b"Transfer-Encoding:\x0bchunked\r\n",
        b"Transfer-Encoding: chunked\x00\r\n",
    ],
)
async def test_obfuscated_transfer_encoding_is_400(
    gateway: Gateway, upstream: RecordingUpstream, framing: bytes
) -> None:
    """TE.TE desync: a `Transfer-Encoding` one hop ignores and the next honours."""
    await assert_refused(gateway, upstream, HEAD + framing + b"\r\n0\r\n\r\n" + SMUGGLED)


@pytest.mark.parametrize(
    "value", [b"CHUNKED", b"\tchunked", b",chunked", b"identity, chunked", b"gzip, chunked"]
)
async def test_transfer_encodings_that_end_in_chunked_are_read_as_chunked_by_every_hop(
    gateway: Gateway, upstream: RecordingUpstream, value: bytes
) -> None:
    """TE.TE desync (HTTP Garden: Azure CDN forwarded `,chunked`): whatever the gateway reads as
    chunked, the upstream receives re-framed, and the request after it is judged on its own."""
    message = HEAD + b"Transfer-Encoding: " + value + b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + SMUGGLED
    answer = await exchange(gateway.port, message, responses=2)
    assert statuses(answer) == [200, 401]
    [seen] = upstream.received
    assert (seen.path, seen.body) == ("/public", b"abc")
    assert seen.values("Transfer-Encoding") in ([], ["chunked"])


@pytest.mark.parametrize(
    "framing",
    [
        b"Transfer-Encoding:\r\n chunked\r\n",
        b"Transfer-Encoding: identity\r\n\tchunked\r\n",
        b"X-Padding: a\r\n Transfer-Encoding: chunked\r\n",
        b"Content-Length:\r\n 5\r\n",
    ],
)
async def test_obs_folded_framing_headers_are_400(
    gateway: Gateway, upstream: RecordingUpstream, framing: bytes
) -> None:
    """obs-fold (RFC 9112 §5.2): a continuation line unfolded by one hop and not by the next."""
    await assert_refused(gateway, upstream, HEAD + framing + b"\r\n0\r\n\r\n" + SMUGGLED)


@pytest.mark.parametrize(
    "message",
    [
        b"POST /public HTTP/1.1\nHost: gateway\r\nContent-Length: 5\r\n\r\nabcde",
        HEAD + b"X-Padding: a\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        HEAD + b"Transfer-Encoding: chunked\r\n\n0\r\n\r\n",
        HEAD + b"Transfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
        HEAD + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\n",
        HEAD + b"Transfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: a\n\r\n",
    ],
)
async def test_bare_lf_line_endings_are_400(
    gateway: Gateway, upstream: RecordingUpstream, message: bytes
) -> None:
    """GHSA-8qpw-xqxj-h4r2 (CVE-2024-23829): aiohttp's Python parser was lenient about separators; a
    bare LF ends a line for one hop and not for another."""
    await assert_refused(gateway, upstream, message + SMUGGLED)


@pytest.mark.parametrize(
    "message",
    [
        HEAD + b"X-Padding: a\rTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\r;a\r\n02\r\n41\r\n0\r\n\r\n",
    ],
)
async def test_bare_cr_is_400(gateway: Gateway, upstream: RecordingUpstream, message: bytes) -> None:
    """GHSA-45c4-8wx5-qw6w (CVE-2023-37276; llhttp's CVE-2023-30589): a bare CR delimited header
    fields, and in chunk extensions (HTTP Garden, Akamai and ATS findings)."""
    await assert_refused(gateway, upstream, message + SMUGGLED)


@pytest.mark.parametrize("chunk", [b"3;x\nabc\r\n", b"3;a=b\nc\r\nabc\r\n", b"3;\x00\r\nabc\r\n"])
async def test_a_broken_chunk_extension_is_400(
    gateway: Gateway, upstream: RecordingUpstream, chunk: bytes
) -> None:
    """GHSA-8495-4g3g-x7pr (CVE-2024-52304): aiohttp's Python parser accepted a newline inside a
    chunk extension, so the rest read as the next request."""
    message = HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunk + b"0\r\n\r\n"
    await assert_refused(gateway, upstream, message + SMUGGLED)


@pytest.mark.parametrize(
    "chunk",
    [
        b"fffffffffffffffffffff1\r\nabc\r\n",  # overflows 64 bits
        b"0_2e\r\n\r\n",  # int() would read 46
        b"0x3\r\nabc\r\n",
        b"+3\r\nabc\r\n",
        b"1these-bytes-never-get-validated\r\nZ\r\n",
        b"3\r\nabcXX",  # no CRLF after the data
    ],
)
async def test_a_malformed_chunk_size_is_400(
    gateway: Gateway, upstream: RecordingUpstream, chunk: bytes
) -> None:
    """GHSA-gfw2-4jvh-wgfg (CVE-2023-47627): aiohttp's Python parser read chunk sizes with int(), so
    `0_2e` was 46 bytes to it and 0 to the hop before (HTTP Garden, aiohttp bug 1)."""
    message = HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunk + b"0\r\n\r\n"
    await assert_refused(gateway, upstream, message + SMUGGLED)


async def test_trailer_fields_are_never_forwarded_as_headers(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    """GHSA-9548-qrrj-x5pj (CVE-2025-53643): trailer-section parsing let fields smuggle past a proxy."""
    message = (
        HEAD + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Auth-User: root\r\n\r\n" + SMUGGLED
    )
    answer = await exchange(gateway.port, message, responses=2)
    assert statuses(answer) == [200, 401]
    [seen] = upstream.received
    assert seen.body == b"abc"
    assert seen.values("X-Auth-User") == []


@pytest.mark.parametrize("trailer", [b"Content-Length: 45", b"Transfer-Encoding: chunked"])
async def test_framing_fields_in_trailers_are_400(
    gateway: Gateway, upstream: RecordingUpstream, trailer: bytes
) -> None:
    """GHSA-9548-qrrj-x5pj (CVE-2025-53643): a trailer that reframes the message for a later hop."""
    message = HEAD + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n" + trailer + b"\r\n\r\n"
    answer = await exchange(gateway.port, message + SMUGGLED)
    assert statuses(answer) == [400]
    # the head may have gone upstream before the trailer arrived; a whole request never does
    assert all(r.body is None and r.path == "/public" for r in upstream.received)


async def test_a_request_hidden_in_a_body_stays_body(gateway: Gateway, upstream: RecordingUpstream) -> None:
    """CL.0 desync (a body the next hop ignores, read as a request): the upstream receives the bytes
    as this request's body, framed by the gateway, never as a request of their own."""
    message = (
        b"GET /public HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n"
        + b"Content-Length: %d\r\n\r\n" % len(SMUGGLED)
        + SMUGGLED
    )
    assert statuses(await exchange(gateway.port, message)) == [200]
    [seen] = upstream.received
    assert (seen.path, seen.body) == ("/public", SMUGGLED)


async def test_a_pipelined_request_after_a_body_is_judged_on_its_own(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    """Pipelining across a body: the second request is routed and authorized like any other."""
    message = HEAD + b"Content-Length: 5\r\n\r\nabcde" + SMUGGLED
    answer = await exchange(gateway.port, message, responses=2)
    assert statuses(answer) == [200, 401]
    assert [(r.path, r.body) for r in upstream.received] == [("/public", b"abcde")]


@pytest.mark.parametrize("value", [b"chunked", b"gzip, chunked"])
async def test_transfer_encoding_in_http_1_0_is_400_and_the_connection_is_closed(
    gateway: Gateway, upstream: RecordingUpstream, value: bytes
) -> None:
    """RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 is faulty framing, read differently by each hop
    (an HTTP/1.0 hop reads the body to the connection's end); the server must close the connection."""
    message = (
        b"POST /public HTTP/1.0\r\nHost: gateway\r\nConnection: keep-alive\r\n"
        b"Transfer-Encoding: " + value + b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + SMUGGLED
    )
    await assert_refused(gateway, upstream, message)  # the answer is read until the gateway closes


async def test_an_h2c_upgrade_is_never_passed_to_the_upstream(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    """h2c smuggling (Bishop Fox, 2020): a proxy that forwards `Upgrade: h2c` hands the caller an
    HTTP/2 tunnel to the upstream, past every route's policy."""
    message = (
        b"GET /public HTTP/1.1\r\nHost: gateway\r\nUpgrade: h2c\r\n"
        b"Connection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n" + SMUGGLED
    )
    answer = await exchange(gateway.port, message, responses=1)
    assert statuses(answer) == [200]
    [seen] = upstream.received
    assert seen.path == "/public"
    assert seen.values("Upgrade") == [] and seen.values("HTTP2-Settings") == []


async def test_underscore_spellings_of_framing_headers_never_reach_the_upstream(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    """Framing smuggled by spelling: `Content_Length` and `Transfer_Encoding` mean nothing to the
    gateway's parser but frame the body for an upstream that folds `_` into `-`."""
    message = (
        b"GET /public HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n"
        b"Content_Length: 45\r\nTransfer_Encoding: chunked\r\n\r\n"
    )
    assert statuses(await exchange(gateway.port, message)) == [200]
    [seen] = upstream.received
    assert seen.values("Content-Length") == [] and seen.values("Transfer-Encoding") == []
    assert seen.body == b""


@pytest.mark.parametrize(
    "line",
    [
        b"GET /public\nHTTP/1.1",  # LF as request-line whitespace (HTTP Garden aiohttp bug 9)
        b"GET /public HTTP/1.32",  # version read as its longest valid prefix (bug 5)
        b'G=":<>(e),[T];?" /public HTTP/1.1',  # method read as its longest valid prefix (bug 6)
        b"GET /public HTTP/1.1 smuggled",
    ],
)
async def test_a_malformed_request_line_is_400(
    gateway: Gateway, upstream: RecordingUpstream, line: bytes
) -> None:
    """aio-libs/aiohttp#7700: request lines read as their longest valid prefix (HTTP Garden)."""
    await assert_refused(gateway, upstream, line + b"\r\nHost: gateway\r\nConnection: close\r\n\r\n")


@pytest.mark.parametrize("hosts", [b"", b"Host: gateway\r\nHost: evil.example\r\n"])
async def test_a_missing_or_duplicate_host_is_400(
    gateway: Gateway, upstream: RecordingUpstream, hosts: bytes
) -> None:
    """Host confusion (RFC 9112 §3.2): with two Host headers each hop may pick a different one."""
    await assert_refused(
        gateway, upstream, b"GET /public HTTP/1.1\r\n" + hosts + b"Connection: close\r\n\r\n"
    )
