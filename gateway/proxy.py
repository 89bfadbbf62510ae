"""Forwarding to the upstream: streamed bodies both ways, truthful relaying, WebSockets.

What goes upstream in the headers is `headers.HeaderRules`' business; bodies are never buffered whole.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from .errors import BadGateway, GatewayTimeout, PayloadTooLarge
from .headers import WEBSOCKET_HANDSHAKE, HeaderRules, fold, response_headers
from .policy import CompiledRoute
from .upstream import Answer, Origin, UpstreamPool

SMALL_BODY = 1 << 16  # answers up to this size (with a Content-Length) are relayed in one write
_NO_AUTO_HEADERS = CIMultiDict[None]((name, None) for name in ("Content-Type",))
MAX_UPSTREAM_CONNECTIONS = 1000
LINGER = 5.0  # seconds an early answer's connection goes on reading (and dropping) the caller's upload
LINGER_POLL = 0.25  # how soon a caller that went away meanwhile is noticed


class _ProxyRequest(aiohttp.ClientRequest):
    """Sends the caller's headers as they are: aiohttp adds no Accept, Accept-Encoding, User-Agent or
    body Content-Type of its own (an Accept-Encoding the caller never sent would get it gzip)."""

    def update_auto_headers(self, skip_auto_headers: object) -> None:
        self._skip_auto_headers = _NO_AUTO_HEADERS


def upstream_session(read_bufsize: int) -> aiohttp.ClientSession:
    """The pooled keep-alive session every upstream request goes through."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=MAX_UPSTREAM_CONNECTIONS),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None),
        read_bufsize=read_bufsize,
        request_class=_ProxyRequest,
    )


class Forwarder:
    """Sends requests upstream over pooled keep-alive connections; WebSockets over the session."""

    def __init__(
        self,
        pool: UpstreamPool,
        session: aiohttp.ClientSession,
        rules: HeaderRules,
        *,
        max_body_size: int | None,
    ) -> None:
        self._pool = pool
        self._session = session
        self.rules = rules
        self._max_body = max_body_size
        self._origins: dict[str, Origin] = {}

    def _origin(self, route: CompiledRoute) -> Origin:
        origin = self._origins.get(route.upstream_base)
        if origin is None:
            url = URL(route.upstream_base)
            assert url.raw_host is not None and url.port is not None
            port = url.explicit_port
            host_header = url.host_subcomponent if port is None else f"{url.host_subcomponent}:{port}"
            origin = Origin(url.scheme, url.raw_host, url.port, host_header or url.raw_host)
            self._origins[route.upstream_base] = origin
        return origin

    async def forward(
        self,
        request: web.BaseRequest,
        route: CompiledRoute,
        target: str,
        headers: CIMultiDict[str],
    ) -> web.StreamResponse:
        """Forward one request and stream the answer back; 502/504 when the upstream fails."""
        body = self._body(request)
        try:
            # the upstream gets exactly the path and query that were authorized
            answer = await self._pool.request(
                self._origin(route), request.method, target, headers, body, patience=route.route.timeout
            )
        except TimeoutError as exc:
            raise GatewayTimeout("the upstream did not answer in time") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise BadGateway("the upstream could not be reached") from exc
        try:
            return await self._relay(request, answer)
        finally:
            answer.release()

    def _body(self, request: web.BaseRequest) -> AsyncIterator[bytes] | None:
        if not request.body_exists:
            return None
        limit = self._max_body
        if limit is not None and request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge(f"the body exceeds {limit} bytes")
        expects = request.headers.get("Expect", "").lower() == "100-continue"

        async def chunks() -> AsyncIterator[bytes]:
            if expects:  # the caller waits for a go-ahead; it comes only once the request is admitted
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            seen = 0
            async for chunk in request.content.iter_any():
                seen += len(chunk)
                if limit is not None and seen > limit:
                    raise PayloadTooLarge(f"the body exceeds {limit} bytes")
                yield chunk

        return chunks()

    async def _relay(self, request: web.BaseRequest, answer: Answer) -> web.StreamResponse:
        message = answer.message
        headers = message.headers
        length = int(headers["Content-Length"]) if "Content-Length" in headers else None
        response: _RelayedBody | _RelayedStream
        if length is not None and length <= SMALL_BODY and request.method != "HEAD" and not answer.early:
            # a small answer of known length goes out in one write, headers and body together
            try:
                body = await answer.body.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise BadGateway("the upstream broke off its answer") from exc
            response = _RelayedBody(
                status=message.code, reason=message.reason, headers=response_headers(headers), body=body
            )
        else:
            response = _RelayedStream(status=message.code, reason=message.reason)
            response.headers.extend(response_headers(headers))
            if length is not None:
                response.content_length = length
        response.untyped = "Content-Type" not in headers
        if isinstance(response, _RelayedBody):
            return response
        await response.prepare(request)
        try:
            async for chunk in answer.body.iter_any():
                await response.write(chunk)
        except (aiohttp.ClientError, TimeoutError):
            return _cut(request, response)
        if answer.cut:
            return _cut(request, response)
        await response.write_eof()
        if answer.early:  # the rest of the caller's body was never sent on
            await _linger(request)
        return response

    async def websocket(
        self, request: web.BaseRequest, route: CompiledRoute, target: str, headers: CIMultiDict[str]
    ) -> web.WebSocketResponse:
        """Open the upstream WebSocket, then accept the caller's and relay both ways."""
        for name in list(headers):
            if fold(name) in WEBSOCKET_HANDSHAKE:
                del headers[name]
        protocols = [
            p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
        ]
        url = URL(route.upstream_base.replace("http", "ws", 1) + target, encoded=True)
        try:
            upstream = await self._session.ws_connect(
                url, headers=headers, protocols=protocols, timeout=aiohttp.ClientWSTimeout(ws_receive=None)
            )
        except TimeoutError as exc:
            raise GatewayTimeout("the upstream did not answer in time") from exc
        except aiohttp.ClientError as exc:
            raise BadGateway("the upstream refused the WebSocket") from exc
        async with upstream:
            client = web.WebSocketResponse(protocols=(upstream.protocol,) if upstream.protocol else ())
            await client.prepare(request)
            await _pump_both(client, upstream)
            return client


