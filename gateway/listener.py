"""The listener: HTTP/1.1 connections from clients, parsed by llhttp (aiohttp's C parser), and the
answers written on them (docs/architecture.md: The listener).

aiohttp's server spends about 110k instructions per request on machinery a proxy does not use: a task,
a request object, a writer and a response object per request, and the response's header
negotiation. This listener keeps what matters and does the rest in a few calls:

- **Parsing** is aiohttp's C parser (llhttp) with aiohttp's limits (8190 bytes per line, 128 header
  fields), bodies as its flow-controlled `StreamReader`, never inflated. What it refuses is answered
  400 with the JSON of every refusal, and the connection closed.
- **Requests** are handled one at a time per connection, in order (pipelined ones queue, at most
  `MAX_QUEUED`, then reading pauses), by one task per burst of requests.
- **Bounds**: at most `max_connections` open (the one idle the longest makes room), each request
  head within `header_timeout` seconds and `max_header_size` bytes (431), idle keep-alive
  connections closed after `keepalive_timeout`. One timer per connection, re-armed lazily, keeps
  every deadline.
- **Answers** are written whole (`Answer`), streamed (`Stream`: Content-Length, chunked, or until
  close for HTTP/1.0), or the connection becomes a tunnel after a `101 Switching Protocols`
  (WebSockets). A body the handler left unread is read and dropped for up to `LINGER` seconds, so
  that closing the connection does not reset the answer away.

It is an aiohttp `web.Server` to aiohttp's runners and sites (`make_server`), so `ServerRunner`,
`SockSite` and the test server start and drain it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import parse_qsl

from aiohttp import hdrs, web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.helpers import EMPTY_BODY_STATUS_CODES, must_be_empty_body, rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion, HttpVersion10, HttpVersion11
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import HttpRequestParser, RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestPayloadError
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy
from yarl import URL

from . import metrics
from .config import ServerConfig
from .errors import BadRequest, HeadersTooLarge, InternalError, Refusal
from .wire import serialize_head

log = logging.getLogger("gateway")

READ_BUFSIZE = 1 << 18  # per connection and direction: what a body may buffer before reading pauses
MAX_LINE = 8190  # aiohttp's defaults, stated: a request line or header field longer is refused with 400
MAX_QUEUED = 32  # pipelined requests parsed ahead of the one being handled; then reading pauses
LINGER = 5.0  # seconds a body left unread is read and dropped before the connection closes

__all__ = ["Answer", "ClientGone", "Request", "Stream", "make_runner"]


class ClientGone(ConnectionResetError):
    """The client's connection closed while its answer was being written."""


# ---------------------------------------------------------------------------------------------------
# Requests


class Request:
    """One parsed request on a connection: its line and headers, its body to read, and its answer
    when it is not an `Answer` returned whole: streamed (`stream`) or a tunnel (`tunnel`)."""

    __slots__ = ("_connection", "_query", "content", "headers", "keep_alive", "method", "raw_path", "version")

    def __init__(self, message: RawRequestMessage, payload: StreamReader, connection: Connection) -> None:
        self.method: str = message.method
        self.raw_path: str = message.path
        self.version: HttpVersion = message.version
        self.headers: CIMultiDictProxy[str] = message.headers
        self.content = payload
        self.keep_alive = not message.should_close
        self._connection = connection
        self._query: MultiDictProxy[str] | None = None

    @property
    def remote(self) -> str | None:
        """The peer's address."""
        return self._connection.remote

    @property
    def scheme(self) -> str:
        return self._connection.scheme

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._connection.transport

    @property
    def body_exists(self) -> bool:
        return self.content is not EMPTY_PAYLOAD

    @property
    def content_length(self) -> int | None:
        length = self.headers.get(hdrs.CONTENT_LENGTH)
        return None if length is None else int(length)  # llhttp let only digits through

    @property
    def content_type(self) -> str:
        """The media type of the body, lower-case, without parameters."""
        return self.headers.get(hdrs.CONTENT_TYPE, "").partition(";")[0].strip().lower()

    @property
    def query(self) -> MultiDictProxy[str]:
        if self._query is None:
            _, _, query = self.raw_path.partition("?")
            self._query = MultiDictProxy(
                MultiDict(parse_qsl(query.partition("#")[0], keep_blank_values=True))
            )
        return self._query

    @property
    def started(self) -> bool:
        """Whether any of the answer has been written."""
        return self._connection.answering

    def send_continue(self) -> None:
        """`100 Continue`: the go-ahead a client that sent `Expect: 100-continue` waits for."""
        self._connection.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def stream(self, status: int, reason: str | None, headers: Iterable[tuple[str, str]]) -> Stream:
        """Write the head of an answer whose body follows in pieces (`Stream.write`): with the
        Content-Length among `headers` if there is one, else chunked (HTTP/1.1) or until the
        connection closes (HTTP/1.0)."""
        head = CIMultiDict(headers)
        empty = must_be_empty_body(self.method, status)
        chunked = False
        keep = self.keep_alive
        if hdrs.CONTENT_LENGTH not in head and not empty:
            if self.version >= HttpVersion11:
                head[hdrs.TRANSFER_ENCODING] = "chunked"
                chunked = True
            else:
                keep = False
        self._connection.write(_head(self, status, reason, head, keep))
        return Stream(self._connection, status, chunked=chunked, empty=empty)

    def tunnel(self, headers: CIMultiDict[str], peer: asyncio.Transport) -> Tunnel:
        """Answer `101 Switching Protocols` with `headers`, then relay raw bytes between the client
        and `peer` both ways until either side closes."""
        return self._connection.open_tunnel(_head(self, 101, None, headers, True), peer)

    def force_close(self) -> None:
        """Close the connection after this answer."""
        self._connection.closing = True


