"""An upstream that records every request it receives, so a test can say what reached the service
behind the gateway, not just what the caller got back."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aiohttp import WSMsgType, web

from .headers import header_values


@dataclass
class Received:
    """One request as the upstream received it; `body` is None until all of it has arrived."""

    method: str
    path: str  # path and query, as sent
    headers: list[tuple[str, str]]
    body: bytes | None = None

    def values(self, name: str) -> list[str]:
        """Every value of a header, names matched the way CGI/WSGI frameworks match them."""
        return header_values(self.headers, name)


class RecordingUpstream:
    """An upstream that records every request on arrival and answers like the echo upstream.

    A WebSocket upgrade to a path containing "refuse" is answered 200 without upgrading: an upstream
    that declines the handshake. Its WebSockets speak the subprotocol `v1.example` when offered.
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
            ws = web.WebSocketResponse(protocols=("v1.example",))
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


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_upstream(handle: Handler) -> AsyncIterator[str]:
    """An upstream written byte by byte (its URL): `handle` gets each connection once its request
    head is read."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
            await handle(reader, writer)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset instead of a FIN: what a crashing peer or a middlebox does."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
