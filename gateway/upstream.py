"""Keep-alive HTTP/1.1 connections to the upstreams, built from aiohttp's own parts.

aiohttp's ClientSession is general-purpose (cookies, redirects, auth, proxies, tracing, auto
headers): it cost the gateway ~170 us of CPU per forwarded request, more than half of all it did.
A proxy needs none of that: this pool writes the request with aiohttp's `StreamWriter` (its C
header serialiser refuses CR/LF) and reads the answer with aiohttp's `ResponseHandler` (its llhttp
parser and flow-controlled `StreamReader`), about 40 us. WebSockets still go through the session.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import ClientConnectionError, ServerDisconnectedError
from aiohttp.client_proto import ResponseHandler
from aiohttp.http_parser import RawResponseMessage
from aiohttp.http_writer import StreamWriter
from aiohttp.streams import StreamReader
from multidict import CIMultiDict

MAX_IDLE_PER_ORIGIN = 256
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})  # RFC 9110 §9.2.2


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a route's upstream lives."""

    scheme: str
    host: str
    port: int
    host_header: str  # host[:port] as the Host header carries it


class _Connection(ResponseHandler):
    """aiohttp's client protocol, remembering whether the connection ended in an error (a reset).

    An answer delimited by the connection's close reads as complete at any close, so a reset in the
    middle of its body is only visible here.
    """

    broken = False

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


@dataclass(slots=True)
class Answer:
    """The upstream's answer: status line and headers read, body still to stream. `early`: it came
    before the whole request body was sent (the rest was not, and the connection will not be reused).
    """

    message: RawResponseMessage
    body: StreamReader
    _connection: _Connection
    _pool: UpstreamPool
    _origin: Origin
    early: bool = False
    _done: bool = field(default=False)

    @property
    def cut(self) -> bool:
        """Whether an answer delimited by the connection's close ended in a reset instead: cut short.
        (A body of known length or chunked that is cut short fails to read instead.)"""
        message = self.message
        return self._connection.broken and not message.chunked and "Content-Length" not in message.headers

    def release(self) -> None:
        """Give the connection back for reuse if the whole body was read and it may stay open;
        close it otherwise. Safe to call more than once."""
        if self._done:
            return
        self._done = True
        reusable = self.body.is_eof() and not self.message.should_close and not self._connection.should_close
        if reusable:
            self._pool._put(self._origin, self._connection)
        else:
            self._connection.close()