# ---------------------------------------------------------------------------------------------------
# Answers


class Answer:
    """A small answer written whole: one of the gateway's own (a forward-auth decision, a refusal, a
    control endpoint's), or an upstream's of known length, relayed. Its head is aiohttp's
    `web.Response`'s, byte for byte (tests/test_answer.py): the given headers, Content-Length, Date,
    Server and Connection as aiohttp sets them, through aiohttp's C header serialiser (it refuses
    CR/LF); but a Content-Type only when one is given: a relayed answer keeps the upstream's headers
    as they are."""

    __slots__ = ("body", "close", "headers", "lines", "reason", "status")

    def __init__(
        self,
        status: int,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        *,
        reason: str | None = None,
        content_type: str | None = None,
        close: bool = False,
        lines: bytes = b"",
    ) -> None:
        self.status = status
        self.lines = lines  # header lines checked when they were made (the identity token's)
        self.reason = reason
        self.headers = CIMultiDict(headers)
        if content_type is not None:
            self.headers[hdrs.CONTENT_TYPE] = content_type
        self.body = body
        self.close = close

    def encode(self, request: Request) -> bytes:
        """The whole answer to `request`, head and body."""
        method, status, headers, body = request.method, self.status, self.headers, self.body
        length = None
        if hdrs.CONTENT_LENGTH not in headers and (body or (status != 304 and method != "HEAD")):
            length = len(body)
        keep = request.keep_alive and not self.close
        head = _head(request, status, self.reason, headers, keep, length, self.lines)
        if (
            method == "HEAD"
            or status in EMPTY_BODY_STATUS_CODES
            or (method == "CONNECT" and 200 <= status < 300)
        ):
            return head  # aiohttp's must_be_empty_body
        return head + body


class Stream:
    """An answer whose head is written and whose body goes out in pieces as they come."""

    __slots__ = ("_chunked", "_connection", "_empty", "status")

    def __init__(self, connection: Connection, status: int, *, chunked: bool, empty: bool) -> None:
        self._connection = connection
        self._chunked = chunked
        self._empty = empty
        self.status = status

    async def write(self, piece: bytes) -> None:
        """Write `piece` of the body, then wait while the client is slower than what comes: the
        connection's write buffer stays bounded."""
        if self._empty or not piece:
            return
        connection = self._connection
        if self._chunked:
            connection.write(b"%x\r\n%b\r\n" % (len(piece), piece))
        else:
            connection.write(piece)
        await connection.drained()

    async def end(self) -> None:
        """The body is complete."""
        if self._chunked and not self._empty:
            self._connection.write(b"0\r\n\r\n")


class Tunnel:
    """A connection turned into a byte tunnel to `peer` (after a 101): `closed` waits for its end."""

    __slots__ = ("_done", "status")

    def __init__(self, done: asyncio.Future[None]) -> None:
        self._done = done
        self.status = 101

    async def closed(self) -> None:
        await asyncio.shield(self._done)


