"""`cache.redis_url`: one identity cache for every worker and replica, and logouts carried to all of
them, against a real redis-server (README: Sharing the cache)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import redis.asyncio as redis
import yaml

from gateway.config import CacheConfig, Config
from gateway.errors import GitHubUnavailable
from gateway.identity import Identity, token_digest
from gateway.identity.cache import IdentityCache
from gateway.identity.redis import MAX_CONNECTIONS, RedisTier

from .support.clock import FakeClock
from .support.headers import bearer, status_of
from .support.processes import REPO, children, eventually, until_listening
from .support.sockets import free_port
from .support.world import (
    BOTH_APPS,
    CLIENT_ID,
    SECOND_ID,
    SECOND_SECRET,
    Gateway,
    GatewayFactory,
    World,
    base_config,
)

REDIS_SERVER = shutil.which("redis-server") or next(
    (p for p in ("/usr/bin/redis-server",) if Path(p).exists()), None
)
pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server is not installed (make test installs it)"
)


class RedisServer:
    """A throwaway redis-server on a free loopback port, no persistence; it can be stopped and
    started again on the same port (an outage)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._workdir = workdir
        self._proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        assert REDIS_SERVER is not None
        self._proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self._workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        proc, client = self._proc, self.client()

        async def answers() -> bool:
            with contextlib.suppress(redis.ConnectionError):
                return bool(await client.ping())
            assert proc.poll() is None, "redis-server exited"
            return False

        try:
            await eventually(answers, "redis-server never answered", within=10)
        finally:
            await client.aclose()

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(10)
            self._proc = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    async def everything(self) -> dict[bytes, bytes]:
        """Every key in Redis, with its value."""
        client = self.client()
        try:
            stored = {}
            async for key in client.scan_iter():
                value = await client.get(key)
                assert isinstance(key, bytes) and isinstance(value, bytes)
                stored[key] = value
            return stored
        finally:
            await client.aclose()


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def replicas(start_gateway: GatewayFactory, redis_server: RedisServer) -> tuple[Gateway, Gateway]:
    """Two gateways sharing one Redis, the way two replicas behind a load balancer do."""
    return (
        await start_gateway(cache={"redis_url": redis_server.url}),
        await start_gateway(cache={"redis_url": redis_server.url}),
    )


async def status(gateway: Gateway, token: str, path: str = "/svc") -> int:
    async with gateway.client.get(path, headers=bearer(token)) as resp:
        return resp.status


def evictions(gateway: Gateway) -> asyncio.Event:
    """An event set when the gateway evicts a token it heard revoked on the channel."""
    event = asyncio.Event()
    cache = gateway.app.cache
    evict = cache.evict

    def evicting(digest: bytes) -> None:
        evict(digest)
        event.set()

    cache.evict = evicting  # type: ignore[method-assign]
    return event


async def test_a_token_checked_by_one_replica_is_known_to_the_other(
    replicas: tuple[Gateway, Gateway], world: World
) -> None:
    a, b = replicas
    token = world.github.add_token("alice", 7, ["repo"])
    assert await status(a, token) == 200
    async with b.client.get("/svc", headers=bearer(token)) as resp:
        assert resp.status == 200
        echo = await resp.json()
    assert dict(echo["headers"])["X-Auth-User"] == "alice"
    assert world.github.check_calls(token) == 1


async def test_a_herd_across_replicas_makes_one_check_call(
    replicas: tuple[Gateway, Gateway], world: World
) -> None:
    a, b = replicas
    token = world.github.add_token("alice", 7)
    world.github.hang = True  # GitHub holds the first check until both replicas have a herd waiting
    herd = [asyncio.create_task(status(gateway, token)) for gateway in (a, b) for _ in range(20)]
    await world.github.wait_for_calls(1)
    done, _ = await asyncio.wait(herd, timeout=0.3)  # B polls Redis meanwhile: it asks no one else
    assert not done
    world.github.hang = False
    assert await asyncio.gather(*herd) == [200] * 40
    assert world.github.check_calls(token) == 1


