"""Keep-alive HTTP/1.1 connections to the upstreams: the pool, and one request's exchange on one.

aiohttp's ClientSession is general-purpose (cookies, redirects, auth, proxies, tracing, auto
headers): it cost the gateway ~170 us of CPU per forwarded request, more than half of all it did.
A proxy needs none of that: this pool writes and reads on `wire.UpstreamConnection` (aiohttp's C
header serialiser, its llhttp parser and flow-controlled `StreamReader`, and its `StreamWriter` for
bodies). WebSockets go through tunnels of their own (`tunnel`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from aiohttp import ClientConnectionError, ServerDisconnectedError, StreamReader
from multidict import CIMultiDict

from ..wire import RawResponseMessage, TunnelEnd, UpstreamConnection, serialize_head

MAX_IDLE_PER_ORIGIN = 256
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})  # RFC 9110 §9.2.2


class Origin(NamedTuple):
    """Where a route's upstream lives (a tuple: hashed in C, as the pool's key, per request)."""

    scheme: str
    host: str
    port: int
    host_header: str  # host[:port] as the Host header carries it


@dataclass(slots=True)
class UpstreamAnswer:
    """The upstream's answer: status line and headers read, body still to stream. `early`: it came
    before the whole request body was sent (the rest was not, and the connection will not be reused).
    """

    message: RawResponseMessage
    body: StreamReader
    _connection: UpstreamConnection
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
        reusable = self.body.is_eof() and not self.message.should_close and self._connection.reusable
        if reusable:
            self._pool._put(self._origin, self._connection)
        else:
            self._connection.close()


class UpstreamPool:
    """Idle keep-alive connections per origin; a request takes one or opens one."""

    def __init__(self, *, read_bufsize: int, ssl_context: ssl.SSLContext | None = None) -> None:
        self._idle: dict[Origin, list[UpstreamConnection]] = {}
        self._read_bufsize = read_bufsize
        self._ssl = ssl_context or ssl.create_default_context()
        self._closed = False

    async def request(
        self,
        origin: Origin,
        method: str,
        target: str,
        headers: CIMultiDict[str],
        signed: bytes,
        body: AsyncIterator[bytes] | None,
        *,
        patience: float,
    ) -> UpstreamAnswer:
        """Send one request (`signed`: header lines checked when they were made, added as they are)
        and read the answer's status line and headers; `patience` is the seconds the upstream gets to
        accept the connection, and then to answer.

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
                return await self._exchange(
                    origin, connection, method, target, headers, signed, body, patience
                )
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
        connection: UpstreamConnection,
        method: str,
        target: str,
        headers: CIMultiDict[str],
        signed: bytes,
        body: AsyncIterator[bytes] | None,
        patience: float,
    ) -> UpstreamAnswer:
        chunked = headers.get("Transfer-Encoding", "").lower() == "chunked"
        connection.send_head(
            f"{method} {target} HTTP/1.1",
            headers,
            signed,
            skip_body=method == "HEAD",
            body=body is not None,
            chunked=chunked,
            read_bufsize=self._read_bufsize,
        )
        if body is None:
            connection.wait_at_most(patience)
            return self._answer(origin, connection, *await connection.answer())
        # the answer may come while the body is still being sent; the upstream's time to answer runs
        # once the request is sent: an upload may take longer than that
        sending = asyncio.ensure_future(_send(connection, body))
        answering = connection.answer()
        try:
            await asyncio.wait((sending, answering), return_when=asyncio.FIRST_COMPLETED)
            if not answering.done():
                await _sent(sending, answering)
            if not answering.done():  # the whole request is sent: now the upstream's time runs
                connection.wait_at_most(patience)
                return self._answer(origin, connection, *await answering)
            # an early answer (a 403 or 413 before a large upload is read) is relayed as it is; the
            # rest of the body is not sent, and the connection is closed after it
            answer = self._answer(origin, connection, *answering.result())
            answer.early = not sending.done() or sending.exception() is not None
            if answer.early:
                connection.force_close()
            return answer
        finally:
            for task in (sending, answering):
                task.cancel()
            await asyncio.gather(sending, answering, return_exceptions=True)

    def _answer(
        self, origin: Origin, connection: UpstreamConnection, message: RawResponseMessage, body: StreamReader
    ) -> UpstreamAnswer:
        return UpstreamAnswer(message, body, connection, self, origin)

    async def _take(
        self, origin: Origin, patience: float, *, fresh: bool = False
    ) -> tuple[UpstreamConnection, bool]:
        idle = self._idle.get(origin)
        while idle and not fresh:
            connection = idle.pop()
            if connection.reusable:
                return connection, True
            connection.close()
        loop = asyncio.get_running_loop()
        tls = self._ssl if origin.scheme == "https" else None
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    lambda: UpstreamConnection(loop),
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

    async def tunnel(
        self, origin: Origin, target: str, headers: CIMultiDict[str], signed: bytes
    ) -> TunnelEnd:
        """A connection of its own with an upgrade request (`GET target`) sent on it: its answer to
        read, and then, if it switched protocols, a tunnel to join (wire.TunnelEnd)."""
        headers["Host"] = origin.host_header
        loop = asyncio.get_running_loop()
        tls = self._ssl if origin.scheme == "https" else None
        try:
            transport, end = await loop.create_connection(
                lambda: TunnelEnd(loop),
                origin.host,
                origin.port,
                ssl=tls,
                server_hostname=origin.host if tls else None,
            )
        except OSError as exc:
            raise ClientConnectionError(f"cannot connect to the upstream: {exc.strerror or exc}") from exc
        transport.write(serialize_head(f"GET {target} HTTP/1.1", headers, signed))
        return end

    def _put(self, origin: Origin, connection: UpstreamConnection) -> None:
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


async def _send(connection: UpstreamConnection, body: AsyncIterator[bytes]) -> None:
    async for chunk in body:
        await connection.send(chunk)
    await connection.end()


async def _sent(sending: asyncio.Future[None], answering: asyncio.Future[Any]) -> None:
    """Wait for the body to be sent. When sending fails because the upstream closed the connection,
    an answer it sent before closing is still awaited (it is the truth about the request), and the
    failure raised only when there is none."""
    try:
        await sending
    except (ConnectionResetError, BrokenPipeError, ClientConnectionError):
        await asyncio.wait((answering,))  # the connection is gone: the parser settles it at once
        if answering.exception() is not None:
            raise