Response = Answer | Stream | Tunnel
Handler = Callable[[Request], Awaitable[Response]]
Refuse = Callable[[Refusal], Answer]


def _head(
    request: Request,
    status: int,
    reason: str | None,
    headers: CIMultiDict[str],
    keep: bool,
    length: int | None = None,
    checked: bytes = b"",
) -> bytes:
    """The status line and headers, completed as aiohttp completes a response's: Content-Length
    (`length`, when given), Date, Server and Connection added after `headers` where they lack them."""
    version = request.version
    if status in EMPTY_BODY_STATUS_CODES or (request.method == "CONNECT" and 200 <= status < 300):
        headers.popall(hdrs.CONTENT_LENGTH, None)  # aiohttp's should_remove_content_length
    elif length is not None:
        headers[hdrs.CONTENT_LENGTH] = str(length)
    if hdrs.DATE not in headers:
        headers[hdrs.DATE] = rfc822_formatted_time()
    if hdrs.SERVER not in headers:
        headers[hdrs.SERVER] = SERVER_SOFTWARE
    if hdrs.CONNECTION not in headers:
        if keep:
            if version == HttpVersion10:
                headers[hdrs.CONNECTION] = "keep-alive"
        elif version == HttpVersion11:
            headers[hdrs.CONNECTION] = "close"
    if not keep:
        request.force_close()
    if reason is None:
        reason = _REASONS.get(status, "")
    return serialize_head(f"HTTP/{version[0]}.{version[1]} {status} {reason}", headers, checked)


_REASONS = {status.value: status.phrase for status in HTTPStatus}


# ---------------------------------------------------------------------------------------------------
# Connections