class _KeepsContentType(web.StreamResponse):
    """A relayed answer: aiohttp gives a body without a Content-Type `application/octet-stream`; the
    gateway passes the upstream's headers on as they are, and adds no type the upstream did not say."""

    untyped = False

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        if self.untyped:
            self.headers.popall("Content-Type", None)


class _RelayedBody(_KeepsContentType, web.Response):
    """A small relayed answer, sent in one write."""


class _RelayedStream(_KeepsContentType):
    """A relayed answer streamed as it arrives."""


async def _linger(request: web.BaseRequest) -> None:
    """Read and drop what is left of the caller's body for up to LINGER seconds, then close.

    Closing at once, with the upload's bytes unread, would reset the connection, and a reset can
    destroy the answer before the caller reads it. aiohttp's own lingering close waits its whole
    lingering_time for a caller that has gone away: this one stops when the connection does.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LINGER
    content = request.content
    while not content.is_eof() and request.transport is not None and (left := deadline - loop.time()) > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(content.readany(), min(left, LINGER_POLL))
    request.protocol.force_close()


def _cut(request: web.BaseRequest, response: web.StreamResponse) -> web.StreamResponse:
    # headers are gone already: the only honest signal left is a cut connection
    if request.transport is not None:
        request.transport.close()
    return response


async def _pump_both(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    async def pump(src: Any, dst: Any) -> None:
        async for msg in src:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await dst.send_str(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await dst.send_bytes(msg.data)
        await dst.close(code=src.close_code or aiohttp.WSCloseCode.OK)

    tasks = [asyncio.ensure_future(pump(client, upstream)), asyncio.ensure_future(pump(upstream, client))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
