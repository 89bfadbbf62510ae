"""`gateway serve` with workers, as an operator drives it with signals (README: Workers): the supervisor owns
the configuration, as gunicorn's arbiter does. It reads the file on SIGHUP, refuses a bad one, and
every worker, a replacement for a killed one included, serves the configuration in force."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestServer

from gateway.testing.echo import echo_app
from gateway.testing.fake_github import FakeGitHub

from .support.processes import children, eventually, serving
from .support.sockets import free_port
from .support.world import CLIENT_ID, CLIENT_SECRET

BOUND = 10.0  # seconds any one wait on the gateway may take


@dataclass
class Supervised:
    """`gateway serve` with two workers, alice's token, and the files an operator edits and reads."""

    proc: subprocess.Popen[bytes]
    port: int
    token: str
    config: dict[str, Any]
    path: Path
    log: Path

    def rewrite(self, routes: list[dict[str, Any]]) -> None:
        self.path.write_text(yaml.safe_dump({**self.config, "routes": routes}))

    def reload(self) -> None:
        self.proc.send_signal(signal.SIGHUP)

    def workers(self) -> set[int]:
        return children(self.proc.pid)

    def logged(self, text: str) -> int:
        return self.log.read_text().count(text)

    def started(self) -> int:
        """How many workers the supervisor has started."""
        return len(re.findall(r"worker \d+ started", self.log.read_text()))


