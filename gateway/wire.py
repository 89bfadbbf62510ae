"""HTTP/1.1 on the wire, both sides, built from aiohttp's parts: the one module that reaches into
aiohttp's internals (docs/architecture.md).

The listener's connection handler and server (aiohttp's `RequestHandler` and `web.Server`, with each
request head held to a deadline and a size, and a bounded number of connections), the protocol of
the gateway's own keep-alive connections to the upstreams (aiohttp's `ResponseHandler` and
`StreamWriter`: its llhttp parser, its C header serialiser that refuses CR/LF), the relayed
answer that keeps the upstream's headers as they are, and small answers written whole (`Answer`: the
gateway's own and small relayed ones, what a `web.Response` writes, without its machinery). aiohttp
is capped to the minor version these were written against (pyproject.toml), and
tests/test_aiohttp_internals.py names every internal used here, so an upgrade that moves one fails
there, by name. Longer than most modules here for that
reason: what depends on aiohttp's internals stays in one place.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import hdrs, web
from aiohttp.client_proto import ResponseHandler
from aiohttp.helpers import must_be_empty_body, rfc822_formatted_time, should_remove_content_length
from aiohttp.http import SERVER_SOFTWARE, HttpVersion10, HttpVersion11
from aiohttp.http_parser import RawRequestMessage, RawResponseMessage
from aiohttp.http_writer import StreamWriter
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from multidict import CIMultiDict

from . import metrics
from .config import ServerConfig
from .errors import BadRequest, HeadersTooLarge, InternalError, Refusal, RequestTimeout

log = logging.getLogger("gateway")
READ_BUFSIZE = 1 << 18  # per connection and direction: what a body may buffer before reading pauses

__all__ = [
    "READ_BUFSIZE",
    "Answer",
    "RawResponseMessage",
    "RelayedStream",
    "StreamReader",
]
# what a refusal the listener makes itself (a malformed request, a head too large) is answered with
Refuse = Callable[[Refusal], web.StreamResponse]

# ---------------------------------------------------------------------------------------------------
# The listener

# aiohttp's defaults, stated: a request line or header field longer than this is refused with 400
# read_bufsize: bodies stream through in chunks of whatever has arrived, up to this much per read
HANDLER_ARGS: dict[str, Any] = {
    "max_line_size": 8190,
    "max_field_size": 8190,
    "access_log": None,
    "read_bufsize": READ_BUFSIZE,
    # SECURITY: a body is passed on as the bytes that came (docs/architecture.md). Inflated, a gzip body would
    # go upstream under the caller's Content-Length, and its surplus would read there as a request
    "auto_decompress": False,
}


class _Connection(RequestHandler):
    """aiohttp's connection handler, answering what it refuses itself with the JSON of every refusal, holding
    each request head to `header_timeout` seconds and `max_header_size` bytes, and telling its server
    when it is idle between requests.

    The header deadline runs from the connection's opening, then from the first byte that arrives
    while it is idle between requests, to the end of that request's headers; a body, a response and
    an idle keep-alive connection (aiohttp's keepalive_timeout) are never under it. The connection is
    closed without an answer, as nginx does: a client that opened a socket ahead of time must not read
    a 408 as the answer to a request it has yet to send.
    """

    __slots__ = (
        "_head_bytes",
        "_header_deadline",
        "_header_timeout",
        "_max_header_size",
        "_refuse",
        "_server",
    )

    def __init__(
        self,
        manager: _Server,
        *,
        header_timeout: float | None,
        max_header_size: int,
        refuse: Refuse,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._server = manager  # aiohttp forgets its manager when the connection is lost
        self._header_timeout = header_timeout
        self._max_header_size = max_header_size
        self._refuse = refuse
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
        return self._refuse(refusal)


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
    handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
    config: ServerConfig,
    *,
    refuse: Refuse,
) -> web.Server:
    """aiohttp's low-level server with every request going to `handler` (no router to bypass),
    bounded as `config` (`server.*`) says: connections open, their idle time, each request head's
    deadline and size; what it refuses itself is answered by `refuse` (responses.refusal_response)."""
    # SECURITY: aiohttp's websocket logger quotes the protocols a client offers (Sec-WebSocket-Protocol),
    # and Kubernetes clients send their token as one: "base64url.bearer.authorization.k8s.io.<token>"
    logging.getLogger("aiohttp.websocket").addFilter(_WITHOUT_ARGUMENTS)  # added once: the same filter
    return _Server(
        handler,
        max_connections=config.max_connections,
        header_timeout=config.header_timeout,
        max_header_size=config.max_header_size,
        refuse=refuse,
        keepalive_timeout=config.keepalive_timeout,
        **HANDLER_ARGS,
    )


# ---------------------------------------------------------------------------------------------------
# Connections to the upstreams


class UpstreamConnection(ResponseHandler):
    """One keep-alive connection to an upstream: a request written, its answer parsed as it arrives
    (while the body may still be going out), and whether the connection ended in an error (a reset):
    an answer delimited by the connection's close reads as complete at any close, so a reset in the
    middle of its body is only visible here.
    """

    broken = False
    _writer: StreamWriter | None = None

    @property
    def reusable(self) -> bool:
        """Open, and nothing left on it of the last exchange."""
        return self.is_connected() and not self.should_close

    async def send_head(
        self, method: str, target: str, headers: CIMultiDict[str], *, chunked: bool, read_bufsize: int
    ) -> None:
        """Write the request line and headers, and get ready for the answer (to a HEAD: no body)."""
        self._writer = StreamWriter(self, self._loop)
        if chunked:
            self._writer.enable_chunking()
        # the answer is parsed as it arrives, and may arrive while the body is still being sent
        self.set_response_params(
            skip_payload=method == "HEAD",
            read_until_eof=True,  # an answer with neither Content-Length nor chunking ends at close
            auto_decompress=False,
            read_bufsize=read_bufsize,
        )
        await self._writer.write_headers(f"{method} {target} HTTP/1.1", headers)

    async def send(self, chunk: bytes) -> None:
        """Write a piece of the request body."""
        assert self._writer is not None
        await self._writer.write(chunk)

    async def end(self) -> None:
        """The request is sent (the last chunk, when chunked)."""
        assert self._writer is not None
        await self._writer.write_eof()

    def wait_at_most(self, seconds: float) -> None:
        """Give the upstream `seconds` to send each next piece of its answer, from now."""
        self.read_timeout = seconds
        self.start_timeout()  # dropped by the parser once the body has been read

    async def answer(self) -> tuple[RawResponseMessage, StreamReader]:
        """The final answer's status line and headers, and its body to read (1xx answers skipped)."""
        while True:
            message, payload = await self.read()
            if not 100 <= message.code < 200 or message.code == 101:
                return message, payload
            # an interim answer (100 Continue, 103 Early Hints): the final one follows

    def connection_lost(self, exc: BaseException | None) -> None:
        self.broken = exc is not None
        if exc is not None and self.transport is not None:
            self._salvage(self.transport)
        super().connection_lost(exc)

    def _salvage(self, transport: asyncio.BaseTransport) -> None:
        """Parse what the upstream sent before the connection broke and was never read.

        The event loop stops reading a connection whose write failed; an upstream that answered a
        large upload early and closed (its reset failing the next write) left its answer unread in
        the socket's receive queue. The socket is still open while connection_lost runs.
        """
        sock = transport.get_extra_info("socket")
        if sock is None or transport.get_extra_info("ssl_object") is not None:
            return  # TLS: the bytes in the socket are not the answer's
        try:
            with socket.socket(fileno=os.dup(sock.fileno())) as unread:
                unread.setblocking(False)
                while chunk := unread.recv(1 << 16):
                    self.data_received(chunk)
        except OSError:
            return  # nothing more to read (EAGAIN), or the reset itself


# ---------------------------------------------------------------------------------------------------
# Relayed answers


class RelayedStream(web.StreamResponse):
    """A relayed answer streamed as it arrives. aiohttp gives a body without a Content-Type
    `application/octet-stream`; the gateway passes the upstream's headers on as they are, and adds no
    type the upstream did not say. (A small answer of known length is relayed as an `Answer`.)"""

    untyped = False

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        if self.untyped:
            self.headers.popall("Content-Type", None)


# ---------------------------------------------------------------------------------------------------
# Small answers, written whole


class Answer(web.StreamResponse):
    """A small answer written whole: one of the gateway's own (a forward-auth decision, a refusal), or
    an upstream's of known length, relayed. Written byte for byte as aiohttp's `web.Response` writes
    it: status line, the given headers, Content-Length, Date, Server and Connection as aiohttp sets
    them, through the writer's C header serialiser (it refuses CR/LF), and the body with them in one
    write; but a Content-Type only when one is given: a relayed answer keeps the upstream's headers
    as they are, and aiohttp would type an untyped body `application/octet-stream`. It skips what a
    `Response` does on the way there (payloads, compression, cookies, the length checks of streamed
    bodies).
    """

    def __init__(
        self,
        status: int,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        *,
        reason: str | None = None,
        content_type: str | None = None,
        close: bool = False,
    ) -> None:
        real = CIMultiDict(headers)
        if content_type is not None:
            real[hdrs.CONTENT_TYPE] = content_type
        super().__init__(status=status, reason=reason, _real_headers=real)
        self.body = body
        self._keeps: bool | None = False if close else None
        self._sent = False

    @property
    def keep_alive(self) -> bool | None:
        return self._keeps

    def force_close(self) -> None:
        self._keeps = False

    @property
    def prepared(self) -> bool:
        return self._sent

    async def prepare(self, request: web.BaseRequest) -> None:
        """Write the whole answer (what `Response.prepare` and `write_eof` write together)."""
        if self._sent:
            return
        self._sent = True
        method, status, headers, body = request.method, self.status, self.headers, self.body
        keep_alive = request.keep_alive if self._keeps is None else self._keeps
        self._keeps = keep_alive
        empty = must_be_empty_body(method, status)
        if hdrs.CONTENT_LENGTH not in headers and (body or (status != 304 and method != "HEAD")):
            headers[hdrs.CONTENT_LENGTH] = str(len(body))
        if should_remove_content_length(method, status):
            headers.popall(hdrs.CONTENT_LENGTH, None)
        if hdrs.DATE not in headers:
            headers[hdrs.DATE] = rfc822_formatted_time()
        headers.setdefault(hdrs.SERVER, SERVER_SOFTWARE)
        version = request.version
        if hdrs.CONNECTION not in headers:
            if keep_alive:
                if version == HttpVersion10:
                    headers[hdrs.CONNECTION] = "keep-alive"
            elif version == HttpVersion11:
                headers[hdrs.CONNECTION] = "close"
        writer = request.writer
        await writer.write_headers(f"HTTP/{version[0]}.{version[1]} {status} {self.reason}", headers)
        await writer.write_eof(b"" if empty else body)

    async def write_eof(self, data: bytes = b"") -> None:
        """Nothing: `prepare` wrote the whole answer."""
