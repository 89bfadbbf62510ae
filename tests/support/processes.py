"""Other processes a test drives: `gateway serve` in a subprocess, its workers, its memory, and the one
bounded way to wait for something a test cannot await directly (`eventually`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import yaml

REPO = Path(__file__).resolve().parents[2]
POLL = 0.05  # seconds between two looks at a condition


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]], what: str, *, within: float = 20.0
) -> None:
    """Poll a condition about another process (or what it answers) until it holds; fail with `what`
    after `within` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        held = condition()
        if held if isinstance(held, bool) else await held:
            return
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(POLL)


def children(pid: int) -> set[int]:
    """The live child processes of `pid`."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.add(int(stat.parent.name))
    return out


def rss_kib(pid: int, *, peak: bool = False) -> int:
    """The resident memory of a process in KiB: now, or its peak so far."""
    field = "VmHWM:" if peak else "VmRSS:"
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


async def until_listening(url: str, running: Callable[[], bool], log: Callable[[], str]) -> None:
    """Until a server started in another process answers at `url`; fail with its log if it exits
    first, or does not answer within 20 s."""
    async with aiohttp.ClientSession() as session:

        async def answers() -> bool:
            try:
                async with session.get(url + "/", ssl=False):  # up is up, whatever the certificate
                    return True
            except aiohttp.ClientConnectionError:
                assert running(), log()
                return False

        await eventually(answers, f"{url} never answered")


@contextlib.asynccontextmanager
async def serving(
    config: dict[str, Any],
    directory: Path,
    *,
    name: str = "gateway",
    env: Mapping[str, str] | None = None,
    piped: bool = False,
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """`gateway serve` in a subprocess, from `config` written to `directory/name.yaml` (stderr in
    `name.log`, stdout a pipe with `piped`, else discarded), once its main port answers; stopped
    with SIGTERM afterwards."""
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    log_path = directory / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "-c", str(path)],
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE if piped else subprocess.DEVNULL,
            stderr=log,
        )
        server = config["server"]
        url = f"{'https' if server.get('tls') else 'http'}://127.0.0.1:{server['port']}"
        try:
            await until_listening(url, lambda: proc.poll() is None, log_path.read_text)
            yield proc
        finally:
            if proc.stdout is not None:
                proc.stdout.close()  # no reader left: what stdout still holds is dropped, not waited for
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 20)
