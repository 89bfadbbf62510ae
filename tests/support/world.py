"""The world the end-to-end tests run in: the fake GitHub and the echo upstream on real local sockets,
and the gateway built from a config written the way a user writes one (fixtures in tests/conftest.py)."""

from __future__ import annotations

import io
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestClient

from gateway.accesslog import AccessLog
from gateway.app import Gateway as GatewayApp
from gateway.linewriter import LineWriter
from gateway.listener import make_runner
from gateway.responses import refusal_response
from gateway.testing.fake_github import FakeGitHub

from .clock import FakeClock

CLIENT_ID = "Ov23liA1b2C3d4E5f6G7"  # an OAuth App: gho_ tokens with scopes, the gateway's app
CLIENT_SECRET = "test-secret-0123456789"
SECOND_ID, SECOND_SECRET = "Iv1.0000000000second", "second-secret-0123"  # a GitHub App: ghu_ tokens
SECOND_APP = {"client_id": SECOND_ID, "client_secret": SECOND_SECRET}  # as github.apps names it
BOTH_APPS = [{"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}, SECOND_APP]


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


class GatewayTestServer(BaseTestServer):
    """The gateway's own server (as `gateway serve` runs it) on a local port."""

    def __init__(self, gateway: GatewayApp, port: int | None = None) -> None:
        super().__init__(port=port)
        self._gateway = gateway

    async def _make_runner(self, **kwargs: Any) -> web.ServerRunner:
        return make_runner(
            self._gateway.handle, self._gateway.config.server, refuse=refusal_response, **kwargs
        )


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
