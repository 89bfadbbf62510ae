"""The security suite's fixtures: the gateway of tests/conftest.py in front of an upstream that records
every request it receives (tests/support/upstreams.py), a GitHub that answers whatever a test crafts
(tests/support/github.py), and the canary's ledger (tests/support/canary.py): everything each test
captured is collected, and once the session is over the canary must appear in none of it.

Every gateway the suite starts forwards to the recording upstream (the `world` fixture is narrowed here),
so a test can say what reached the service behind the gateway, not just what the caller got back.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from ..support.canary import CANARY, LEDGER
from ..support.github import CraftedGitHub
from ..support.upstreams import RecordingUpstream
from ..support.world import Gateway, GatewayFactory, World


@pytest.fixture(scope="session", autouse=True)
def _the_canary_never_leaks() -> Iterator[None]:
    """After the last test of the session, whatever the order the tests ran in: the canary token is in
    nothing the suite captured (README: Logs, issue 4)."""
    yield
    leaks = LEDGER.leaks(CANARY)
    if leaks:
        where = "\n".join(f"  {leak}" for leak in leaks)
        pytest.fail(
            f"the canary token, sent {LEDGER.uses} times, leaked (checked once the session is over, at the"
            f" teardown of whichever test ran last); it was found in what these tests captured:\n{where}",
            pytrace=False,
        )


_FORMAT = logging.Formatter("%(levelname)s %(name)s %(message)s")  # with tracebacks and stack info


@pytest.fixture(autouse=True)
def _capture_for_the_canary(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> Iterator[None]:
    """Capture every log record (DEBUG and up, aiohttp's loggers included) and all output of each test."""
    caplog.set_level(logging.DEBUG)
    for name in ("aiohttp", "asyncio", "gateway"):
        caplog.set_level(logging.DEBUG, logger=name)
    yield
    test = request.node.nodeid
    records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
    LEDGER.add(test, "log records", "\n".join(_FORMAT.format(r) for r in records))
    out, err = capsys.readouterr()
    LEDGER.add(test, "stdout", out)
    LEDGER.add(test, "stderr", err)
    sys.stdout.write(out)  # still shown when the test fails
    sys.stderr.write(err)


@pytest.fixture
async def upstream(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> RecordingUpstream:
    recorder = RecordingUpstream()
    server = await aiohttp_server(recorder.app())
    recorder.url = str(server.make_url("")).rstrip("/")
    return recorder


@pytest.fixture
async def world(world: World, upstream: RecordingUpstream) -> World:
    """The world of tests/conftest.py, with every route's upstream the recording one."""
    return dataclasses.replace(world, upstream_url=upstream.url)


@pytest.fixture
def mallory(world: World) -> str:
    """A valid token without the `admin:org` scope the /admin route requires: where it gets 403, the
    request was judged by the /admin route; where it gets 200, by another."""
    return world.github.add_token("mallory", 66, ["repo"])


@pytest.fixture
async def start_gateway(
    start_gateway: GatewayFactory, request: pytest.FixtureRequest
) -> AsyncIterator[GatewayFactory]:
    """tests/conftest.py's factory; each gateway's access log goes to the canary ledger afterwards."""
    started: list[Gateway] = []

    async def start(**overrides: Any) -> Gateway:
        gateway = await start_gateway(**overrides)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        LEDGER.add(request.node.nodeid, "access log", gateway.log_text())


@pytest.fixture
async def crafted_github(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> CraftedGitHub:
    github = CraftedGitHub(lambda token: (404, {"message": "Not Found"}))
    server = await aiohttp_server(github.app())
    github.url = str(server.make_url("")).rstrip("/")
    return github
