"""HTTP/1.1 to the upstreams, built from aiohttp's parts (docs/architecture.md).

The protocol of the gateway's own keep-alive connections to the upstreams (on aiohttp's llhttp
parser, its C header serialiser that refuses CR/LF, its `StreamReader` and `StreamWriter`),
and the upstream's end of a WebSocket tunnel. With gateway/listener.py (the client side), the modules
that reach into aiohttp's internals: aiohttp is capped to the minor version these were written
against (pyproject.toml), and tests/test_aiohttp_internals.py names every internal used, so an
upgrade that moves one fails there, by name.
"""

from __future__ import annotations

import asyncio
import os
import socket

from aiohttp import (
    ClientConnectionError,
    ClientOSError,
    ClientPayloadError,
    ServerDisconnectedError,
    ServerTimeoutError,
)
from aiohttp.base_protocol import BaseProtocol
from aiohttp.helpers import EMPTY_BODY_STATUS_CODES
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import HttpResponseParser, RawResponseMessage
from aiohttp.http_writer import StreamWriter, _serialize_headers
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from multidict import CIMultiDict

__all__ = ["RawResponseMessage", "StreamReader", "TunnelEnd", "UpstreamConnection", "serialize_head"]


# a request or status line and its headers (a CIMultiDict) as a head, in C; ValueError if any of it
# holds a CR or LF of its own (a header injected, or the head ended early)


def serialize_head(first: str, headers: CIMultiDict[str], checked: bytes = b"") -> bytes:
    """A request or status line, its headers and `checked` (header lines made and checked by the
    gateway itself, each ending in CRLF) as the head of a message. aiohttp's C serialiser refuses
    (ValueError) a CR or LF of its own in the line, a name or a value: a header injected, or the head
    ended early."""
    head: bytes = _serialize_headers(first, headers)
    return head[:-2] + checked + b"\r\n" if checked else head


MAX_TUNNEL_HEAD = 1 << 16  # bytes of the upstream's answer to an upgrade

# ---------------------------------------------------------------------------------------------------
# Connections to the upstreams