class Connection(BaseProtocol):
    """One client connection: requests parsed as they arrive, handled in order, each answered."""

    __slots__ = (
        "_current",
        "_ended",
        "_head_bytes",
        "_head_since",
        "_idle_since",
        "_peer",
        "_queue",
        "_refused",
        "_server",
        "_tail",
        "_task",
        "_timer",
        "_timer_at",
        "_tunnel_done",
        "_upgrading",
        "_waiter",
        "answering",
        "closing",
        "remote",
        "scheme",
    )

    def __init__(self, server: Server) -> None:
        loop = server.loop
        parser = HttpRequestParser(
            self,
            loop,
            READ_BUFSIZE,
            max_line_size=MAX_LINE,
            max_field_size=MAX_LINE,
            payload_exception=RequestPayloadError,
            # SECURITY: a body is passed on as the bytes that came (docs/architecture.md). Inflated, a
            # gzip body would go upstream under the caller's Content-Length, its surplus read as a request
            auto_decompress=False,
            max_msg_queue_size=MAX_QUEUED,
        )
        super().__init__(loop, parser)
        self._server = server
        self._queue: deque[tuple[RawRequestMessage | Refusal, StreamReader]] = deque()
        self._task: asyncio.Task[None] | None = None  # the connection's, from its first request on
        self._waiter: asyncio.Future[None] | None = None  # set when a request comes to an idle connection
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        # when the head arriving now began (None: none is arriving), and how many bytes it came in
        self._head_since: float | None = None
        self._head_bytes = 0
        self._idle_since: float | None = None  # between requests since then (None: busy)
        self._tail = b""  # what followed an upgrade request, held until it is known to be a tunnel
        self._peer: asyncio.Transport | None = None  # the tunnel's other end
        self._tunnel_done: asyncio.Future[None] | None = None
        self._upgrading = False  # the request in hand asks to switch protocols; what follows is held
        self._refused = False  # the parser refused what came: nothing more is read
        self._ended = False  # the client half-closed: the connection closes once its requests are answered
        self._current: tuple[RawRequestMessage | Refusal, StreamReader] | None = None
        self.answering = False  # an answer has begun on the wire
        self.closing = False  # no request after the one being handled
        self.remote: str | None = None
        self.scheme = "http"

    # -- the connection's life

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) else None
        self.scheme = "https" if transport.get_extra_info("sslcontext") is not None else "http"
        now = self._loop.time()
        # SECURITY: a client sending nothing, or its headers a byte at a time (slowloris), would hold
        # the connection for as long as it liked: the head's deadline runs from the opening
        self._head_since, self._head_bytes = now, 0
        self._idle_since = now
        self._arm()
        self._server.opened(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self._server.closed(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        gone = ConnectionResetError("the client closed the connection")
        for _, payload in self._queue:
            if not payload.is_eof():
                payload.set_exception(gone)
        self._end_input()
        self._cut_body(gone)
        if self._peer is not None:
            self._peer.close()
        if self._tunnel_done is not None and not self._tunnel_done.done():
            self._tunnel_done.set_result(None)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)  # the idle task ends

    def _cut_body(self, exc: BaseException) -> None:
        """The body of the request in hand will not come whole: its reader raises `exc`."""
        if self._current is not None and not self._current[1].is_eof():
            self._current[1].set_exception(exc)

    def _end_input(self) -> None:
        """Nothing more will arrive: the parser hears the end, and a body it leaves cut short says so."""
        parser, self._parser = self._parser, None
        if parser is not None:
            try:
                parser.feed_eof()
            except HttpProcessingError as error:
                self._cut_body(RequestPayloadError(str(error)))

    @property
    def _idle(self) -> bool:
        """No request in hand: before the first, or waiting for the next."""
        return self._task is None or (self._waiter is not None and not self._waiter.done())

    def close(self) -> None:
        """Close now (what was written is still sent)."""
        if self.transport is not None:
            self.transport.close()

    def shut(self) -> None:
        """Close once the request in hand is answered; at once when there is none."""
        self.closing = True
        if self._idle:
            self.close()

    # -- reading

    def data_received(self, data: bytes) -> None:
        if self._peer is not None:  # a tunnel
            self._peer.write(data)
            return
        parser = self._parser
        if parser is None or self._refused:
            return  # what follows a refused request is never read
        if self._upgrading:
            self._tail += data  # held until the upgrade is answered
            if len(self._tail) > READ_BUFSIZE:
                self._pause_reading_for_buffer()
            return
        if data and self._idle_since is not None:  # a request begins: its head is under the deadline
            self._idle_since = None
            self._server.busy(self)
            if self._head_since is None:
                self._head_since, self._head_bytes = self._loop.time(), 0
        try:
            messages, upgraded, tail = parser.feed_data(data)
        except HttpProcessingError:
            # SECURITY: aiohttp's message quotes the offending bytes (maybe a token): never repeated
            self._refuse(BadRequest("the request is malformed or too large", close=True))
            return
        if self._head_since is not None and data:
            self._head_bytes += len(data)
            if messages:
                self._head_since = None
                if self._head_bytes > self._server.max_header_size and any(
                    _head_size(m) > self._server.max_header_size for m, _ in messages
                ):  # what was read holds body bytes too: the heads themselves are measured
                    self._refuse(self._too_large())
                    return
            elif self._head_bytes > self._server.max_header_size:
                self._refuse(self._too_large())
                return
            else:
                self._arm()
        if upgraded:
            self._upgrading = True
            self._tail = tail
        if messages:
            self._queue.extend(messages)
            if len(self._queue) >= MAX_QUEUED:
                self._pause_reading_for_buffer()
            self._wake()

    def _too_large(self) -> HeadersTooLarge:
        # SECURITY: llhttp bounds each header line and their number, not their sum (128 lines of 8 KiB):
        # a head past max_header_size is answered 431 and the connection closed, its memory returned
        return HeadersTooLarge(f"the request line and headers exceed {self._server.max_header_size} bytes")

    def _refuse(self, refusal: Refusal) -> None:
        """Answer `refusal` after the requests before it, then close; nothing more is read."""
        self._head_since = None
        self._refused = True
        self._cut_body(RequestPayloadError("the request body is malformed"))
        self._queue.append((refusal, EMPTY_PAYLOAD))
        self._wake()

    def eof_received(self) -> bool:
        """The client has sent all it will (a half-close: `shutdown(SHUT_WR)`, `nc -N`): what it
        asked before is still answered, then the connection closes. In a tunnel, the peer hears the
        end, and may still answer."""
        if self._peer is not None:
            if self._peer.can_write_eof():
                self._peer.write_eof()
            return True
        self._ended = True
        self._end_input()
        return not self._idle  # nothing in hand: closed now

    # -- handling

    def _wake(self) -> None:
        """Hand the queued requests to the connection's task: started with its first request, it waits
        between requests for the next (a future set, not a task made, per request)."""
        if self._task is None:
            self._task = self._loop.create_task(self._serve())
        elif self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _serve(self) -> None:
        """Handle the queued requests one after the other, and wait for more while the connection is
        open and idle."""
        server, loop = self._server, self._loop
        while self.transport is not None:
            while self._queue and self.transport is not None:
                item = self._current = self._queue.popleft()
                if self._parser is not None:
                    self._parser.message_consumed()
                    if self._buffer_paused and len(self._queue) <= MAX_QUEUED // 2 and not self._upgrading:
                        self._resume_reading_for_buffer()
                        self.data_received(b"")  # parse what the parser held back at MAX_QUEUED
                message, payload = item
                if isinstance(message, Refusal):
                    self.closing = True
                    with contextlib.suppress(ClientGone):
                        self.write(server.refuse(message).encode(Request(_REFUSED, payload, self)))
                    break
                await self._handle(Request(message, payload, self), payload)
                if self.closing:
                    break
            self._current = None
            if self.closing or self._ended:
                break
            self._idle_since = loop.time()
            server.idle(self)
            if self._timer is None or self._timer_at > self._idle_since + server.keepalive_timeout:
                self._arm()  # else the timer fires first, and re-arms for this keep-alive deadline
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self.close()

    async def _handle(self, request: Request, payload: StreamReader) -> None:
        self.answering = False
        try:
            response = await self._server.handler(request)
            if isinstance(response, Answer):
                self.write(response.encode(request))
        except ClientGone:
            return  # nobody to answer
        except Exception as exc:  # the handler answers every failure itself: this is a bug of its own
            log.error("unhandled %s serving a request", type(exc).__name__, exc_info=exc)
            if self.answering:
                self.close()  # the answer had begun: a cut connection is all that can be said
                return
            response = self._server.refuse(
                InternalError("the gateway failed to handle this request", close=True)
            )
            with contextlib.suppress(ClientGone):
                self.write(response.encode(request))
        if isinstance(response, Tunnel):
            self.closing = True
            await response.closed()
            return
        if self._upgrading:
            self._decline_upgrade()
        if response.status == 408:  # the client stalled: its body is not waited for again
            self.closing = True
        elif not payload.is_eof() and self.transport is not None:
            await self._linger(payload)

    async def _linger(self, payload: StreamReader) -> None:
        """Read and drop the body the handler left, for up to LINGER seconds; close if it goes on.

        Closing at once, with the body's bytes unread, would reset the connection, and a reset can
        destroy the answer before the client reads it."""
        try:
            async with asyncio.timeout(LINGER):
                while not payload.is_eof():
                    await payload.readany()
        except (TimeoutError, ConnectionError, RequestPayloadError):
            pass
        if not payload.is_eof():
            self.closing = True

    def _decline_upgrade(self) -> None:
        """The upgrade was answered without switching protocols: what followed it is requests again."""
        self._upgrading = False
        tail, self._tail = self._tail, b""
        if self._parser is not None:
            self._parser.set_upgraded(False)
            if self._buffer_paused:
                self._resume_reading_for_buffer()
            if tail:
                self.data_received(tail)

    # -- writing

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ClientGone("the client's connection is closed")
        self.answering = True
        transport.write(data)

    async def drained(self) -> None:
        """Wait until the transport's write buffer is under its high-water mark again."""
        if self._paused:
            try:
                await self._drain_helper()
            except ConnectionError as exc:
                raise ClientGone("the client's connection is closed") from exc

    def open_tunnel(self, head: bytes, peer: asyncio.Transport) -> Tunnel:
        self.write(head)
        self._upgrading = False
        self._peer = peer
        self._tunnel_done = self._loop.create_future()
        tail, self._tail = self._tail, b""
        if tail:
            peer.write(tail)
        if self._buffer_paused:
            self._resume_reading_for_buffer()
        return Tunnel(self._tunnel_done)

    def resume_reading(self, resume_parser: bool = True) -> None:
        # a body's reader calls this after every read; only a paused connection has anything to resume
        if self._reading_paused:
            super().resume_reading(resume_parser)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._peer is not None:  # the client reads slower than the peer sends: hold the peer
            self._peer.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._peer is not None:
            self._peer.resume_reading()

    # -- deadlines: one timer, re-armed lazily

    def _arm(self) -> None:
        deadline = self._deadline()
        if deadline is None:
            return
        if self._timer is not None:
            if self._timer_at <= deadline:
                return  # it fires first, and re-arms for this one then
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._tick)

    def _deadline(self) -> float | None:
        server = self._server
        deadlines = []
        if self._head_since is not None and server.header_timeout is not None:
            deadlines.append(self._head_since + server.header_timeout)
        if self._idle_since is not None:
            deadlines.append(self._idle_since + server.keepalive_timeout)
        return min(deadlines) if deadlines else None

    def _tick(self) -> None:
        self._timer = None
        deadline = self._deadline()
        if deadline is not None and deadline <= self._loop.time():
            # a head too slow, or idle too long: closed without an answer, as nginx does (a client that
            # opened a socket ahead of time must not read a 408 as the answer to a request to come)
            self.close()
        else:
            self._arm()


