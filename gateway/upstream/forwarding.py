"""Forwarding to the upstream: streamed bodies both ways, truthful relaying, WebSockets.

What goes upstream in the headers is `headers.HeaderRules`' business; bodies are never buffered whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from .. import wire
from ..accesslog import UPSTREAM_CUT, AccessRecord
from ..errors import BadGateway, GatewayTimeout, PayloadTooLarge, RequestTimeout
from ..headers import WEBSOCKET_HANDSHAKE, HeaderRules, fold, response_headers
from ..policy import CompiledRoute
from .pool import Answer, Origin, UpstreamPool

# what an upstream answer is read and relayed in, and buffers at most twice of (aiohttp's high water)
ANSWER_BUFSIZE = 1 << 16
SMALL_BODY = 1 << 16  # answers up to this size (with a Content-Length) are relayed in one write
_NO_AUTO_HEADERS = CIMultiDict[None]((name, None) for name in ("Content-Type",))
MAX_UPSTREAM_CONNECTIONS = 1000
LINGER = 5.0  # seconds an early answer's connection goes on reading (and dropping) the caller's upload
LINGER_POLL = 0.25  # how soon a caller that went away meanwhile is noticed
_QUERY = re.compile(r"\?[^\s'\"]*")  # a query string in an error's text (aiohttp's errors quote URLs)

log = logging.getLogger("gateway")


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
        body_timeout: float | None,
    ) -> None:
        self._pool = pool
        self._session = session
        self.rules = rules
        self._max_body = max_body_size
        self._body_timeout = body_timeout
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
        record: AccessRecord,
        also: Sequence[tuple[str, str]] = (),
    ) -> web.StreamResponse:
        """Forward one request and stream the answer back, with `also` added to its headers; 502/504
        when the upstream fails. What the answer's body came to, and an answer cut short, go to
        `record`."""
        body = self._body(request)
        try:
            # the upstream gets exactly the path and query that were authorized
            answer = await self._pool.request(
                self._origin(route), request.method, target, headers, body, patience=route.route.timeout
            )
        except TimeoutError as exc:
            self._warn(route, "did not answer in time", exc)
            raise GatewayTimeout("the upstream did not answer in time") from exc
        except (aiohttp.ClientError, OSError) as exc:
            self._warn(route, "could not be reached", exc)
            raise BadGateway("the upstream could not be reached") from exc
        try:
            return await self._relay(request, route, answer, record, also)
        finally:
            answer.release()

    def _warn(self, route: CompiledRoute, what: str, exc: BaseException) -> None:
        """One line on stderr saying why an upstream failed: the route, the upstream's origin, and the
        exception's type and text with any query string withheld; never a header value."""
        origin = self._origin(route)
        # SECURITY: aiohttp's errors quote the URL, and a caller's query string may hold a secret
        cause = _QUERY.sub("?…", str(exc))
        log.warning(
            "upstream %s://%s of route %s %s: %s%s",
            origin.scheme,
            origin.host_header,
            route.route.path,
            what,
            type(exc).__name__,
            f": {cause}" if cause else "",
        )

    def _cut(
        self,
        request: web.BaseRequest,
        route: CompiledRoute,
        response: web.StreamResponse,
        record: AccessRecord,
        cause: BaseException,
    ) -> web.StreamResponse:
        """The upstream broke off mid-body (or the client left, and there is nothing to tell)."""
        transport = request.transport
        if transport is not None and not transport.is_closing():  # not the client: the upstream
            self._warn(route, "broke off its answer mid-body", cause)
            record.error = UPSTREAM_CUT
            # headers are gone already: the only honest signal left is a cut connection
            transport.close()
        return response

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
            while chunk := await self._from_client(request):
                seen += len(chunk)
                if limit is not None and seen > limit:
                    raise PayloadTooLarge(f"the body exceeds {limit} bytes")
                yield chunk

        return chunks()

    async def _from_client(self, request: web.BaseRequest) -> bytes:
        """The body's next bytes, b"" at its end; only this wait is the client's, so only it is timed
        (the upstream taking its time to accept what was sent is not)."""
        # SECURITY: a body that stalls would hold its connection, and the upstream's, for as long as
        # the client liked (slowloris' body form: slow POST)
        try:
            async with asyncio.timeout(self._body_timeout):
                return await request.content.readany()
        except TimeoutError as exc:
            raise RequestTimeout(
                f"the request body sent nothing for {self._body_timeout:g}s", close=True
            ) from exc

    async def _relay(
        self,
        request: web.BaseRequest,
        route: CompiledRoute,
        answer: Answer,
        record: AccessRecord,
        also: Sequence[tuple[str, str]],
    ) -> web.StreamResponse:
        message = answer.message
        headers = message.headers
        length = int(headers["Content-Length"]) if "Content-Length" in headers else None
        if length is not None and length <= SMALL_BODY and request.method != "HEAD" and not answer.early:
            # a small answer of known length goes out in one write, headers and body together
            try:
                body = await answer.body.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._warn(route, "broke off its answer", exc)
                raise BadGateway("the upstream broke off its answer") from exc
            return wire.Answer(message.code, [*response_headers(headers), *also], body, reason=message.reason)
        response = wire.RelayedStream(status=message.code, reason=message.reason)
        response.headers.extend(response_headers(headers))
        if length is not None:
            response.content_length = length
        response.untyped = "Content-Type" not in headers
        response.headers.extend(also)
        await response.prepare(request)
        try:
            # SECURITY: a client that reads slowly, or not at all, holds a bounded part of the answer:
            # pieces of ANSWER_BUFSIZE at most, the next read only once the client took the last
            async for piece in answer.body.iter_chunked(ANSWER_BUFSIZE):
                await response.write(piece)
                await request.writer.drain()
                record.bytes += len(piece)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return self._cut(request, route, response, record, exc)
        if answer.cut:  # an answer delimited by the connection's close, ended by a reset instead
            return self._cut(request, route, response, record, ConnectionResetError("reset mid-body"))
        await response.write_eof()
        if answer.early:  # the rest of the caller's body was never sent on
            await _linger(request)
        return response

    async def websocket(
        self,
        request: web.BaseRequest,
        route: CompiledRoute,
        target: str,
        headers: CIMultiDict[str],
        also: Sequence[tuple[str, str]] = (),
    ) -> web.WebSocketResponse:
        """Open the upstream WebSocket, then accept the caller's (with `also` among the handshake's
        headers) and relay both ways."""
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
            self._warn(route, "did not answer in time", exc)
            raise GatewayTimeout("the upstream did not answer in time") from exc
        except aiohttp.ClientError as exc:
            self._warn(route, "refused the WebSocket", exc)
            raise BadGateway("the upstream refused the WebSocket") from exc
        async with upstream:
            client = web.WebSocketResponse(protocols=(upstream.protocol,) if upstream.protocol else ())
            client.headers.extend(also)
            await client.prepare(request)
            await _pump_both(client, upstream)
            return client


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