async def test_a_replica_waiting_on_another_asks_github_itself_when_that_one_fails(
    start_gateway: GatewayFactory, world: World, redis_server: RedisServer
) -> None:
    # A has the app's secret wrong: GitHub answers its check 401, so A has nothing to share
    wrong = {"apps": [{"client_id": CLIENT_ID, "client_secret": "not-the-secret"}]}
    a = await start_gateway(cache={"redis_url": redis_server.url}, github=wrong)
    b = await start_gateway(cache={"redis_url": redis_server.url})
    token = world.github.add_token("alice", 7)
    world.github.hang = True
    first = asyncio.create_task(status(a, token))
    await world.github.wait_for_calls(1)
    second = asyncio.create_task(status(b, token))
    done, _ = await asyncio.wait([second], timeout=0.3)
    assert not done and len(world.github.calls) == 1  # B waits for A's answer instead of asking
    world.github.hang = False
    assert await first == 503
    assert await second == 200  # A gave up its claim: B asked GitHub itself
    assert world.github.check_calls(token) == 2


async def test_an_invalid_token_is_remembered_for_every_replica(
    replicas: tuple[Gateway, Gateway], world: World
) -> None:
    a, b = replicas
    assert await status(a, "gho_notatoken") == 401
    assert await status(b, "gho_notatoken") == 401
    assert world.github.check_calls() == 1


async def test_logout_on_one_replica_is_refused_at_once_on_the_other(
    replicas: tuple[Gateway, Gateway], world: World
) -> None:
    a, b = replicas
    token = world.github.add_token("alice", 7, ["repo"])
    assert await status(a, token) == 200 and await status(b, token) == 200  # cached in both processes
    revoked = evictions(b)
    async with a.client.post("/_gateway/logout", headers=bearer(token)) as resp:
        assert resp.status == 200
    await asyncio.wait_for(revoked.wait(), 10)
    assert await status(b, token) == 401
    assert await status(a, token) == 401


async def test_logout_revokes_the_scoped_tokens_every_replica_minted(
    start_gateway: GatewayFactory, world: World, redis_server: RedisServer
) -> None:
    world.github.add_account("octo-org", 100, ["api"])
    spec = {"target": "octo-org", "repositories": ["api"], "permissions": {"contents": "read"}}
    routes = [{"path": "/", "upstream": world.upstream_url, "upstream_token": spec}]
    a = await start_gateway(cache={"redis_url": redis_server.url}, routes=routes, github={"apps": BOTH_APPS})
    b = await start_gateway(cache={"redis_url": redis_server.url}, routes=routes, github={"apps": BOTH_APPS})
    token = world.github.add_token("monalisa", 2, client_id=SECOND_ID)
    async with b.client.get("/svc", headers=bearer(token)) as resp:
        scoped = dict((await resp.json())["headers"])["Authorization"].removeprefix("Bearer ")
    assert world.github.live(scoped, SECOND_ID) is not None
    async with a.client.post("/_gateway/logout", headers=bearer(token)) as resp:
        assert resp.status == 200
    # B hears of it over Redis, then revokes at GitHub the scoped token it minted
    async with asyncio.timeout(10):
        while world.github.live(scoped, SECOND_ID) is not None:
            await world.github.wait_for_calls(len(world.github.calls) + 1)
    assert world.github.live(scoped, SECOND_ID) is None


