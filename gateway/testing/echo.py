"""An upstream that answers with what it received: the demo's service and the tests' witness."""

from __future__ import annotations

import hashlib

from aiohttp import WSMsgType, web


async def _echo(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await _echo_websocket(request)
    digest = hashlib.sha256()
    length = 0
    async for chunk in request.content.iter_chunked(1 << 16):
        digest.update(chunk)
        length += len(chunk)
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return web.json_response(
        {
            "peer": list(peer) if peer else None,
            "method": request.method,
            "path": request.raw_path,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_length": length,
            "body_sha256": digest.hexdigest(),
        }
    )


async def _echo_websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    user = request.headers.get("X-Auth-User", "")
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(f"{user}: {msg.data}")
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


def echo_app() -> web.Application:
    """The echo upstream: JSON of peer, method, path, headers, body length and hash; WebSocket echo."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _echo)
    return app