# what a request the parser refused is taken to be, as aiohttp takes it: the answer is HTTP/1.0
_REFUSED = RawRequestMessage(
    "UNKNOWN", "/", HttpVersion10, CIMultiDictProxy(CIMultiDict()), (), True, None, False, False, URL("/")
)


def _head_size(message: RawRequestMessage) -> int:
    """The bytes of a request line and headers as parsed (optional whitespace aside)."""
    line = len(message.method) + len(message.path) + len(" HTTP/1.1\r\n")
    return line + sum(len(name) + len(value) + len(": \r\n") for name, value in message.raw_headers) + 2


# ---------------------------------------------------------------------------------------------------
# The server


class Server:
    """The listener's connections: at most `max_connections` open.

    Beyond, as nginx does with its reusable connections, the connection idle the longest between
    requests (or since it opened, with nothing sent yet) is closed to make room; only when none is
    idle is the new connection closed at once. A client opening connections and sending nothing
    cannot then lock every other client out: its own idle connections are the first to go.
    """

    def __init__(self, handler: Handler, config: ServerConfig, refuse: Refuse) -> None:
        self.handler = handler
        self.refuse = refuse
        self.header_timeout = config.header_timeout
        self.keepalive_timeout = config.keepalive_timeout
        self.max_header_size = config.max_header_size
        self._max_connections = config.max_connections
        self.loop = asyncio.get_running_loop()
        self._open: dict[Connection, None] = {}
        self._idle: dict[Connection, None] = {}  # idle the longest first

    def __call__(self) -> Connection:
        return Connection(self)

    def opened(self, connection: Connection) -> None:
        self._open[connection] = None
        metrics.CONNECTIONS_OPEN.inc()
        if len(self._open) <= self._max_connections:
            self._idle[connection] = None
        elif self._idle:
            # SECURITY: connections are a bounded resource (file descriptors, memory): the one idle
            # the longest makes room, so idle connections cannot starve clients with requests to send
            longest = next(iter(self._idle))
            del self._idle[longest]
            longest.close()
            metrics.CONNECTIONS_REFUSED.labels("idle").inc()
            self._idle[connection] = None
        else:
            connection.close()
            metrics.CONNECTIONS_REFUSED.labels("new").inc()

    def closed(self, connection: Connection) -> None:
        if connection in self._open:
            del self._open[connection]
            metrics.CONNECTIONS_OPEN.dec()
        self._idle.pop(connection, None)

    def idle(self, connection: Connection) -> None:
        """`connection` waits for its next request."""
        self._idle.pop(connection, None)
        self._idle[connection] = None

    def busy(self, connection: Connection) -> None:
        """`connection` has sent bytes: it is no longer idle."""
        self._idle.pop(connection, None)

    def pre_shutdown(self) -> None:
        """The listening socket is closed: idle connections close now, busy ones after their answer."""
        for connection in list(self._open):
            connection.shut()

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (aiohttp's runner calls it so)
        """Wait up to `timeout` seconds for the requests in flight, then close what is left."""
        busy = [c._task for c in self._open if c._task is not None]
        if busy:
            await asyncio.wait(busy, timeout=timeout)
        for connection in list(self._open):
            connection.close()


def make_runner(handler: Handler, config: ServerConfig, *, refuse: Refuse, **kwargs: Any) -> web.ServerRunner:
    """aiohttp's runner (its sites listen, its cleanup drains) for the listener with every request
    going to `handler`, bounded as `config` (`server.*`) says: connections open, their idle time,
    each request head's deadline and size; what it refuses itself is answered by `refuse`
    (responses.refusal_response). aiohttp's runner and sites ask of their server only what `Server`
    has: a protocol factory, `pre_shutdown` and `shutdown` (tests/test_aiohttp_internals.py)."""
    return web.ServerRunner(cast(web.Server, Server(handler, config, refuse)), **kwargs)