async def test_a_replica_that_lost_redis_forgets_what_it_may_have_missed(
    replicas: tuple[Gateway, Gateway],
    world: World,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b = replicas
    token = world.github.add_token("alice", 7, ["repo"])
    assert await status(b, token) == 200
    redis_server.stop()
    # Redis is down: the logout revokes at GitHub and evicts on A, but cannot reach B
    async with a.client.post("/_gateway/logout", headers=bearer(token)) as resp:
        assert resp.status == 200
    assert "hear of it once Redis answers again" in caplog.text
    await redis_server.start()
    # B resubscribes (after its reconnect backoff), forgets its memory and asks GitHub again

    async def refused() -> bool:
        return await status(b, token) == 401

    await eventually(refused, "B still trusts what it remembered")


async def test_a_logout_redis_refused_reaches_the_other_replicas_once_it_accepts_again(
    replicas: tuple[Gateway, Gateway], world: World, redis_server: RedisServer
) -> None:
    a, b = replicas
    token = world.github.add_token("alice", 7, ["repo"])
    assert await status(a, token) == 200 and await status(b, token) == 200
    admin = redis_server.client()
    try:
        await admin.config_set("min-replicas-to-write", 1)  # no replica: every write is refused
        async with a.client.post("/_gateway/logout", headers=bearer(token)) as resp:
            assert resp.status == 200  # revoked at GitHub; Redis (and so B) not told
        assert await status(b, token) == 200
        revoked = evictions(b)
        await admin.config_set("min-replicas-to-write", 0)
    finally:
        await admin.aclose()
    await asyncio.wait_for(revoked.wait(), 10)  # A delivers it again once Redis takes writes
    assert await status(b, token) == 401


async def test_without_redis_the_gateway_serves_from_github_and_says_so_once(
    start_gateway: GatewayFactory, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://:redis-password-0123@127.0.0.1:{free_port()}/0"  # nothing listens there
    gateway = await start_gateway(cache={"redis_url": url})
    tokens = [world.github.add_token(f"user{i}", i) for i in range(1, 6)]
    for token in tokens:
        assert await status(gateway, token) == 200
        assert await status(gateway, token) == 200
    assert world.github.check_calls() == 5  # the in-process tier still works
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "gateway.redis" and "unavailable" in r.getMessage()
    ]
    assert len(warnings) == 1
    assert "redis-password-0123" not in caplog.text


async def test_redis_holds_identities_by_digest_and_never_a_token(
    replicas: tuple[Gateway, Gateway], world: World, redis_server: RedisServer
) -> None:
    a, b = replicas
    good = world.github.add_token("alice", 7, ["repo", "read:org"])
    bye = world.github.add_token("bob", 8)
    assert await status(a, good) == 200 and await status(a, bye) == 200
    assert await status(b, "gho_notatoken") == 401
    async with b.client.post("/_gateway/logout", headers=bearer(bye)) as resp:
        assert resp.status == 200
    stored = await redis_server.everything()
    assert len(stored) == 3
    dump = b"\n".join(k + b" " + v for k, v in stored.items())
    for token in (good, bye, "gho_notatoken"):
        assert token.encode() not in dump
        assert any(k.endswith(token_digest(token).hex().encode()) for k in stored)
    alice = json.loads(next(v for k, v in stored.items() if k.endswith(token_digest(good).hex().encode())))
    assert (alice["login"], alice["id"], alice["scopes"]) == ("alice", 7, ["repo", "read:org"])


async def test_a_flood_of_new_tokens_shares_a_bounded_number_of_redis_connections(
    start_gateway: GatewayFactory, world: World, redis_server: RedisServer
) -> None:
    gateway = await start_gateway(cache={"redis_url": redis_server.url})
    tokens = [world.github.add_token(f"user{i}", i) for i in range(1, 301)]
    statuses = await asyncio.gather(*(status(gateway, token) for token in tokens))
    assert statuses == [200] * len(tokens)
    client = redis_server.client()
    try:
        info = await client.info("clients")
    finally:
        await client.aclose()
    assert info["connected_clients"] <= MAX_CONNECTIONS + 1  # and this one


async def test_gateways_with_other_apps_do_not_share_identities(
    start_gateway: GatewayFactory, world: World, redis_server: RedisServer
) -> None:
    ours = await start_gateway(cache={"redis_url": redis_server.url})
    theirs = await start_gateway(
        cache={"redis_url": redis_server.url},
        github={"apps": [{"client_id": SECOND_ID, "client_secret": SECOND_SECRET}]},
    )
    token = world.github.add_token("alice", 7)  # issued by CLIENT_ID's app
    assert await status(ours, token) == 200
    assert await status(theirs, token) == 401  # their app does not know it; our answer is not theirs


# --- the tier under the cache, on a clock the test moves -----------------------------------------


@pytest.fixture
async def tier(redis_server: RedisServer, world: World) -> AsyncIterator[tuple[RedisTier, FakeClock]]:
    wall = FakeClock()
    config = Config.model_validate(base_config(world))
    shared = RedisTier(redis_server.url, config.github, config.cache, wall_clock=wall)
    try:
        yield shared, wall
    finally:
        await shared.close()


class Checker:
    def __init__(self, answer: Identity | None) -> None:
        self.answer = answer
        self.calls = 0
        self.down = False

    async def check(self, token: str) -> Identity | None:
        self.calls += 1
        if self.down:
            raise GitHubUnavailable("down")
        return self.answer


def cache_over(shared: RedisTier, checker: Checker, wall: FakeClock, **config: Any) -> IdentityCache:
    return IdentityCache(CacheConfig(**config), checker, shared=shared, clock=wall, wall_clock=wall)


ALICE = Identity("alice", 7, ("repo",), None, CLIENT_ID)


def forged(**fields: object) -> bytes:
    """An entry as this gateway writes one, fresh, with some fields replaced."""
    entry = {"fresh_until": 1e12, "keep_until": 1e12, **ALICE.as_json(), **fields}
    return json.dumps(entry).encode()


async def test_a_replica_serves_a_stale_shared_identity_only_while_github_is_down(
    tier: tuple[RedisTier, FakeClock],
) -> None:
    shared, wall = tier
    checker = Checker(ALICE)
    digest = token_digest("t")
    filler = cache_over(shared, checker, wall, ttl=60, stale_if_error=600)
    assert await filler.lookup("t", digest) == ALICE
    wall.advance(120)  # past ttl, within stale_if_error
    checker.down = True
    fresh_replica = cache_over(shared, checker, wall, ttl=60, stale_if_error=600)
    assert await fresh_replica.lookup("t", digest) == ALICE
    wall.advance(600)
    with pytest.raises(GitHubUnavailable):
        await cache_over(shared, checker, wall, ttl=60, stale_if_error=600).lookup("t", digest)


async def test_a_shared_entry_never_outlives_the_token(
    tier: tuple[RedisTier, FakeClock], redis_server: RedisServer
) -> None:
    shared, wall = tier
    expiring = Identity("alice", 7, (), wall.now + 30, CLIENT_ID)
    checker = Checker(expiring)
    await cache_over(shared, checker, wall, ttl=300).lookup("t", token_digest("t"))
    client = redis_server.client()
    try:
        (key,) = [k async for k in client.scan_iter()]
        assert 0 < await client.pttl(key) <= 30_000
    finally:
        await client.aclose()
    wall.advance(31)
    checker.answer = None
    assert await cache_over(shared, checker, wall, ttl=300).lookup("t", token_digest("t")) is None
    assert checker.calls == 2


@pytest.mark.parametrize(
    "garbage",
    [
        b"not json",
        b"[]",
        b'{"fresh_until": 1e12, "keep_until": 1e12, "login": 5}',
        forged(login="alice\r\nX-Auth-User: root"),  # would be an identity header's value
        forged(client_id="Iv1.someone-elses"),  # an app this gateway does not have
        forged(id=-1),
        forged(scopes=["repo", "a b"]),
    ],
    ids=["not-json", "list", "login-not-a-string", "crlf-login", "other-app", "negative-id", "bad-scope"],
)
async def test_an_entry_the_gateway_did_not_write_is_ignored(
    tier: tuple[RedisTier, FakeClock], redis_server: RedisServer, garbage: bytes
) -> None:
    shared, wall = tier
    checker = Checker(ALICE)
    await cache_over(shared, checker, wall).lookup("t", token_digest("t"))
    client = redis_server.client()
    try:
        (key,) = [k async for k in client.scan_iter()]
        await client.set(key, garbage)
    finally:
        await client.aclose()
    assert await cache_over(shared, checker, wall).lookup("t", token_digest("t")) == ALICE
    assert checker.calls == 2


# --- `gateway serve` with workers: the processes share what they learn ---------------------------


@pytest.fixture
async def two_workers(
    tmp_path: Path, world: World, redis_server: RedisServer
) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    cfg = base_config(world, server={"host": "127.0.0.1", "port": port, "workers": 2})
    cfg["cache"]["redis_url"] = redis_server.url
    cfg["admin"] = None
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    log = tmp_path / "stderr.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "-c", str(path)],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        await until_listening(url, lambda: proc.poll() is None, log.read_text)
        await eventually(lambda: len(children(proc.pid)) == 2, "two workers")
        yield url, proc
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 20)


