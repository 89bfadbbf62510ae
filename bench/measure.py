"""Measurements made with an HTTP client of the harness's own: the forward-auth probe, the thundering
herd, the miss-heavy load and the 1 GiB upload. Each asks the fake GitHub (`GET /_count`) how many
check calls it served, where that is the point."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp

MIB = 1 << 20
_TIMEOUT = aiohttp.ClientTimeout(total=60)


def new_token() -> str:
    """A token the fake GitHub calls valid, never seen before."""
    return "good" + secrets.token_hex(16)


def _session(*, limit: int = 0) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        timeout=_TIMEOUT,
    )


async def check_calls(session: aiohttp.ClientSession, github: str) -> int:
    """How many check calls the fake GitHub has served."""
    async with session.get(f"{github}/_count") as response:
        body = await response.json()
    return int(body["n"])


async def fetch(url: str, token: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """One GET with the token: status and body text."""
    async with (
        _session() as session,
        session.get(url, headers={"Authorization": f"Bearer {token}", **(headers or {})}) as response,
    ):
        return response.status, await response.text()


async def forward_auth_present(gateway: str, prefix: str, token: str) -> tuple[bool, str]:
    """Whether the gateway serves `GET PREFIX/auth` (forward-auth), and what its probe answered."""
    status, body = await fetch(
        f"{gateway}{prefix}/auth", token, {"X-Original-URI": "/", "X-Original-Method": "GET"}
    )
    if status == 404 and '"not_found"' in body:
        return False, f"GET {prefix}/auth answers 404 not_found: the gateway has no forward-auth endpoint yet"
    if status == 200:
        return True, f"GET {prefix}/auth answers 200"
    return False, f"GET {prefix}/auth answered {status} to a valid token: {body[:200]!r}"


@dataclass(frozen=True)
class Herd:
    """Concurrent requests with one new token: what they got, and how many check calls they caused."""

    requests: int
    statuses: dict[int, int]
    check_calls: int


async def herd(url: str, github: str, requests: int) -> Herd:
    """`requests` concurrent requests, each on its own connection, all with one new token."""
    token = new_token()
    async with _session() as session:
        before = await check_calls(session, github)

        async def one() -> int:
            async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
                await response.read()
                return response.status

        statuses = Counter(await asyncio.gather(*(one() for _ in range(requests))))
        calls = await check_calls(session, github) - before
    return Herd(requests, dict(sorted(statuses.items())), calls)


@dataclass(frozen=True)
class Misses:
    """A load of distinct new tokens: every request is a cache miss."""

    tokens: int
    concurrency: int
    seconds: float
    rps: float
    check_calls: int
    statuses: dict[int, int]


async def misses(url: str, github: str, tokens: int, concurrency: int) -> Misses:
    """`tokens` requests, each with a token of its own, `concurrency` at a time."""
    pending: Iterator[str] = (new_token() for _ in range(tokens))
    statuses: Counter[int] = Counter()
    async with _session(limit=concurrency) as session:
        before = await check_calls(session, github)

        async def worker() -> None:
            for token in pending:
                async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
                    await response.read()
                    statuses[response.status] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
        calls = await check_calls(session, github) - before
    return Misses(tokens, concurrency, seconds, tokens / seconds, calls, dict(sorted(statuses.items())))


@dataclass(frozen=True)
class Upload:
    """One large POST: how long it took, and what the receiving end counted."""

    sent: int
    received: int
    status: int
    seconds: float
    mib_per_s: float


async def _blocks(size: int, block: bytes) -> AsyncIterator[bytes]:
    sent = 0
    while sent < size:
        chunk = block if size - sent >= len(block) else block[: size - sent]
        sent += len(chunk)
        yield chunk


async def upload(url: str, size: int, token: str) -> Upload:
    """POST `size` bytes streamed from one reused 1 MiB block; the sink answers the length it read."""
    block = secrets.token_bytes(MIB)
    headers = {"Authorization": f"Bearer {token}", "Content-Length": str(size)}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120)
    async with _session() as session:
        started = time.perf_counter()
        async with session.post(url, data=_blocks(size, block), headers=headers, timeout=timeout) as response:
            text = await response.text()
        seconds = time.perf_counter() - started
    received = int(text) if response.status == 200 and text.isdigit() else -1
    return Upload(size, received, response.status, seconds, size / MIB / seconds)


@dataclass
class Idle:
    """Keep-alive client connections held open and idle, each after one request answered."""

    connections: int
    answered: int  # how many of them got their 200
    rss_before_kib: int
    rss_after_kib: int

    @property
    def kib_per_connection(self) -> float:
        """The server's RSS growth per idle connection."""
        return (self.rss_after_kib - self.rss_before_kib) / max(1, self.connections)


@contextlib.asynccontextmanager
async def idle_clients(host: str, port: int, token: str, count: int) -> AsyncIterator[int]:
    """`count` connections, each sending one keep-alive request and reading its answer, then left open
    and silent for as long as the block lasts; yields how many were answered 200."""
    request = (f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n\r\n").encode()
    writers: list[asyncio.StreamWriter] = []
    answered = 0

    async def one() -> None:
        nonlocal answered
        reader, writer = await asyncio.open_connection(host, port)
        writers.append(writer)
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        await reader.readexactly(length)
        answered += head.startswith(b"HTTP/1.1 200")

    try:
        for start in range(0, count, 500):  # a few hundred at a time: the listen backlog is finite
            await asyncio.gather(*(one() for _ in range(min(500, count - start))))
        yield answered
    finally:
        for writer in writers:
            writer.close()
