"""listener.Answer, small answers written whole (the gateway's own, and small relayed ones): on the
wire, byte for byte what aiohttp's `web.Response` writes for the same answer from aiohttp's own server,
whatever the method, HTTP version and keep-alive; only a relayed body the upstream left untyped stays
untyped."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Mapping

import pytest
from aiohttp import web
from multidict import CIMultiDict

from gateway.config import ServerConfig
from gateway.listener import Answer, Request, make_runner
from gateway.responses import refusal_response
from gateway.wire import serialize_head

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


def _relayed(case: int) -> tuple[web.Response, Answer]:
    status, reason, headers, body = RELAYED[case]
    return (
        web.Response(status=status, reason=reason, headers=headers, body=body),
        Answer(status, headers, body, reason=reason),
    )


def _pair(case: int, close: bool) -> tuple[web.Response, Answer]:
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


def _pick(headers: Mapping[str, str]) -> tuple[web.Response, Answer]:
    if "X-Relayed" in headers:
        return _relayed(int(headers["X-Relayed"]))
    return _pair(int(headers["X-Case"]), "X-Close" in headers)


async def _start(runner: web.BaseRunner) -> int:
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server)
    port: int = server.sockets[0].getsockname()[1]
    return port


@pytest.fixture
async def ports() -> AsyncIterator[tuple[int, int]]:
    """aiohttp's server answering with `web.Response`s, and the listener with the same `Answer`s."""

    async def usual(request: web.BaseRequest) -> web.StreamResponse:
        return _pick(request.headers)[0]

    async def lean(request: Request) -> Answer:
        if "X-Evil" in request.headers:
            return Answer(200, [("X-Auth-User", "alice\r\nX-Injected: 1")])
        return _pick(request.headers)[1]

    runners = [
        web.ServerRunner(web.Server(usual)),
        make_runner(lean, ServerConfig(), refuse=refusal_response),
    ]
    yield await _start(runners[0]), await _start(runners[1])
    for runner in runners:
        await runner.cleanup()


def _request(method: str, version: str, case: int, *extra: str, kind: str = "X-Case") -> Callable[[], bytes]:
    """Two requests on one connection when the first asks to keep it open: the second, answered only
    if the answer left it open, closes it. (After a request that closes the connection, llhttp reads
    whatever follows as an error, as it should.)"""

    def build() -> bytes:
        lines = [f"{method} / HTTP/{version}", "Host: x", f"{kind}: {case}", *extra]
        first = "\r\n".join(lines) + "\r\n\r\n"
        if "Connection: close" in extra or (version == "1.0" and "Connection: keep-alive" not in extra):
            return first.encode()
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
    ports: tuple[int, int], case: int, method: str, version: str, extra: tuple[str, ...]
) -> None:
    build = _request(method, version, case, *extra)
    usual = await exchange(ports[0], build(), within=2.0)
    lean = await exchange(ports[1], build(), within=2.0)
    assert _DATE.sub(b"", lean) == _DATE.sub(b"", usual)
    assert lean.count(b"\r\nDate: ") == usual.count(b"\r\nDate: ")


@pytest.mark.parametrize("case", range(len(RELAYED)))
@pytest.mark.parametrize("method", ["GET", "POST", "HEAD"])
@pytest.mark.parametrize(
    ("version", "extra"),
    [("1.1", ()), ("1.1", ("Connection: close",)), ("1.0", ()), ("1.0", ("Connection: keep-alive",))],
)
async def test_a_relayed_answer_writes_what_aiohttps_response_writes_and_adds_no_type(
    ports: tuple[int, int], case: int, method: str, version: str, extra: tuple[str, ...]
) -> None:
    # the upstream's headers as they are (its Date and Server kept), Content-Length dropped where
    # aiohttp drops it (304), keep-alive as aiohttp decides it; no Content-Type the upstream did not say
    build = _request(method, version, case, *extra, kind="X-Relayed")
    usual = await exchange(ports[0], build(), within=2.0)
    lean = await exchange(ports[1], build(), within=2.0)
    typed = any(name == "Content-Type" for name, _ in RELAYED[case][2])
    assert _DATE.sub(b"", lean) == _DATE.sub(b"", usual if typed else usual.replace(_UNTYPED, b""))
    assert lean.count(b"\r\nDate: ") == usual.count(b"\r\nDate: ")
    assert _UNTYPED not in lean


async def test_an_answer_with_a_line_break_in_a_header_is_never_written(ports: tuple[int, int]) -> None:
    # SECURITY: the C serialiser refuses CR/LF, so a value cannot end the head early or add a header:
    # the bug is answered as one, a JSON 500, and the connection closed
    answer = await exchange(ports[1], b"GET / HTTP/1.1\r\nHost: x\r\nX-Evil: 1\r\n\r\n", within=2.0)
    assert answer.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"X-Injected" not in answer and b"alice" not in answer
    assert b'"error": "internal_error"' in answer and b"Connection: close" in answer


@pytest.mark.parametrize(
    ("first", "headers"),
    [
        ("HTTP/1.1 200 OK\r\nX-Injected: 1", []),
        ("HTTP/1.1 200 OK", [("X-Auth-User", "alice\r\nX-Injected: 1")]),
        ("HTTP/1.1 200 OK", [("X-Auth-User", "alice\nX-Injected: 1")]),
        ("HTTP/1.1 200 OK", [("X-Auth-User", "alice\rX-Injected: 1")]),
        ("HTTP/1.1 200 OK", [("X-Auth-User\r\nX-Injected", "1")]),
        ("GET / HTTP/1.1", [("Host", "x"), ("X-Auth-Login", "a\n\r")]),
    ],
)
def test_a_head_with_a_line_break_of_its_own_is_refused(first: str, headers: list[tuple[str, str]]) -> None:
    with pytest.raises(ValueError, match="header injection"):
        serialize_head(first, CIMultiDict(headers))