@pytest.fixture
async def supervised(
    tmp_path: Path, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> AsyncIterator[Supervised]:
    github = FakeGitHub({CLIENT_ID: CLIENT_SECRET})
    gh = await aiohttp_server(github.app())
    up = await aiohttp_server(echo_app())
    port = free_port()
    config = {
        "server": {"host": "127.0.0.1", "port": port, "workers": 2},
        "admin": None,
        "github": {
            "api_url": str(gh.make_url("")).rstrip("/"),
            "apps": [{"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}],
        },
        "routes": [{"path": "/", "upstream": str(up.make_url("")).rstrip("/")}],
    }
    async with serving(config, tmp_path) as proc:
        gateway = Supervised(
            proc,
            port,
            github.add_token("alice", 7),
            config,
            tmp_path / "gateway.yaml",
            tmp_path / "gateway.log",
        )
        await eventually(lambda: len(gateway.workers()) == 2, "two workers")
        yield gateway


def refusing_alice(upstream: str) -> list[dict[str, Any]]:
    """Routes that refuse alice; the second has a scoped upstream token (read-only mappings in it)."""
    return [
        {"path": "/", "upstream": upstream, "users": ["somebody-else"]},
        {
            "path": "/deploy",
            "upstream": upstream,
            "upstream_token": {"target": "example-org", "permissions": {"contents": "read"}},
        },
    ]


def holder(client_port: int, server_port: int, pids: set[int]) -> int | None:
    """Which of `pids` holds the gateway's end of the connection from `client_port`."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(address.split(":")[1], 16) for address in fields[1:3])
        if (local, remote) == (server_port, client_port) and fields[9] != "0":  # 0: closed, in TIME_WAIT
            inode = fields[9]
    if inode is None:
        return None
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if str(fd.readlink()) == f"socket:[{inode}]":
                    return pid
            except OSError:  # an fd closed while we looked
                continue
    return None


async def answer(gateway: Supervised, extra: str) -> tuple[int, int]:
    """Alice's request (with `extra` header lines) on a new connection: the worker that accepted it,
    and the status it answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        client_port = writer.get_extra_info("sockname")[1]

        def accepted_by() -> int | None:
            return holder(client_port, gateway.port, gateway.workers())

        await eventually(lambda: accepted_by() is not None, "no worker accepted the connection")
        pid = accepted_by()
        assert pid is not None
        head = f"GET /x HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {gateway.token}\r\n{extra}\r\n"
        writer.write(head.encode())
        return pid, int((await reader.readline()).split()[1])
    finally:
        writer.close()
        await writer.wait_closed()


async def statuses(gateway: Supervised, extra: str = "") -> dict[int, set[int]]:
    """What each worker answers alice: requests on new connections until every worker has answered."""
    seen: dict[int, set[int]] = {}
    async with asyncio.timeout(BOUND):
        while not gateway.workers() <= seen.keys():
            pid, status = await answer(gateway, extra)
            seen.setdefault(pid, set()).add(status)
    return seen


async def every_worker_answers(gateway: Supervised, status: int, extra: str = "") -> bool:
    return all(answered == {status} for answered in (await statuses(gateway, extra)).values())


async def replaced(gateway: Supervised, victim: int) -> int:
    """Kill `victim` with SIGKILL; the pid of the worker that replaces it, as soon as it is forked."""
    before = gateway.workers()
    os.kill(victim, signal.SIGKILL)
    async with asyncio.timeout(BOUND):
        while True:
            if new := gateway.workers() - before:
                [pid] = new
                return pid
            await asyncio.sleep(0.005)  # polled closely: the tests act while the replacement starts


async def test_a_worker_replaced_after_a_reload_serves_the_reloaded_config(supervised: Supervised) -> None:
    gateway = supervised
    assert await every_worker_answers(gateway, 200)
    gateway.rewrite(refusing_alice(gateway.config["routes"][0]["upstream"]))
    gateway.reload()
    await eventually(lambda: every_worker_answers(gateway, 403), "a worker still lets alice in")
    replacement = await replaced(gateway, min(gateway.workers()))
    answered = await statuses(gateway)
    assert replacement in answered
    assert all(seen == {403} for seen in answered.values()), answered


async def test_a_sighup_while_a_worker_starts_reaches_it(supervised: Supervised) -> None:
    gateway = supervised
    gateway.rewrite(refusing_alice(gateway.config["routes"][0]["upstream"]))
    replacement = await replaced(gateway, min(gateway.workers()))
    # as a signal to the whole process group would: the workers get it too, and must leave it alone
    for pid in {gateway.proc.pid, *gateway.workers()}:
        os.kill(pid, signal.SIGHUP)
    await eventually(lambda: every_worker_answers(gateway, 403), "a worker missed the reload")
    assert replacement in gateway.workers()
    assert gateway.logged("reloaded: the new config goes to 2 workers") == 1


async def test_a_bad_file_on_sighup_is_refused_once_and_every_worker_keeps_the_running_config(
    supervised: Supervised,
) -> None:
    gateway = supervised
    gateway.path.write_text("routes: [}\n")
    gateway.reload()
    await eventually(lambda: gateway.logged("reload refused") > 0, "the bad file was not refused")
    assert await every_worker_answers(gateway, 200)
    replacement = await replaced(gateway, min(gateway.workers()))
    assert (await statuses(gateway))[replacement] == {200}
    # a good file next: once every worker has logged taking it, each would have logged the bad one
    gateway.rewrite(refusing_alice(gateway.config["routes"][0]["upstream"]))
    gateway.reload()
    await eventually(lambda: every_worker_answers(gateway, 403), "a worker missed the reload")
    await eventually(
        lambda: all(gateway.logged(f"config reloaded (pid {pid})") for pid in gateway.workers()),
        "reload logged",
    )
    assert gateway.logged("reload refused") == 1  # the supervisor read the file, no worker did


async def test_a_reload_keeps_the_listener_in_every_worker_a_replacement_included(
    supervised: Supervised,
) -> None:
    gateway = supervised
    smaller = {**gateway.config["server"], "max_header_size": 1024}
    admin_port = free_port()
    admin = {"host": "127.0.0.1", "port": admin_port}  # none at start: workers bind it only then
    gateway.path.write_text(yaml.safe_dump({**gateway.config, "server": smaller, "admin": admin}))
    gateway.reload()
    warning = "server.max_header_size, admin only change with a restart; kept as they were"
    await eventually(lambda: gateway.logged(warning) == 1, "no warning about the listener")
    replacement = await replaced(gateway, min(gateway.workers()))
    answered = await statuses(gateway, extra=f"X-Padding: {'p' * 4000}\r\n")  # fits 64 KiB, not 1 KiB
    assert answered[replacement] == {200}
    assert all(seen == {200} for seen in answered.values()), answered
    with pytest.raises(ConnectionRefusedError):  # the replacement kept the running admin too: none
        await asyncio.open_connection("127.0.0.1", admin_port)


async def test_sigterm_during_a_restarts_backoff_starts_no_worker(supervised: Supervised) -> None:
    gateway = supervised
    first = gateway.workers()
    for pid in first:  # each death doubles the wait before the next restart: 0.2 s, 0.4 s, …
        os.kill(pid, signal.SIGKILL)
    await eventually(lambda: len(gateway.workers() - first) == 2, "no replacements")
    for pid in gateway.workers():  # … 0.8 s, 1.6 s
        os.kill(pid, signal.SIGKILL)
    await eventually(lambda: gateway.logged("restarting in 1.6s") == 1, "the fourth death was not logged")
    started = gateway.started()
    gateway.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(gateway.proc.wait, BOUND) == 0
    assert gateway.started() == started
