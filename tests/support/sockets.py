"""Raw sockets: free ports, and requests as exact bytes (no client-side normalisation), with what came
back. Every raw answer goes to the canary ledger (tests/support/canary.py)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
from typing import Any

from .canary import LEDGER

SMUGGLED = b"GET /admin/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"  # what smuggling tests try to slip past
_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


def free_port() -> int:
    """A loopback port nothing listens on (for a server in another process)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def exchange(port: int, data: bytes, *, responses: int | None = None, within: float = 5.0) -> bytes:
    """Send raw bytes on one connection; what came back until the gateway closed it, or until
    `responses` whole responses (Content-Length framed) arrived; `within` seconds only bound a hang."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if responses is None:
            answer = await asyncio.wait_for(reader.read(), within)
        else:
            answer = b"".join([await read_response(reader, within) for _ in range(responses)])
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]
        LEDGER.add(test, "raw answer", answer.decode("latin-1"))
        return answer
    finally:
        writer.close()
        await writer.wait_closed()


async def raw_request(port: int, head: str) -> tuple[int, bytes]:
    """Send a request head (its lines each ending in CRLF) with `Connection: close`; the status and
    the whole answer."""
    answer = await exchange(port, head.encode("latin-1") + b"Connection: close\r\n\r\n")
    return statuses(answer)[0], answer


async def read_response(reader: asyncio.StreamReader, within: float = 5.0) -> bytes:
    """One whole response (Content-Length framed) from a raw connection; `within` only bounds a hang."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), within)
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    body = await asyncio.wait_for(reader.readexactly(int(length.group(1))), within) if length else b""
    return head + body


def raw(
    method: str, target: str, *headers: str, body: bytes = b"", close: bool = True, host: str = "gateway"
) -> bytes:
    """A request as raw bytes, exactly as given: no header is added but Host and Connection: close."""
    head = [f"{method} {target} HTTP/1.1", f"Host: {host}", *headers]
    if close:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def statuses(answer: bytes) -> list[int]:
    """The status of every response in a raw answer, in order."""
    return [int(code) for code in _STATUS.findall(answer)]


def body_of(answer: bytes) -> dict[str, Any]:
    """The JSON body of the one response in a raw answer."""
    body: dict[str, Any] = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    return body
