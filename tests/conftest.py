"""The world the end-to-end tests run in: the fake GitHub and the echo upstream on real local sockets,
and the gateway built from a config written the way a user writes one."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestClient, TestServer

from gateway.accesslog import AccessLog
from gateway.app import Gateway as GatewayApp
from gateway.app import open_gateway
from gateway.config import Config
from gateway.linewriter import LineWriter
from gateway.testing.echo import echo_app
from gateway.testing.fake_github import FakeGitHub
from gateway.wire import make_server

CLIENT_ID = "Iv1.8a61f9b3a7aba766"
CLIENT_SECRET = "test-secret-0123456789"
SECOND_ID, SECOND_SECRET = "Iv1.0000000000second", "second-secret-0123"


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class World:
    github: FakeGitHub
    github_url: str
    upstream_url: str
    clock: FakeClock


def base_config(world: World, **overrides: Any) -> dict[str, Any]:
    """A config dict as a user writes it, pointing at the world's fake GitHub and echo upstream."""
    up = world.upstream_url
    cfg: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 0},
        "github": {
            "api_url": world.github_url,
            "apps": [{"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}],
            "timeout": "2s",
            "retries": 0,
        },
        "cache": {"ttl": "5m", "negative_ttl": "30s"},
        "rate_limit": {"failed_auth_per_minute": 0},
        "routes": [
            {"path": "/public", "upstream": up, "auth": "none"},
            {"path": "/maybe", "upstream": up, "auth": "optional"},
            {"path": "/admin", "upstream": up, "scopes": ["admin:org"]},
            {"path": "/readorg", "upstream": up, "scopes": ["read:org"]},
            {"path": "/alice", "upstream": up, "users": ["alice"]},
            {"path": "/getonly", "upstream": up, "methods": ["GET"]},
            {"path": "/strip", "upstream": up + "/base", "strip_prefix": True},
            {"path": "/", "upstream": up},
        ],
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


@pytest.fixture
async def world(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> World:
    github = FakeGitHub({CLIENT_ID: CLIENT_SECRET, SECOND_ID: SECOND_SECRET})
    gh_server = await aiohttp_server(github.app())
    up_server = await aiohttp_server(echo_app())
    return World(
        github=github,
        github_url=str(gh_server.make_url("")).rstrip("/"),
        upstream_url=str(up_server.make_url("")).rstrip("/"),
        clock=FakeClock(),
    )


class GatewayTestServer(BaseTestServer):
    """The gateway's own server (as `gateway serve` runs it) on a local port."""

    def __init__(self, gateway: GatewayApp) -> None:
        super().__init__()
        self._gateway = gateway

    async def _make_runner(self, **kwargs: Any) -> web.ServerRunner:
        server = make_server(self._gateway.handle, self._gateway.config.server)
        return web.ServerRunner(server, **kwargs)


class Gateway:
    """A running gateway (`app`, its client) and what it logged."""

    def __init__(
        self,
        app: GatewayApp,
        client: TestClient[web.BaseRequest, None],
        log: AccessLog,
        writer: LineWriter,
        out: io.BytesIO,
    ) -> None:
        self.app = app
        self.client = client
        self._log = log
        self._writer = writer
        self._out = out

    @property
    def port(self) -> int:
        port = self.client.port
        assert port is not None
        return port

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_text().splitlines()]

    def log_text(self) -> str:
        self._log.flush()
        assert self._writer.drain(5), "the access log was not written within 5 s"
        return self._out.getvalue().decode()


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def start_gateway(
    world: World, aiohttp_client: Callable[..., Awaitable[TestClient[web.BaseRequest, None]]]
) -> AsyncIterator[GatewayFactory]:
    """Start a gateway from `base_config(world, **overrides)`; the cache runs on the world's clock."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(**overrides: Any) -> Gateway:
            config = Config.model_validate(base_config(world, **overrides))
            out = io.BytesIO()
            writer = LineWriter(out.write, name="access-log")
            log = AccessLog(writer)
            gateway = await stack.enter_async_context(open_gateway(config, access_log=log, clock=world.clock))
            return Gateway(gateway, await aiohttp_client(GatewayTestServer(gateway)), log, writer, out)

        yield start


@pytest.fixture
async def gateway(start_gateway: GatewayFactory) -> Gateway:
    return await start_gateway()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def seen_headers(echo: dict[str, Any], name: str) -> list[str]:
    """Every value the upstream saw for a header, matched the way CGI/WSGI frameworks match names."""
    fold = name.lower().replace("_", "-")
    return [v for k, v in echo["headers"] if k.lower().replace("_", "-") == fold]


async def raw_request(port: int, head: str) -> tuple[int, bytes]:
    """Send a request as raw bytes (no client-side normalisation); the status and the whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode("latin-1") + b"Connection: close\r\n\r\n")
        await writer.drain()
        answer = await reader.read()
        return int(answer.split(b" ", 2)[1]), answer
    finally:
        writer.close()
        await writer.wait_closed()


async def until_listening(url: str, running: Callable[[], bool], log: Callable[[], str]) -> None:
    """Poll a server started in another process until it answers (at most ~20 s); fail with its
    log if it exits first."""
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(url + "/", ssl=False):  # up is up, whatever the certificate
                    return
            except aiohttp.ClientConnectionError:
                assert running(), log()
                await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never answered: {log()}")


REPO = Path(__file__).resolve().parents[1]


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
