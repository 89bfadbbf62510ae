"""The security suite's world: the gateway of tests/conftest.py in front of an upstream that records
every request it receives, a GitHub that answers whatever a test crafts, raw sockets for bytes a client
library would normalise, and a canary token whose every trace in what the suite captured is collected.

Every gateway the suite starts forwards to the recording upstream (the `world` fixture is narrowed here),
so a test can say what reached the service behind the gateway, not just what the caller got back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import re
import secrets
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from ..conftest import Gateway, GatewayFactory, World

# The canary: a well-formed GitHub token no one else uses. It rides on many attack requests; after the
# suite it must appear in no log line, log record, exception, captured output or gateway error body.
CANARY = "gho_CANARY" + secrets.token_hex(16)
SMUGGLED = b"GET /admin/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"  # what smuggling tests try to slip past


@dataclass
class CanaryLedger:
    """Everything the suite captured, by test and source, and how often the canary was sent."""

    uses: int = 0
    captured: list[tuple[str, str, str]] = field(default_factory=list)  # (test, source, text)

    def add(self, test: str, source: str, text: str) -> None:
        if text:
            self.captured.append((test, source, text))

    def leaks(self, secret: str) -> list[str]:
        """Where `secret` appears: one "test: source" line per capture holding it."""
        return [f"{test}: {source}" for test, source, text in self.captured if secret in text]


LEDGER = CanaryLedger()


def canary(suffix: str = "") -> str:
    """The canary token (with `suffix`, e.g. to make it malformed), counted as one use."""
    LEDGER.uses += 1
    return CANARY + suffix


_FORMAT = logging.Formatter("%(levelname)s %(name)s %(message)s")  # with tracebacks and stack info


@pytest.fixture(autouse=True)
def _capture_for_the_canary(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> Iterator[None]:
    """Capture every log record (DEBUG and up, aiohttp's loggers included) and all output of each test."""
    caplog.set_level(logging.DEBUG)
    for name in ("aiohttp", "asyncio", "gateway"):
        caplog.set_level(logging.DEBUG, logger=name)
    yield
    test = request.node.nodeid
    records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
    LEDGER.add(test, "log records", "\n".join(_FORMAT.format(r) for r in records))
    out, err = capsys.readouterr()
    LEDGER.add(test, "stdout", out)
    LEDGER.add(test, "stderr", err)
    sys.stdout.write(out)  # still shown when the test fails
    sys.stderr.write(err)


# ---------------------------------------------------------------------------------------------------
# The recording upstream


@dataclass
class Received:
    """One request as the upstream received it; `body` is None until all of it has arrived."""

    method: str
    path: str  # path and query, as sent
    headers: list[tuple[str, str]]
    body: bytes | None = None

    def values(self, name: str) -> list[str]:
        """Every value of a header, names matched the way CGI/WSGI frameworks match them."""
        fold = name.lower().replace("_", "-")
        return [v for k, v in self.headers if k.lower().replace("_", "-") == fold]


class RecordingUpstream:
    """An upstream that records every request on arrival and answers like the echo upstream.

    A WebSocket upgrade to a path containing "refuse" is answered 200 without upgrading: an upstream
    that declines the handshake.
    """

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.url = ""

    @property
    def paths(self) -> list[str]:
        return [r.path for r in self.received]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        seen = Received(request.method, request.raw_path, list(request.headers.items()))
        self.received.append(seen)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            if "refuse" in request.path:
                return web.Response(text="no WebSocket here")
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await ws.send_str(msg.data)
            return ws
        seen.body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "path": request.raw_path,
                "headers": [[k, v] for k, v in request.headers.items()],
                "body_length": len(seen.body),
                "body_sha256": hashlib.sha256(seen.body).hexdigest(),
            }
        )


