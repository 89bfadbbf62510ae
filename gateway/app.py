"""Wiring an aiohttp Application from a Config: the request path of DESIGN §1, end to end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import aiohttp
from aiohttp import web
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from multidict import CIMultiDictProxy

from . import metrics
from .accesslog import AccessLog, AccessRecord
from .auth import Authenticator, Caller, authorization
from .cache import IdentityCache
from .config import Config, ServerConfig
from .control import Control
from .errors import BadRequest, HeadersTooLarge, InternalError, NoRoute, Refusal, RequestTimeout
from .github import GitHubClient
from .headers import HeaderRules, request_id
from .identity import token_id
from .policy import CompiledRoute, RouteTable, split_target
from .proxy import ANSWER_BUFSIZE, Forwarder, upstream_session
from .ratelimit import FailedAuthLimiter
from .redis_tier import RedisTier
from .responses import refusal_response
from .upstream import UpstreamPool
from .upstream_token import ScopedTokens

log = logging.getLogger("gateway")
READ_BUFSIZE = 1 << 18  # per connection and direction: what a body may buffer before reading pauses


class Gateway:
    """Everything one config needs at request time, built once; `handle` serves one request."""

    def __init__(
        self,
        config: Config,
        *,
        upstream: aiohttp.ClientSession,
        pool: UpstreamPool,
        github: aiohttp.ClientSession,
        access_log: AccessLog,
        shared: RedisTier | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.routes = RouteTable(config.routes)
        self.rules = HeaderRules(config)
        self.github = GitHubClient(
            config.github,
            github,
            clock=clock,
            observer=metrics.github_observer,
            answered=metrics.github_answered,
        )
        self.cache = IdentityCache(config.cache, self.github, shared=shared, clock=clock)
        limiter = FailedAuthLimiter(config.rate_limit.failed_auth_per_minute, clock=clock)
        self.auth = Authenticator(self.cache, limiter, retry_after=self.github.retry_after)
        self.scoped = ScopedTokens(
            self.github, config.cache, retry_after=self.github.retry_after, clock=clock
        )
        self.forwarder = Forwarder(
            pool,
            upstream,
            self.rules,
            max_body_size=config.server.max_body_size,
            body_timeout=config.server.body_timeout,
        )
        self.control = Control(self.auth, self.github, self.cache, self.scoped)
        self.access_log = access_log
        self._background: set[asyncio.Task[None]] = set()
        self._control_prefix = config.server.control_prefix.lower()
        self._forward_auth_family = FORWARD_AUTH_FAMILIES[config.server.forward_auth_headers]

    def revoked_elsewhere(self, digest: bytes) -> None:
        """A logout on another replica (the shared tier's channel): forget the token here at once, and
        revoke the scoped tokens minted from it here in the background (GitHub may be slow)."""
        self.cache.evict(digest)
        task = asyncio.create_task(self.scoped.revoke_minted_from(digest))
        self._background.add(task)  # a reference, until done
        task.add_done_callback(self._background.discard)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Serve one request; every refusal becomes its DESIGN §4 response; one access-log line."""
        started = time.perf_counter()
        record = AccessRecord(
            request_id=request_id(request.headers),
            client=self.rules.client_address(request),
            method=request.method,
        )
        refused: str | None = None
        try:
            response = await self._dispatch(request, record)
        except Exception as exc:  # every one, so that every request gets its answer and its log line
            refusal = exc if isinstance(exc, Refusal) else _internal_error(exc, request, record)
            refused = refusal.code
            response = refusal_response(refusal)
            response.headers["X-Request-Id"] = record.request_id
        finally:
            seconds = time.perf_counter() - started
            record.duration_ms = round(seconds * 1000, 3)
        record.status = response.status
        if isinstance(response, web.Response) and request.method != "HEAD":
            # aiohttp writes it once this returns; a streamed answer has counted what it wrote
            record.bytes = len(response.body) if isinstance(response.body, bytes) else 0
        self.access_log.write(record)
        metrics.observe_request(
            record.route, response.status, seconds, record.user is not None, refused, record.error
        )
        return response

    async def _dispatch(self, request: web.BaseRequest, record: AccessRecord) -> web.StreamResponse:
        if request.version < aiohttp.HttpVersion11 and "Transfer-Encoding" in request.headers:
            # SECURITY: RFC 9112 §6.1: HTTP/1.0 has no Transfer-Encoding, so its framing is faulty:
            # hops may read the body, and the request hidden after it, differently
            raise BadRequest("Transfer-Encoding in an HTTP/1.0 request: its framing is faulty", close=True)
        path, query = split_target(request.raw_path)
        record.path = path
        lowered = path.lower()
        if lowered == self._control_prefix or lowered.startswith(self._control_prefix + "/"):
            subpath = lowered[len(self._control_prefix) :].rstrip("/")
            if subpath == "/auth":
                return await self._forward_auth(request, record)
            if subpath.startswith("/auth/"):  # Envoy ext_authz's form: the original path follows
                return await self._forward_auth(request, record, path[len(self._control_prefix) + 5 :])
            return await self.control.handle(request, subpath, record)
        route = self._route(path, record)
        caller = await self._admit(request, request.method, route, record)
        headers = self.rules.upstream_request_headers(
            request, caller.identity if caller else None, record.request_id, record.client
        )
        if caller is not None and route.upstream_token_key is not None:
            headers["Authorization"] = await self._scoped_authorization(caller, route)
        target = route.upstream_target(path, query)
        if _is_websocket(request):
            return await self.forwarder.websocket(request, route, target, headers)
        response = await self.forwarder.forward(request, route, target, headers, record)
        record.upstream_status = response.status
        return response

    async def _forward_auth(
        self, request: web.BaseRequest, record: AccessRecord, original: str | None = None
    ) -> web.StreamResponse:
        """The decision for a request a front proxy (nginx auth_request, Traefik ForwardAuth, Caddy
        forward_auth, Envoy ext_authz) is about to forward: 200 with identity headers, or a refusal.

        The original request is named by the one header family of `server.forward_auth_headers`
        (`X-Original-URI`/`-Method`, or `X-Forwarded-Uri`/`-Method`), or, as Envoy's ext_authz HTTP
        service sends it, by this request itself: its method, and its path after the endpoint's
        (`original`, normalised with the rest), which then wins.
        """
        if original is not None:
            path, method = original, request.method
        else:
            path, method = self._forward_auth_family.original(request.headers)
        record.path = path
        route = self._route(path, record)
        caller = await self._admit(request, method, route, record)
        response = web.Response(status=200)
        if caller is not None:
            response.headers.extend(self.rules.identity_headers(caller.identity))
            if route.upstream_token_key is not None:
                response.headers["Authorization"] = await self._scoped_authorization(caller, route)
        return response

    def _route(self, path: str, record: AccessRecord) -> CompiledRoute:
        route = self.routes.match(path)
        if route is None:
            raise NoRoute()
        record.route = route.route.path
        return route

    async def _scoped_authorization(self, caller: Caller, route: CompiledRoute) -> str:
        spec, key = route.route.upstream_token, route.upstream_token_key
        assert spec is not None and key is not None
        scoped = await self.scoped.token_for(caller.token, caller.digest, caller.identity, spec, key)
        return f"Bearer {scoped}"

    async def _admit(
        self, request: web.BaseRequest, method: str, route: CompiledRoute, record: AccessRecord
    ) -> Caller | None:
        """The route's policy for `method`: authenticate as its auth mode says, then method, scopes,
        allow-lists."""
        mode = route.route.auth
        if mode == "none" or (route.route.skip_auth_preflight and _is_preflight(request, method)):
            authorization(request.headers)  # not read, but two of them are refused all the same
            route.check_method(method)
            return None
        caller = await self.auth.authenticate(
            request.headers, client=record.client, required=mode == "required"
        )
        route.check_method(method)
        if caller is not None:
            record.user, record.token_id = caller.identity.login, token_id(caller.digest)
            route.authorize(caller.identity)
        return caller


class ForwardAuthFamily(NamedTuple):
    """The headers that name the original request at the forward-auth endpoint, and the other family's,
    which a request there must not carry."""

    uri: str
    method: str
    other: tuple[str, str]

    def original(self, headers: CIMultiDictProxy[str]) -> tuple[str, str]:
        """The original request's normalised path and method."""
        # SECURITY: Caddy's forward_auth (and Traefik's ForwardAuth without authRequestHeaders) pass
        # the caller's own headers on beside their own: were the other family read too, a caller's
        # X-Original-URI: /public would choose the policy for a request to a protected path
        if any(name in headers for name in self.other):
            raise BadRequest(
                f"forward-auth reads the original request from {self.uri}/{self.method} only"
                f" (server.forward_auth_headers); this request also carries {' or '.join(self.other)}"
            )
        uri = headers.get(self.uri)
        if not uri:
            raise BadRequest(f"forward-auth needs the original request in {self.uri}")
        path, _ = split_target(uri)
        return path, headers.get(self.method, "GET").upper()


FORWARD_AUTH_FAMILIES = {
    "original": ForwardAuthFamily(
        "X-Original-URI", "X-Original-Method", ("X-Forwarded-Uri", "X-Forwarded-Method")
    ),
    "forwarded": ForwardAuthFamily(
        "X-Forwarded-Uri", "X-Forwarded-Method", ("X-Original-URI", "X-Original-Method")
    ),
}


def _internal_error(exc: Exception, request: web.BaseRequest, record: AccessRecord) -> InternalError:
    """A bug of the gateway's own, logged; what its caller is told (DESIGN §4's JSON 500)."""
    # SECURITY: the exception's text may quote what the request carried: its type and where it was
    # raised are logged, never its message (nor the query string, nor a header)
    where = "".join(traceback.format_tb(exc.__traceback__))
    log.error(
        "unhandled %s serving %s %s (request %s)\n%s",
        type(exc).__name__,
        record.method,
        record.path,
        record.request_id,
        where,
    )
    if request.writer.output_size > 0 and request.transport is not None:
        request.transport.close()  # the answer had begun: a cut connection is all that can be said
    return InternalError("the gateway failed to handle this request", close=True)


def _is_websocket(request: web.BaseRequest) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket" and request.method == "GET"


def _is_preflight(request: web.BaseRequest, method: str) -> bool:
    headers = request.headers
    return method == "OPTIONS" and "Origin" in headers and "Access-Control-Request-Method" in headers


# aiohttp's defaults, stated: a request line or header field longer than this is refused with 400
# read_bufsize: bodies stream through in chunks of whatever has arrived, up to this much per read
HANDLER_ARGS: dict[str, Any] = {
    "max_line_size": 8190,
    "max_field_size": 8190,
    "access_log": None,
    "read_bufsize": READ_BUFSIZE,
    # SECURITY: a body is passed on as the bytes that came (DESIGN §3). Inflated, a gzip body would
    # go upstream under the caller's Content-Length, and its surplus would read there as a request
    "auto_decompress": False,
}


@asynccontextmanager
async def open_gateway(
    config: Config,
    *,
    access_log: AccessLog | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[Gateway]:
    """A Gateway serving `config`, with its HTTP sessions open for as long as the context lasts."""
    async with contextlib.AsyncExitStack() as stack:
        upstream = upstream_session(READ_BUFSIZE)  # WebSockets
        stack.push_async_callback(upstream.close)
        pool = UpstreamPool(read_bufsize=ANSWER_BUFSIZE)
        stack.callback(pool.close)
        # trust_env: GitHub may only be reachable through the HTTPS_PROXY of a corporate network
        github = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), trust_env=True)
        stack.push_async_callback(github.close)
        shared = None
        if config.cache.redis_url is not None:
            shared = RedisTier(config.cache.redis_url, config.github, config.cache)
            stack.push_async_callback(shared.close)
        log = access_log or AccessLog()
        stack.callback(log.flush)
        stack.callback(metrics.TALLY.flush)
        gateway = Gateway(
            config, upstream=upstream, pool=pool, github=github, access_log=log, shared=shared, clock=clock
        )
        if shared is not None:
            listener = asyncio.create_task(shared.listen(gateway.revoked_elsewhere, gateway.cache.clear))
            stack.push_async_callback(_cancel, listener)
        yield gateway


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class _Connection(RequestHandler):
    """aiohttp's connection handler, answering what it refuses itself with DESIGN §4's JSON, holding
    each request head to `header_timeout` seconds and `max_header_size` bytes, and telling its server
    when it is idle between requests.

    The header deadline runs from the connection's opening, then from the first byte that arrives
    while it is idle between requests, to the end of that request's headers; a body, a response and
    an idle keep-alive connection (aiohttp's keepalive_timeout) are never under it. The connection is
    closed without an answer, as nginx does: a client that opened a socket ahead of time must not read
    a 408 as the answer to a request it has yet to send.
    """

    __slots__ = ("_head_bytes", "_header_deadline", "_header_timeout", "_max_header_size", "_server")

    def __init__(
        self, manager: _Server, *, header_timeout: float | None, max_header_size: int, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self._server = manager  # aiohttp forgets its manager when the connection is lost
        self._header_timeout = header_timeout
        self._max_header_size = max_header_size
        self._header_deadline: asyncio.TimerHandle | None = None
        # bytes of the request head arriving now, as read; None while no head is arriving
        self._head_bytes: int | None = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # SECURITY: aiohttp has no deadline for request headers: a client sending nothing, or its
        # headers a byte at a time (slowloris), would hold the connection for as long as it liked
        self._start_header_deadline()

    def data_received(self, data: bytes) -> None:
        # bytes arriving while the request loop waits begin a request's head (pipelined ones, which
        # arrive during the request before, are held to aiohttp's limits per line and count instead)
        begins = bool(data) and self._head_bytes is None and self._awaiting_request()
        if data:
            self._server.active(self)
        parsed = self._request_count
        super().data_received(data)
        if begins:
            self._head_bytes = 0
        if self._head_bytes is None:
            return
        self._head_bytes += len(data)
        if self._request_count != parsed:  # a request's headers are complete
            self._head_complete(parsed, self._head_bytes)
        elif self._head_bytes > self._max_header_size:
            self._refuse_head()
        elif self._header_deadline is None:
            self._start_header_deadline()

    def _head_complete(self, parsed: int, counted: int) -> None:
        """The heads of the requests after the `parsed` first are complete, in `counted` bytes read."""
        self._head_bytes = None
        self._stop_header_deadline()
        if counted <= self._max_header_size:
            return  # no head among those read can be larger than all that was read
        # what was read holds body bytes too: measure the heads themselves
        heads = list(self._messages)[parsed - self._request_count :]
        sizes = [_head_size(m) for m, _ in heads if isinstance(m, RawRequestMessage)]
        if any(size > self._max_header_size for size in sizes):
            for _ in heads:
                self._messages.pop()
            self._refuse_head()

    def _refuse_head(self) -> None:
        # SECURITY: aiohttp bounds each header line and their number, not their sum (128 lines of 8 KiB):
        # a head past max_header_size is answered 431 and the connection closed, its memory returned
        self._head_bytes = None
        self._stop_header_deadline()
        self._close = True  # what else arrives is read and dropped: the 431 is not lost to a reset
        refusal = HeadersTooLarge(f"the request line and headers exceed {self._max_header_size} bytes")
        self._messages.append(
            (_ErrInfo(status=refusal.status, exc=refusal, message=refusal.message), EMPTY_PAYLOAD)
        )
        if self._awaiting_request():
            assert self._waiter is not None
            self._waiter.set_result(None)

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        answered, reset = await super().finish_response(request, resp, start_time)
        if answered.status == RequestTimeout.status:
            # the client stalled: aiohttp would linger for the rest of its body, waiting on it again
            self.force_close()
        elif answered.keep_alive and not (reset or self._messages or self._close or self._force_close):
            self._server.idle(self)  # between requests: room for a new connection, when needed
        return answered, reset

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_header_deadline()
        super().connection_lost(exc)

    def _awaiting_request(self) -> bool:
        # aiohttp's own test for an idle connection: its request loop waits for a message
        return self._waiter is not None and not self._waiter.done()

    def _start_header_deadline(self) -> None:
        if self._header_timeout is not None:
            self._header_deadline = self._loop.call_later(self._header_timeout, self._header_time_up)

    def _stop_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_time_up(self) -> None:
        self._header_deadline = None
        if self._awaiting_request():
            self.force_close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # SECURITY: aiohttp's own error page and log line quote the offending bytes: maybe a token
        if request.writer.output_size > 0:
            raise ConnectionError("the response has started; the connection is cut instead")
        refusal: Refusal
        if isinstance(exc, Refusal):  # refused by this class itself
            refusal = exc
        elif status == 500:
            log.error("unhandled %s serving a request", type(exc).__name__, exc_info=exc)
            refusal = InternalError("the gateway failed to handle this request", close=True)
        else:
            refusal = BadRequest("the request is malformed or too large", close=True)
        return refusal_response(refusal)


class _WithoutArguments(logging.Filter):
    """Logs a record's message as written, its arguments withheld."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg, record.args = f"{record.msg} [arguments withheld: they are what a client sent]", ()
        return True


_WITHOUT_ARGUMENTS = _WithoutArguments()


def _head_size(message: RawRequestMessage) -> int:
    """The bytes of a request line and headers as parsed (optional whitespace aside)."""
    line = len(message.method) + len(message.path) + len(" HTTP/1.1\r\n")
    return line + sum(len(name) + len(value) + len(": \r\n") for name, value in message.raw_headers) + 2


class _Server(web.Server):
    """aiohttp's low-level server, holding at most `max_connections` client connections open.

    Beyond, as nginx does with its reusable connections, the connection idle the longest between
    requests (or since it opened, with nothing sent yet) is closed to make room; only when none is
    idle is the new connection closed at once. A client opening connections and sending nothing
    cannot then lock every other client out: its own idle connections are the first to go.
    """

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        *,
        max_connections: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._max_connections = max_connections
        self._open = 0
        self._idle: dict[RequestHandler, None] = {}  # idle the longest first

    def __call__(self) -> RequestHandler:
        return _Connection(self, loop=self._loop, **self._kwargs)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self._open += 1
        metrics.CONNECTIONS_OPEN.inc()
        if self._open <= self._max_connections:
            self._idle[handler] = None
        elif self._idle:
            # SECURITY: connections are a bounded resource (file descriptors, memory): the one idle
            # the longest makes room, so idle connections cannot starve clients with requests to send
            longest = next(iter(self._idle))
            del self._idle[longest]
            longest.force_close()
            metrics.CONNECTIONS_REFUSED.labels("idle").inc()
            self._idle[handler] = None
        else:
            handler.force_close()
            metrics.CONNECTIONS_REFUSED.labels("new").inc()

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self._idle.pop(handler, None)
        self._open -= 1
        metrics.CONNECTIONS_OPEN.dec()

    def idle(self, connection: _Connection) -> None:
        """`connection` waits for its next request."""
        self._idle.pop(connection, None)
        self._idle[connection] = None

    def active(self, connection: _Connection) -> None:
        """`connection` has sent bytes: it is no longer idle."""
        self._idle.pop(connection, None)


def make_server(
    handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]], config: ServerConfig
) -> web.Server:
    """aiohttp's low-level server with every request going to `handler` (no router to bypass),
    bounded as `config` (`server.*`) says: connections open, their idle time, each request head's
    deadline and size."""
    # SECURITY: aiohttp's websocket logger quotes the protocols a client offers (Sec-WebSocket-Protocol),
    # and Kubernetes clients send their token as one: "base64url.bearer.authorization.k8s.io.<token>"
    logging.getLogger("aiohttp.websocket").addFilter(_WITHOUT_ARGUMENTS)  # added once: the same filter
    return _Server(
        handler,
        max_connections=config.max_connections,
        header_timeout=config.header_timeout,
        max_header_size=config.max_header_size,
        keepalive_timeout=config.keepalive_timeout,
        **HANDLER_ARGS,
    )