class UpstreamConnection(BaseProtocol):
    """One keep-alive connection to an upstream: a request written, its answer parsed as it arrives
    (while the body may still be going out) by a parser of its own for each exchange, and whether the
    connection ended in an error (a reset): an answer delimited by the connection's close reads as
    complete at any close, so a reset in the middle of its body is only visible here.

    aiohttp's client protocol (`ResponseHandler`) did the same with a message queue, a timer reset on
    every read and a writer per exchange; this one keeps llhttp (aiohttp's C parser), its
    flow-controlled `StreamReader` and its writer for bodies, and does the rest in a few calls.

    SECURITY: bytes the upstream sends beyond its answer never become another exchange's answer: a
    second answer in the same read, or bytes arriving once the answer was whole, retire the connection
    (it is closed, never reused), and each exchange's parser is new, so what llhttp held of the last
    one (the start of a head, in the same read as the answer's end) is dropped with it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.broken = False  # closed by an error (a reset), not a clean close
        self._answer: asyncio.Future[tuple[RawResponseMessage, StreamReader]] | None = None
        self._message: RawResponseMessage | None = None
        self._payload: StreamReader | None = None
        self._writer: StreamWriter | None = None
        self._stray = False  # bytes came that belong to no exchange: never reused
        self._patience = 0.0  # seconds the upstream gets for each next piece of its answer
        self._last = 0.0  # when the last bytes came
        self._timer: asyncio.TimerHandle | None = None

    @property
    def reusable(self) -> bool:
        """Open, and nothing left on it of the last exchange."""
        transport = self.transport
        message = self._message
        return (
            transport is not None
            and not transport.is_closing()
            and not self._stray
            and message is not None
            and not message.should_close
            and self._payload is not None
            and self._payload.is_eof()
        )

    def send_head(
        self,
        line: str,
        headers: CIMultiDict[str],
        checked: bytes,
        *,
        skip_body: bool,
        body: bool,
        chunked: bool,
        read_bufsize: int,
    ) -> None:
        """Write the request line and headers (and `checked` lines: `serialize_head`), and get ready
        for the answer (without a body when `skip_body`: to a HEAD); with `body`, the body follows
        (`send`, then `end`), in chunks when `chunked`."""
        transport = self.transport
        if transport is None or transport.is_closing():  # a kept-alive connection the upstream closed
            raise ServerDisconnectedError("the upstream closed the connection")
        # a parser for this exchange alone; an answer with neither Content-Length nor chunking ends at
        # the connection's close
        self._parser = HttpResponseParser(
            self,
            self._loop,
            read_bufsize,
            response_with_body=not skip_body,
            read_until_eof=True,
            auto_decompress=False,
        )
        self._answer = self._loop.create_future()
        self._message = self._payload = None
        transport.write(serialize_head(line, headers, checked))
        self._writer = None
        if body:
            self._writer = StreamWriter(self, self._loop)
            if chunked:
                self._writer.enable_chunking()

    async def send(self, chunk: bytes) -> None:
        """Write a piece of the request body."""
        assert self._writer is not None
        await self._writer.write(chunk)

    async def end(self) -> None:
        """The body is sent (the last chunk, when chunked)."""
        assert self._writer is not None
        await self._writer.write_eof()

    def wait_at_most(self, seconds: float) -> None:
        """Give the upstream `seconds` to send each next piece of its answer, from now (until the
        answer's body has been read): one timer, re-armed from the last bytes when it fires."""
        self._patience = seconds
        self._last = now = self._loop.time()
        if self._timer is not None:
            if self._timer.when() <= now + seconds:
                return  # it fires first, and re-arms from the last bytes then
            self._timer.cancel()  # a longer wait armed it, for an exchange before this one
        self._timer = self._loop.call_at(now + seconds, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._answer is None or (self._payload is not None and self._payload.is_eof()):
            return  # the answer is read: nothing to wait for
        due = self._last + self._patience
        if self._loop.time() < due:
            self._timer = self._loop.call_at(due, self._tick)
            return
        self._fail(ServerTimeoutError(f"the upstream sent nothing for {self._patience:g}s"))
        self.close()

    def answer(self) -> asyncio.Future[tuple[RawResponseMessage, StreamReader]]:
        """The final answer's status line and headers, and its body to read (1xx answers skipped),
        to await."""
        assert self._answer is not None
        return self._answer

    def data_received(self, data: bytes) -> None:
        if data:
            self._last = self._loop.time()
        parser = self._parser
        if data and (
            parser is None or self._answer is None or (self._payload is not None and self._payload.is_eof())
        ):
            self._stray = True  # bytes before any exchange, or after its answer was whole
            self.close()
            return
        if parser is None or self._answer is None:
            return
        try:
            messages, upgraded, _ = parser.feed_data(data)
        except HttpProcessingError as exc:
            self._fail(ClientConnectionError(f"the upstream's answer is malformed: {exc.message}"))
            self.close()
            return
        for message, payload in messages:
            code = message.code
            if 100 <= code < 200 and code != 101:
                continue  # an interim answer (100 Continue, 103 Early Hints): the final one follows
            if self._message is not None:  # a second answer to one request
                self._stray = True
                continue
            self._message = message
            self._payload = EMPTY_PAYLOAD if code in EMPTY_BODY_STATUS_CODES else payload
            if not self._answer.done():
                self._answer.set_result((message, self._payload))
        if upgraded:  # an upgrade nobody asked for: what follows is not HTTP
            self._stray = True

    def _fail(self, exc: BaseException) -> None:
        """The exchange in flight ends in `exc`: its answer, or its body, raises it."""
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(exc)
        elif self._payload is not None and not self._payload.is_eof():
            self._payload.set_exception(exc)

    def resume_reading(self, resume_parser: bool = True) -> None:
        # a body's reader calls this after every read; only a paused connection has anything to resume
        if self._reading_paused:
            super().resume_reading(resume_parser)

    def force_close(self) -> None:
        """Close once the answer is read: nothing else will be sent on this connection."""
        self._stray = True

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.broken = exc is not None
        if exc is not None and self.transport is not None:
            self._salvage(self.transport)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        parser, self._parser = self._parser, None
        if parser is not None:
            try:
                parser.feed_eof()  # an answer delimited by the close ends here
            except HttpProcessingError as cut:  # a body of known length or chunked, cut short
                self._fail(ClientPayloadError(f"the upstream's answer is not complete: {cut.message}"))
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(
                ServerDisconnectedError("the upstream closed the connection")
                if exc is None
                else ClientOSError(f"the connection to the upstream broke: {exc}")
            )
        self._fail(ClientPayloadError("the upstream closed the connection mid-answer"))
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
# Tunnels (WebSockets)


class TunnelEnd(BaseProtocol):
    """The upstream's end of a tunnel: its answer to the upgrade read (`answer`), then, once `join`ed
    to the client's transport, bytes relayed both ways as they come (the client's side is the
    listener's), each side's reading held while the other cannot take more."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._head = b""
        self._answered: asyncio.Future[tuple[RawResponseMessage, bytes]] = loop.create_future()
        self._client: asyncio.Transport | None = None

    async def answer(self) -> tuple[RawResponseMessage, bytes]:
        """The answer's status line and headers, and the bytes that followed them."""
        return await self._answered

    def data_received(self, data: bytes) -> None:
        if self._client is not None:
            self._client.write(data)
            return
        if self._answered.done():
            self._head += data  # the tunnel's first bytes, written when it is joined
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_TUNNEL_HEAD:
                self._answered.set_exception(ClientConnectionError("the upstream's answer head is too large"))
            return
        head, self._head = self._head[: end + 4], self._head[end + 4 :]
        parser = HttpResponseParser(self, self._loop, MAX_TUNNEL_HEAD, response_with_body=False)
        try:
            messages, _, _ = parser.feed_data(head)
        except HttpProcessingError as exc:
            self._answered.set_exception(ClientConnectionError(f"the upstream's answer is malformed: {exc}"))
            return
        self._answered.set_result((messages[0][0], self._head))
        self._head = b""

    def join(self, client: asyncio.Transport, first: bytes) -> None:
        """Relay to `client` from now on, `first` (what followed the answer's head) first."""
        self._client = client
        if first or self._head:
            client.write(first + self._head)
            self._head = b""

    def pause_reading(self) -> None:  # the parser's flow control; a head is never that large
        """Nothing: a head is read whole."""

    def resume_reading(self, resume_parser: bool = True) -> None:
        """Nothing: a head is read whole."""

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._client is not None:  # the upstream reads slower than the client sends
            self._client.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._client is not None:
            self._client.resume_reading()

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        if not self._answered.done():
            self._answered.set_exception(ClientConnectionError("the upstream closed the connection"))
        if self._client is not None:
            self._client.close()
