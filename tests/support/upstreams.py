"""An upstream that records every request it receives, so a test can say what reached the service
behind the gateway, not just what the caller got back."""

from __future__ import annotations

import hashlib
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
