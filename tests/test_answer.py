"""wire.Answer, small answers written whole (the gateway's own, and small relayed ones): on the wire,
byte for byte what aiohttp's `web.Response` writes for the same answer, whatever the method, HTTP
version and keep-alive; only a relayed body the upstream left untyped stays untyped."""

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


# a small upstream answer as relayed (its hop-by-hop headers gone): (status, reason, headers, body)
_SERVER, _WHEN = ("Server", "upstream/1.0"), ("Date", "Mon, 01 Jan 2024 00:00:00 GMT")
RELAYED: list[tuple[int, str, list[tuple[str, str]], bytes]] = [
    (
        200,
        "OK",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "3"), _WHEN, _SERVER],
        b"ok\n",
    ),
    (200, "Fine", [("Content-Length", "5"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")], b"hello"),
    (404, "Not Found", [("Content-Type", "application/json"), ("Content-Length", "2"), _SERVER], b"{}"),
    (500, "Internal Server Error", [("Content-Length", "3"), _WHEN], b"err"),
    (200, "", [("Content-Length", "0"), ("Cache-Control", "no-store")], b""),
    (204, "No Content", [("Content-Length", "0"), _WHEN], b""),
    (304, "Not Modified", [("Content-Length", "3"), ("ETag", '"x"')], b""),
]
_UNTYPED = b"\r\nContent-Type: application/octet-stream"


def _relayed(case: int) -> tuple[web.StreamResponse, web.StreamResponse]:
    status, reason, headers, body = RELAYED[case]
    return (
        web.Response(status=status, reason=reason, headers=headers, body=body),
        Answer(status, headers, body, reason=reason),
    )


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
        if "X-Relayed" in request.headers:
            usual, lean = _relayed(int(request.headers["X-Relayed"]))
        else:
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


def _request(
    method: str, version: str, case: int, *extra: str, kind: str = "X-Case"
) -> Callable[[bool], bytes]:
    """Two requests on one connection: the second, answered only if the first left it open, closes it."""

    def build(lean: bool) -> bytes:
        lines = [f"{method} / HTTP/{version}", "Host: x", f"{kind}: {case}", *extra]
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


@pytest.mark.parametrize("case", range(len(RELAYED)))
@pytest.mark.parametrize("method", ["GET", "POST", "HEAD"])
@pytest.mark.parametrize(
    ("version", "extra"),
    [("1.1", ()), ("1.1", ("Connection: close",)), ("1.0", ()), ("1.0", ("Connection: keep-alive",))],
)
async def test_a_relayed_answer_writes_what_aiohttps_response_writes_and_adds_no_type(
    port: int, case: int, method: str, version: str, extra: tuple[str, ...]
) -> None:
    # the upstream's headers as they are (its Date and Server kept), Content-Length dropped where
    # aiohttp drops it (304), keep-alive as aiohttp decides it; no Content-Type the upstream did not say
    build = _request(method, version, case, *extra, kind="X-Relayed")
    usual = await exchange(port, build(False), within=2.0)
    lean = await exchange(port, build(True), within=2.0)
    typed = any(name == "Content-Type" for name, _ in RELAYED[case][2])
    assert _DATE.sub(b"", lean) == _DATE.sub(b"", usual if typed else usual.replace(_UNTYPED, b""))
    assert lean.count(b"\r\nDate: ") == usual.count(b"\r\nDate: ")
    assert _UNTYPED not in lean


async def test_an_answer_with_a_line_break_in_a_header_is_never_written(port: int) -> None:
    # SECURITY: the C serialiser refuses CR/LF, so a value cannot end the head early or add a header
    answer = await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Evil: 1\r\n\r\n", within=2.0)
    assert answer == b""
