"""The connection metrics (README: The admin port) as an operator scrapes them from `gateway serve` with
workers: summed over the workers alive, a dead worker's connections leaving the sum with it."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp

from .support.metrics import sample
from .support.processes import children, eventually, serving
from .support.sockets import free_port

OPEN = 12


async def connections_open(session: aiohttp.ClientSession, admin: int) -> float:
    async with session.get(f"http://127.0.0.1:{admin}/metrics") as resp:
        text = await resp.text()
        assert resp.status == 200, text
    return sample(text, "gateway_connections_open")


def sockets(pid: int) -> int:
    """How many sockets a process holds open."""
    return sum(1 for fd in Path(f"/proc/{pid}/fd").iterdir() if "socket:" in str(fd.readlink()))


def closed(reader: asyncio.StreamReader) -> bool:
    return reader.at_eof() or reader.exception() is not None


async def test_open_connections_are_summed_over_live_workers(tmp_path: Path) -> None:
    port, admin = free_port(), free_port()
    config = {
        "server": {"host": "127.0.0.1", "port": port, "workers": 2, "header_timeout": "60s"},
        "admin": {"host": "127.0.0.1", "port": admin},
        "github": {"api_url": "http://127.0.0.1:9", "apps": [{"client_id": "Iv1.0", "client_secret": "s"}]},
        "routes": [{"path": "/", "upstream": "http://127.0.0.1:9", "auth": "none"}],
    }
    async with serving(config, tmp_path) as proc, aiohttp.ClientSession() as session:
        await eventually(lambda: len(children(proc.pid)) == 2, "two workers")
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(OPEN)]
        try:

            async def counted(n: int) -> bool:
                return await connections_open(session, admin) == n

            await eventually(lambda: counted(OPEN), f"{OPEN} connections open")
            busiest = max(children(proc.pid), key=sockets)  # it holds at least half of them
            os.kill(busiest, signal.SIGKILL)  # its connections die with it

            async def dead_ones_left() -> bool:  # what is open now, and only that, is counted
                gone = sum(closed(reader) for reader, _ in idle)
                return gone > 0 and await counted(OPEN - gone)

            await eventually(dead_ones_left, "a dead worker's connections still counted")
        finally:
            for _, writer in idle:
                writer.close()