class UpstreamPool:
    """Idle keep-alive connections per origin; a request takes one or opens one."""

    def __init__(self, *, read_bufsize: int, ssl_context: ssl.SSLContext | None = None) -> None:
        self._idle: dict[Origin, list[_Connection]] = {}
        self._read_bufsize = read_bufsize
        self._ssl = ssl_context or ssl.create_default_context()
        self._closed = False

    async def request(
        self,
        origin: Origin,
        method: str,
        target: str,
        headers: CIMultiDict[str],
        body: AsyncIterator[bytes] | None,
        *,
        patience: float,
    ) -> Answer:
        """Send one request and read the answer's status line and headers; `patience` is the
        seconds the upstream gets to accept the connection, and then to answer.

        Raises TimeoutError, or ClientConnectionError (aiohttp's) when the upstream cannot be reached
        or broke off. A reused connection that turns out closed is retried once on a new one when
        the request is idempotent and has no body (nothing can be lost or done twice).
        """
        headers["Host"] = origin.host_header
        if body is not None and "Content-Length" not in headers:
            headers["Transfer-Encoding"] = "chunked"
        for attempt in (1, 2):
            connection, reused = await self._take(origin, patience, fresh=attempt == 2)
            try:
                return await self._exchange(origin, connection, method, target, headers, body, patience)
            except (ServerDisconnectedError, ConnectionResetError, BrokenPipeError):
                connection.close()
                if attempt == 2 or not reused or body is not None or method not in IDEMPOTENT:
                    raise
            except BaseException:
                connection.close()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _exchange(
        self,
        origin: Origin,
        connection: _Connection,
        method: str,
        target: str,
        headers: CIMultiDict[str],
        body: AsyncIterator[bytes] | None,
        patience: float,
    ) -> Answer:
        loop = asyncio.get_running_loop()
        writer = StreamWriter(connection, loop)
        if headers.get("Transfer-Encoding", "").lower() == "chunked":
            writer.enable_chunking()
        # the answer is parsed as it arrives, and may arrive while the body is still being sent; its
        # read timeout starts once the request is sent: an upload may take longer than the time an
        # upstream gets to answer
        connection.set_response_params(
            skip_payload=method == "HEAD",
            read_until_eof=True,  # an answer with neither Content-Length nor chunking ends at close
            auto_decompress=False,
            read_bufsize=self._read_bufsize,
        )
        await writer.write_headers(f"{method} {target} HTTP/1.1", headers)
        if body is None:
            await writer.write_eof()
            return await self._answer(origin, connection, patience)
        sending = asyncio.ensure_future(_send(writer, body))
        answering = asyncio.ensure_future(self._answer(origin, connection, None))
        try:
            await asyncio.wait((sending, answering), return_when=asyncio.FIRST_COMPLETED)
            if not answering.done():
                await _sent(sending, answering)
            if not answering.done():  # the whole request is sent: now the upstream's time runs
                connection.read_timeout = patience
                connection.start_timeout()  # dropped by the parser once the body has been read
                return await answering
            # an early answer (a 403 or 413 before a large upload is read) is relayed as it is; the
            # rest of the body is not sent, and the connection is closed after it
            answer = answering.result()
            answer.early = not sending.done() or sending.exception() is not None
            if answer.early:
                connection.force_close()
            return answer
        finally:
            for task in (sending, answering):
                task.cancel()
            await asyncio.gather(sending, answering, return_exceptions=True)

    async def _answer(self, origin: Origin, connection: _Connection, patience: float | None) -> Answer:
        """The final answer's status line and headers (interim 1xx answers are skipped)."""
        if patience is not None:
            connection.read_timeout = patience
            connection.start_timeout()  # dropped by the parser once the body has been read
        while True:
            message, payload = await connection.read()
            if not 100 <= message.code < 200 or message.code == 101:
                return Answer(message, payload, connection, self, origin)
            # an interim answer (100 Continue, 103 Early Hints): the final one follows

    async def _take(
        self, origin: Origin, patience: float, *, fresh: bool = False
    ) -> tuple[_Connection, bool]:
        idle = self._idle.get(origin)
        while idle and not fresh:
            connection = idle.pop()
            if connection.is_connected() and not connection.should_close:
                return connection, True
            connection.close()
        loop = asyncio.get_running_loop()
        tls = self._ssl if origin.scheme == "https" else None
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(loop),
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                ),
                patience,
            )
        except OSError as exc:
            raise ClientConnectionError(f"cannot connect to the upstream: {exc.strerror or exc}") from exc
        return connection, False

    def _put(self, origin: Origin, connection: _Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        if self._closed or len(idle) >= MAX_IDLE_PER_ORIGIN:
            connection.close()
        else:
            idle.append(connection)

    def close(self) -> None:
        """Close every idle connection; connections in use close when released."""
        self._closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()


async def _send(writer: StreamWriter, body: AsyncIterator[bytes]) -> None:
    async for chunk in body:
        await writer.write(chunk)
    await writer.write_eof()


async def _sent(sending: asyncio.Future[None], answering: asyncio.Future[Answer]) -> None:
    """Wait for the body to be sent. When sending fails because the upstream closed the connection,
    an answer it sent before closing is still awaited (it is the truth about the request), and the
    failure raised only when there is none."""
    try:
        await sending
    except (ConnectionResetError, BrokenPipeError, ClientConnectionError):
        await asyncio.wait((answering,))  # the connection is gone: the parser settles it at once
        if answering.exception() is not None:
            raise