async def test_workers_share_one_check_and_one_logout(
    two_workers: tuple[str, subprocess.Popen[bytes]], world: World
) -> None:
    url, _ = two_workers
    token = world.github.add_token("alice", 7)
    # a new connection per request, so both workers take some
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:

        async def statuses() -> list[int]:
            return [await status_of(url + "/svc", token, session=session) for _ in range(20)]

        assert await statuses() == [200] * 20
        assert world.github.check_calls(token) == 1
        async with session.post(url + "/_gateway/logout", headers=bearer(token)) as resp:
            assert resp.status == 200
        # the other worker hears of it over pub/sub, a moment later

        async def all_refused() -> bool:
            return await statuses() == [401] * 20

        await eventually(all_refused, "a worker still lets the token through", within=10)
    assert world.github.check_calls(token) == 1


async def test_two_replicas_on_one_redis_share_membership_facts(
    start_gateway: GatewayFactory, world: World, redis_server: RedisServer
) -> None:
    """One call per fact across replicas, and what one learnt the other believes for as long."""
    world.github.add_org("acme")
    world.github.add_user("alice", 7)
    world.github.add_member("acme", "alice")
    routes = [{"path": "/gated", "upstream": world.upstream_url, "orgs": ["acme"]}]
    shared = {
        "cache": {"redis_url": redis_server.url},
        "routes": routes,
        "identity_headers": {"groups": None},
    }
    a, b = await start_gateway(**shared), await start_gateway(**shared)
    alice = world.github.add_token("alice", 7, ["read:org"])
    assert await status(a, alice, "/gated") == 200
    assert await status(b, alice, "/gated") == 200
    assert world.github.count("orgs/get-membership-for-authenticated-user") == 1


async def test_a_fact_in_redis_that_the_gateway_did_not_write_is_not_believed(
    start_gateway: GatewayFactory, world: World, redis_server: RedisServer
) -> None:
    """Whoever can write to Redis must not make a user a member with an entry of their own."""
    world.github.add_org("acme")
    world.github.add_user("bob", 8)
    routes = [{"path": "/gated", "upstream": world.upstream_url, "orgs": ["acme"]}]
    shared = {
        "cache": {"redis_url": redis_server.url},
        "routes": routes,
        "identity_headers": {"groups": None},
    }
    bob = world.github.add_token("bob", 8, ["read:org"])
    assert await status(await start_gateway(**shared), bob, "/gated") == 403  # "no", shared in Redis
    client = aioredis.from_url(redis_server.url)
    try:
        [key] = [k async for k in client.scan_iter("*:fact:8:org:acme")]
        await client.set(key, b'{"value": "yes", "sso_url": null, "fresh_until": 9999999999}')
    finally:
        await client.aclose()
    assert await status(await start_gateway(**shared), bob, "/gated") == 403  # a replica that never asked
    assert world.github.count("orgs/get-membership-for-authenticated-user") == 2
