"""Fixtures: the world the end-to-end tests run in (tests/support/world.py), the fake GitHub and the echo
upstream on real local sockets, and gateways built from a config written the way a user writes one; the
GitHub client against scripted answers."""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aioresponses import aioresponses

from gateway.accesslog import AccessLog
from gateway.app import open_gateway
from gateway.config import Config
from gateway.github import GitHubClient
from gateway.linewriter import LineWriter
from gateway.testing.echo import echo_app
from gateway.testing.fake_github import FakeGitHub

from .support.clock import FakeClock
from .support.github import Answered, Mocked, config
from .support.openapi import Schemas
from .support.world import (
    CLIENT_ID,
    CLIENT_SECRET,
    SECOND_ID,
    SECOND_SECRET,
    Gateway,
    GatewayFactory,
    GatewayTestServer,
    World,
    base_config,
)


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


@pytest.fixture
async def start_gateway(
    world: World, aiohttp_client: Callable[..., Awaitable[TestClient[web.BaseRequest, None]]]
) -> AsyncIterator[GatewayFactory]:
    """Start a gateway from `base_config(world, **overrides)`, on `port` if given (a config that names
    its own URL, such as server.public_url, needs it known first); the cache runs on the world's clock."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(port: int | None = None, **overrides: Any) -> Gateway:
            config = Config.model_validate(base_config(world, **overrides))
            out = io.BytesIO()
            writer = LineWriter(out.write, name="access-log")
            log = AccessLog(writer)
            gateway = await stack.enter_async_context(open_gateway(config, access_log=log, clock=world.clock))
            return Gateway(gateway, await aiohttp_client(GatewayTestServer(gateway, port)), log, writer, out)

        yield start


@pytest.fixture
async def gateway(start_gateway: GatewayFactory) -> Gateway:
    return await start_gateway()


# ---------------------------------------------------------------------------------------------------
# The GitHub client against scripted answers (tests/test_github.py, tests/test_github_ops.py)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def mocked() -> Iterator[aioresponses]:
    with Mocked() as m:
        yield m


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def answered() -> Answered:
    return Answered()


@pytest.fixture
def make(session: aiohttp.ClientSession, sleeps: list[float], answered: Answered) -> Any:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    def make(clock: FakeClock | None = None, observer: Any = None, **overrides: Any) -> GitHubClient:
        return GitHubClient(
            config(**overrides),
            session,
            clock=clock or FakeClock(),
            sleep=sleep,
            observer=observer,
            answered=answered,
        )

    return make


# ---------------------------------------------------------------------------------------------------
# FakeGitHub against GitHub's OpenAPI description (tests/test_fake_github.py, tests/test_fake_github_ops.py)


@pytest.fixture(scope="session")
def schemas() -> Schemas:
    return Schemas()
