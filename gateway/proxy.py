"""Forwarding to the upstream: header hygiene, identity headers, streamed bodies, WebSockets.

Header rules are compiled once from the config (`HeaderRules`); per request the work is one pass over
the inbound headers. Bodies stream both ways and are never buffered whole.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import re
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .config import Config
from .errors import BadGateway, GatewayTimeout, PayloadTooLarge, RequestTimeout
from .identity import Identity
from .policy import CompiledRoute
from .upstream import Answer, Origin, UpstreamPool

# RFC 9110 §7.6.1 hop-by-hop fields, plus the non-standard ones proxies have been bitten by
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Set by the gateway itself; whatever a caller sends under these names is dropped.
_GATEWAY_SET = frozenset(
    {
        "host",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-real-ip",
        "x-request-id",
        "expect",
    }
)
# SECURITY: headers some frameworks route by instead of the request line (Symfony, Zend, IIS rewrite:
# CVE-2018-14773); the upstream must act on the path that was authorized, nothing else
_PATH_OVERRIDES = frozenset({"x-original-url", "x-rewrite-url"})
# SECURITY: forward-auth's inputs (DESIGN §5) say which request a front proxy had authorized; passed on
# to an upstream that trusts them, they would name another path or method than the one judged here
_FORWARD_AUTH_INPUTS = frozenset(
    {"x-original-uri", "x-forwarded-uri", "x-original-method", "x-forwarded-method"}
)
# SECURITY: message framing is the gateway's own; a `Content_Length` is no framing header to aiohttp but
# reads as one to an upstream that folds `_` into `-`, so that spelling is never passed on
_FRAMING = frozenset({"content-length"})
_DEFAULT_IDENTITY_NAMES = (
    "x-auth-user",
    "x-auth-user-id",
    "x-auth-scopes",
    "x-auth-token-expires-at",
    "x-auth-client-id",
)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_WS_SKIP = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol"}
)
# what an upstream answer is read and relayed in, and buffers at most twice of (aiohttp's high water)
ANSWER_BUFSIZE = 1 << 16
SMALL_BODY = 1 << 16  # answers up to this size (with a Content-Length) are relayed in one write
_NO_AUTO_HEADERS = CIMultiDict[None]((name, None) for name in ("Content-Type",))
MAX_UPSTREAM_CONNECTIONS = 1000


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


_FOLDED: dict[str, str] = {}
_MAX_FOLDED = 4096  # distinct header names remembered; past that, folded each time
_NONE: frozenset[str] = frozenset()


def _fold(name: str) -> str:
    """How CGI/WSGI-style frameworks see a header name: case and `_`/`-` do not matter."""
    folded = _FOLDED.get(name)
    if folded is None:
        folded = name.lower().replace("_", "-")
        if len(_FOLDED) < _MAX_FOLDED:
            _FOLDED[name] = folded
    return folded


def _connection_tokens(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    values = headers.getall("Connection", ())
    if not values:
        return _NONE
    return frozenset(_fold(t.strip()) for v in values for t in v.split(",") if t.strip())


class HeaderRules:
    """Which inbound headers go upstream, and which the gateway sets; compiled once per config."""

    def __init__(self, config: Config) -> None:
        names = config.identity_headers
        # SECURITY: every spelling of an identity header a caller sends is dropped, configured or default
        configured = {_fold(n) for n in names.model_dump().values() if n}
        self._drop_request = (
            HOP_BY_HOP
            | _GATEWAY_SET
            | _PATH_OVERRIDES
            | _FORWARD_AUTH_INPUTS
            | configured
            | set(_DEFAULT_IDENTITY_NAMES)
        )
        if not config.pass_authorization:
            self._drop_request = self._drop_request | {"authorization"}
        self._drop_unvalidated = self._drop_request | {"authorization"}
        self._identity: list[tuple[str, Callable[[Identity], str | None]]] = [
            (name, getter)
            for name, getter in (
                (names.user, lambda i: i.login),
                (names.user_id, lambda i: str(i.user_id)),
                (names.scopes, lambda i: ",".join(i.scopes)),
                (names.expires_at, _expires_at),
                (names.client_id, lambda i: i.client_id),
            )
            if name
        ]
        self._trusted = config.server.trusted_proxies

    def client_address(self, request: web.BaseRequest) -> str:
        """The caller's address: the peer, or what trusted proxies say in X-Forwarded-For."""
        peer = request.remote or ""
        if not self._trusted_peer(peer):
            return peer
        chain = [a.strip() for v in request.headers.getall("X-Forwarded-For", ()) for a in v.split(",")]
        for addr in reversed(chain):
            if not self._trusted_peer(addr):
                return addr
        return chain[0] if chain and chain[0] else peer

    def _trusted_peer(self, addr: str) -> bool:
        if not self._trusted:
            return False
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in net for net in self._trusted)

    def upstream_request_headers(
        self,
        request: web.BaseRequest,
        identity: Identity | None,
        request_id: str,
        client: str,
    ) -> CIMultiDict[str]:
        """The headers to send upstream for a request; `client` is the caller's address."""
        inbound = request.headers
        # SECURITY: credentials the gateway did not validate are never passed on
        drop = self._drop_request if identity is not None else self._drop_unvalidated
        named = _connection_tokens(inbound)
        out: CIMultiDict[str] = CIMultiDict()
        for name, value in inbound.items():
            folded = _fold(name)
            if folded in drop or folded in named or (folded in _FRAMING and "_" in name):
                continue
            out.add(name, value)
        peer = request.remote or ""
        prior = ", ".join(inbound.getall("X-Forwarded-For", ())) if self._trusted_peer(peer) else ""
        out["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
        out["X-Forwarded-Proto"] = request.scheme
        if request.host:
            out["X-Forwarded-Host"] = request.host
        out["X-Request-Id"] = request_id
        out["X-Real-IP"] = client
        if identity is not None:  # identity headers last
            out.extend(self.identity_headers(identity))
        return out

    def identity_headers(self, identity: Identity) -> list[tuple[str, str]]:
        """The configured identity headers for an identity (null names and null values left out)."""
        return [(name, value) for name, getter in self._identity if (value := getter(identity)) is not None]


def _expires_at(identity: Identity) -> str | None:
    if identity.expires_at is None:
        return None
    return datetime.fromtimestamp(identity.expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_ID_PREFIX = secrets.token_hex(8)  # per process: ids stay unique across workers and restarts
_ID_COUNTER = itertools.count()


def request_id(headers: CIMultiDictProxy[str]) -> str:
    """The inbound X-Request-Id when well-formed, else a new one (32 hex characters)."""
    given = headers.get("X-Request-Id", "")
    if _REQUEST_ID.fullmatch(given):
        return given
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def response_headers(upstream: CIMultiDictProxy[str]) -> list[tuple[str, str]]:
    """The upstream's response headers without hop-by-hop ones (pairs: the response copies them into
    its own multidict anyway)."""
    named = _connection_tokens(upstream)
    return [(k, v) for k, v in upstream.items() if (f := _fold(k)) not in HOP_BY_HOP and f not in named]


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

    async def _relay(self, request: web.BaseRequest, answer: Answer) -> web.StreamResponse:
        message = answer.message
        headers = message.headers
        length = int(headers["Content-Length"]) if "Content-Length" in headers else None
        if length is not None and length <= SMALL_BODY and request.method != "HEAD":
            # a small answer of known length goes out in one write, headers and body together
            try:
                body = await answer.body.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise BadGateway("the upstream broke off its answer") from exc
            return web.Response(
                status=message.code, reason=message.reason, headers=response_headers(headers), body=body
            )
        response = web.StreamResponse(status=message.code, reason=message.reason)
        response.headers.extend(response_headers(headers))
        if length is not None:
            response.content_length = length
        await response.prepare(request)
        try:
            # SECURITY: a client that reads slowly, or not at all, holds a bounded part of the answer:
            # pieces of ANSWER_BUFSIZE at most, the next read only once the client took the last
            async for piece in answer.body.iter_chunked(ANSWER_BUFSIZE):
                await response.write(piece)
                await request.writer.drain()
        except (aiohttp.ClientError, TimeoutError):
            # headers are gone already: the only honest signal left is a cut connection
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
        return response

    async def websocket(
        self, request: web.BaseRequest, route: CompiledRoute, target: str, headers: CIMultiDict[str]
    ) -> web.WebSocketResponse:
        """Open the upstream WebSocket, then accept the caller's and relay both ways."""
        for name in list(headers):
            if _fold(name) in _WS_SKIP:
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
