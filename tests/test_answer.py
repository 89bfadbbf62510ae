"""wire.Answer, the gateway's own small answers: on the wire, byte for byte what aiohttp's
`web.Response` writes for the same answer, whatever the method, HTTP version and keep-alive."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from gateway.wire import Answer

from .support.sockets import exchange

_DATE = re.compile(rb"\r\nDate: [^\r]*")
# (status, headers, body, content type): a forward-auth decision, refusals, a redirect
CASES: list[tuple[int, list[tuple[str, str]], bytes, str | None]] = [
    (200, [], b"", None),
    (200, [("X-Auth-User", "alice"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")], b"", None),
    (401, [("WWW-Authenticate", 'Bearer realm="gateway"')], b'{"error": "unauthenticated"}', "json"),
    (302, [("Location", "/_gateway/sign-in")], b'{"error": "sign_in"}', "json"),
    (503, [("Retry-After", "5")], b"{}", "json"),
    (204, [], b"", None),
    (304, [], b"", None),
]


def _pair(case: int, close: bool) -> tuple[web.StreamResponse, web.StreamResponse]:
    status, headers, body, kind = CASES[case]
    if kind is None:
        usual = web.Response(status=status, headers=headers, body=body or None)
        lean = Answer(status, headers, body, close=close)
    else:
        usual = web.Response(
            status=status, headers=headers, text=body.decode(), content_type="application/json"
        )
        lean = Answer(status, headers, body, content_type="application/json; charset=utf-8", close=close)
    if close:
        usual.force_close()
    return usual, lean


@pytest.fixture
async def port() -> AsyncIterator[int]:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        if "X-Evil" in request.headers:
            return Answer(200, [("X-Auth-User", "alice\r\nX-Injected: 1")])
        usual, lean = _pair(int(request.headers["X-Case"]), "X-Close" in request.headers)
        return lean if "X-Lean" in request.headers else usual

    runner = web.ServerRunner(web.Server(handler))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server)
    yield server.sockets[0].getsockname()[1]
    await runner.cleanup()


def _request(method: str, version: str, case: int, *extra: str) -> Callable[[bool], bytes]:
    """Two requests on one connection: the second, answered only if the first left it open, closes it."""

    def build(lean: bool) -> bytes:
        lines = [f"{method} / HTTP/{version}", "Host: x", f"X-Case: {case}", *extra]
        if lean:
            lines.append("X-Lean: 1")
        first = "\r\n".join(lines) + "\r\n\r\n"
        second = [line for line in lines if not line.startswith("Connection:")] + ["Connection: close"]
        return (first + "\r\n".join(second) + "\r\n\r\n").encode()

    return build


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("method", ["GET", "HEAD", "POST"])
@pytest.mark.parametrize(
    ("version", "extra"),
    [
        ("1.1", ()),
        ("1.1", ("Connection: close",)),
        ("1.1", ("X-Close: 1",)),
        ("1.0", ()),
        ("1.0", ("Connection: keep-alive",)),
    ],
)
async def test_an_answer_writes_what_aiohttps_response_writes(
    port: int, case: int, method: str, version: str, extra: tuple[str, ...]
) -> None:
    build = _request(method, version, case, *extra)
    usual = await exchange(port, build(False), within=2.0)
    lean = await exchange(port, build(True), within=2.0)
    assert _DATE.sub(b"", lean) == _DATE.sub(b"", usual)
    assert lean.count(b"\r\nDate: ") == usual.count(b"\r\nDate: ")


async def test_an_answer_with_a_line_break_in_a_header_is_never_written(port: int) -> None:
    # SECURITY: the C serialiser refuses CR/LF, so a value cannot end the head early or add a header
    answer = await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Evil: 1\r\n\r\n", within=2.0)
    assert answer == b""