@pytest.fixture
async def upstream(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> RecordingUpstream:
    recorder = RecordingUpstream()
    server = await aiohttp_server(recorder.app())
    recorder.url = str(server.make_url("")).rstrip("/")
    return recorder


@pytest.fixture
async def world(world: World, upstream: RecordingUpstream) -> World:
    """The world of tests/conftest.py, with every route's upstream the recording one."""
    return dataclasses.replace(world, upstream_url=upstream.url)


@pytest.fixture
def mallory(world: World) -> str:
    """A valid token without the `admin:org` scope the /admin route requires: where it gets 403, the
    request was judged by the /admin route; where it gets 200, by another."""
    return world.github.add_token("mallory", 66, ["repo"])


@pytest.fixture
async def start_gateway(
    start_gateway: GatewayFactory, request: pytest.FixtureRequest
) -> AsyncIterator[GatewayFactory]:
    """tests/conftest.py's factory; each gateway's access log goes to the canary ledger afterwards."""
    started: list[Gateway] = []

    async def start(**overrides: Any) -> Gateway:
        gateway = await start_gateway(**overrides)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        LEDGER.add(request.node.nodeid, "access log", gateway.log_text())


# ---------------------------------------------------------------------------------------------------
# A GitHub whose answers the test writes


class CraftedGitHub:
    """Answers every check-a-token call with `answer(token)` → (status, JSON body, or bytes for an
    HTML page); holds calls while `held` is set; counts calls and the most ever in flight at once."""

    def __init__(self, answer: Callable[[str], tuple[int, object]]) -> None:
        self.answer = answer
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.held: asyncio.Event | None = None
        self.url = ""
        self._arrived = asyncio.Condition()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/applications/{client_id}/token", self._check)
        return app

    async def wait_for_calls(self, count: int) -> None:
        """Until at least `count` calls have arrived."""
        async with self._arrived:
            await self._arrived.wait_for(lambda: self.calls >= count)

    async def _check(self, request: web.Request) -> web.Response:
        token = str((await request.json()).get("access_token", ""))
        async with self._arrived:
            self.calls += 1
            self._arrived.notify_all()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.held is not None:
                await self.held.wait()
            status, body = self.answer(token)
            if isinstance(body, bytes):
                return web.Response(body=body, status=status, content_type="text/html")
            return web.json_response(body, status=status)
        finally:
            self.in_flight -= 1


def authorization(token: str, *, login: object = "alice", scopes: object = ("repo",)) -> dict[str, object]:
    """GitHub's `authorization` answer to a check (it echoes the token back), with a chosen login."""
    return {
        "id": 1,
        "url": "https://api.github.com/authorizations/1",
        "scopes": list(scopes) if isinstance(scopes, tuple) else scopes,
        "token": token,
        "token_last_eight": token[-8:],
        "hashed_token": hashlib.sha256(token.encode()).hexdigest(),
        "app": {"client_id": "Iv1.8a61f9b3a7aba766", "name": "app", "url": "https://example.com"},
        "note": None,
        "note_url": None,
        "updated_at": "2024-01-01T00:00:00Z",
        "created_at": "2024-01-01T00:00:00Z",
        "fingerprint": None,
        "expires_at": None,
        "user": {"login": login, "id": 7, "type": "User", "site_admin": False},
    }


@pytest.fixture
async def crafted_github(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> CraftedGitHub:
    github = CraftedGitHub(lambda token: (404, {"message": "Not Found"}))
    server = await aiohttp_server(github.app())
    github.url = str(server.make_url("")).rstrip("/")
    return github


# ---------------------------------------------------------------------------------------------------
# Raw bytes

_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


async def exchange(port: int, data: bytes, *, responses: int | None = None, within: float = 5.0) -> bytes:
    """Send raw bytes on one connection; what came back until the gateway closed it, or until
    `responses` whole responses (Content-Length framed) arrived; `within` seconds only bound a hang."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if responses is None:
            answer = await asyncio.wait_for(reader.read(), within)
        else:
            answer = b"".join([await read_response(reader, within) for _ in range(responses)])
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]
        LEDGER.add(test, "raw answer", answer.decode("latin-1"))
        return answer
    finally:
        writer.close()
        await writer.wait_closed()


async def read_response(reader: asyncio.StreamReader, within: float = 5.0) -> bytes:
    """One whole response (Content-Length framed) from a raw connection; `within` only bounds a hang."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), within)
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    body = await asyncio.wait_for(reader.readexactly(int(length.group(1))), within) if length else b""
    return head + body


def raw(
    method: str, target: str, *headers: str, body: bytes = b"", close: bool = True, host: str = "gateway"
) -> bytes:
    """A request as raw bytes, exactly as given: no header is added but Host and Connection: close."""
    head = [f"{method} {target} HTTP/1.1", f"Host: {host}", *headers]
    if close:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def statuses(answer: bytes) -> list[int]:
    """The status of every response in a raw answer, in order."""
    return [int(code) for code in _STATUS.findall(answer)]


def body_of(answer: bytes) -> dict[str, Any]:
    """The JSON body of the one response in a raw answer."""
    body: dict[str, Any] = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    return body
