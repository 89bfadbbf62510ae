"""Forwarding to the upstream: streamed bodies both ways, truthful relaying, WebSockets.

What goes upstream in the headers is `headers.HeaderRules`' business; bodies are never buffered whole.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Sequence

import aiohttp
from aiohttp.web_protocol import RequestPayloadError
from multidict import CIMultiDict
from yarl import URL

from ..accesslog import UPSTREAM_CUT, AccessRecord
from ..errors import BadGateway, BadRequest, GatewayTimeout, PayloadTooLarge, RequestTimeout
from ..headers import HeaderRules, response_headers
from ..listener import Answer, ClientGone, Request, Response, Stream, Tunnel
from ..policy import CompiledRoute
from .pool import Origin, UpstreamAnswer, UpstreamPool

# what an upstream answer is read and relayed in, and buffers at most twice of (aiohttp's high water)
ANSWER_BUFSIZE = 1 << 16
SMALL_BODY = 1 << 16  # answers up to this size (with a Content-Length) are relayed in one write
_QUERY = re.compile(r"\?[^\s'\"]*")  # a query string in an error's text (aiohttp's errors quote URLs)

log = logging.getLogger("gateway")


class Forwarder:
    """Sends requests upstream over pooled keep-alive connections; WebSockets through tunnels."""

    def __init__(
        self,
        pool: UpstreamPool,
        rules: HeaderRules,
        *,
        max_body_size: int | None,
        body_timeout: float | None,
    ) -> None:
        self._pool = pool
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
        request: Request,
        route: CompiledRoute,
        target: str,
        headers: CIMultiDict[str],
        signed: bytes,
        record: AccessRecord,
        also: Sequence[tuple[str, str]] = (),
    ) -> Response:
        """Forward one request (with `signed`: header lines checked when they were made, the identity
        token's) and stream the answer back, with `also` added to its headers; 502/504 when the
        upstream fails. What the answer's body came to, and an answer cut short, go to `record`."""
        body = self._body(request)
        try:
            # the upstream gets exactly the path and query that were authorized
            answer = await self._pool.request(
                self._origin(route),
                request.method,
                target,
                headers,
                signed,
                body,
                patience=route.route.timeout,
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

    def _warn(self, route: CompiledRoute, what: str, exc: BaseException | None = None) -> None:
        """One line on stderr saying why an upstream failed: the route, the upstream's origin, and the
        exception's type and text with any query string withheld; never a header value."""
        origin = self._origin(route)
        why = ""
        if exc is not None:
            # SECURITY: aiohttp's errors quote the URL, and a caller's query string may hold a secret
            cause = _QUERY.sub("?…", str(exc))
            why = f": {type(exc).__name__}" + (f": {cause}" if cause else "")
        log.warning(
            "upstream %s://%s of route %s %s%s",
            origin.scheme,
            origin.host_header,
            route.route.path,
            what,
            why,
        )

    def _cut(
        self,
        request: Request,
        route: CompiledRoute,
        stream: Stream,
        record: AccessRecord,
        cause: BaseException,
    ) -> Stream:
        """The upstream broke off mid-body (or the client left, and there is nothing to tell)."""
        transport = request.transport
        if transport is not None and not transport.is_closing():  # not the client: the upstream
            self._warn(route, "broke off its answer mid-body", cause)
            record.error = UPSTREAM_CUT
            # headers are gone already: the only honest signal left is a cut connection
            transport.close()
        return stream

    def _body(self, request: Request) -> AsyncIterator[bytes] | None:
        if not request.body_exists:
            return None
        limit = self._max_body
        if limit is not None and request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge(f"the body exceeds {limit} bytes")
        expects = request.headers.get("Expect", "").lower() == "100-continue"

        async def chunks() -> AsyncIterator[bytes]:
            if expects:  # the caller waits for a go-ahead; it comes only once the request is admitted
                request.send_continue()
            seen = 0
            while chunk := await self._from_client(request):
                seen += len(chunk)
                if limit is not None and seen > limit:
                    raise PayloadTooLarge(f"the body exceeds {limit} bytes")
                yield chunk

        return chunks()

    async def _from_client(self, request: Request) -> bytes:
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
        except RequestPayloadError as exc:  # llhttp refused the body's framing as it arrived
            raise BadRequest("the request body is malformed", close=True) from exc
        except ConnectionResetError as exc:  # the client went away mid-body: nobody to answer
            raise BadRequest("the client closed the connection before its body was sent", close=True) from exc

    async def _relay(
        self,
        request: Request,
        route: CompiledRoute,
        answer: UpstreamAnswer,
        record: AccessRecord,
        also: Sequence[tuple[str, str]],
    ) -> Response:
        message = answer.message
        headers = message.headers
        length = int(headers["Content-Length"]) if "Content-Length" in headers else None
        if answer.early:  # the rest of the caller's body was never sent on: the connection closes after
            request.force_close()
        if length is not None and length <= SMALL_BODY and request.method != "HEAD":
            # a small answer of known length goes out in one write, headers and body together
            try:
                # whole already, as a small answer mostly is: taken as it is, without waiting
                body = answer.body.read_nowait() if answer.body.is_eof() else await answer.body.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._warn(route, "broke off its answer", exc)
                raise BadGateway("the upstream broke off its answer") from exc
            return Answer(message.code, [*response_headers(headers), *also], body, reason=message.reason)
        stream = request.stream(message.code, message.reason, [*response_headers(headers), *also])
        try:
            # SECURITY: a client that reads slowly, or not at all, holds a bounded part of the answer:
            # pieces of ANSWER_BUFSIZE at most, the next read only once the client took the last
            async for piece in answer.body.iter_chunked(ANSWER_BUFSIZE):
                await stream.write(piece)
                record.bytes += len(piece)
        except (aiohttp.ClientError, TimeoutError, ClientGone) as exc:
            return self._cut(request, route, stream, record, exc)
        if answer.cut:  # an answer delimited by the connection's close, ended by a reset instead
            return self._cut(request, route, stream, record, ConnectionResetError("reset mid-body"))
        await stream.end()
        return stream

    async def websocket(
        self,
        request: Request,
        route: CompiledRoute,
        target: str,
        headers: CIMultiDict[str],
        signed: bytes,
        also: Sequence[tuple[str, str]] = (),
    ) -> Tunnel:
        """Send the upgrade upstream on a connection of its own and, when the upstream switches
        protocols, answer the caller with its 101 (and `also`) and relay bytes both ways until either
        side closes, as nginx does. The handshake's own headers pass as the caller sent them, so the
        upstream answers the caller's key, and subprotocols and extensions are agreed end to end. Any
        other answer is 502, and no tunnel opens."""
        headers["Connection"] = "Upgrade"
        headers["Upgrade"] = "websocket"
        origin = self._origin(route)
        try:
            async with asyncio.timeout(route.route.timeout):
                end = await self._pool.tunnel(origin, target, headers, signed)
                message, first = await end.answer()
        except TimeoutError as exc:
            self._warn(route, "did not answer in time", exc)
            raise GatewayTimeout("the upstream did not answer in time") from exc
        except (aiohttp.ClientError, OSError) as exc:
            self._warn(route, "refused the WebSocket", exc)
            raise BadGateway("the upstream refused the WebSocket") from exc
        upstream = end.transport
        assert upstream is not None
        if message.code != 101 or message.headers.get("Upgrade", "").lower() != "websocket":
            # SECURITY: only the upstream's 101 opens a tunnel: were the caller's Upgrade trusted, an
            # upstream that declined would leave a raw connection open past every route's policy
            upstream.close()
            self._warn(
                route, f"refused the WebSocket: it answered {message.code}, not 101 Switching Protocols"
            )
            raise BadGateway("the upstream refused the WebSocket")
        handshake = CIMultiDict(message.headers)
        handshake.extend(also)
        tunnel = request.tunnel(handshake, upstream)
        client = request.transport
        assert client is not None
        end.join(client, first)
        await tunnel.closed()
        upstream.close()
        return tunnel
