"""Rotating the identity token's signing key with SIGHUP while clients hammer `gateway serve`: the
upstream, verifying every request against the JWKS as upstreams do, refuses none (README: Verifying the
identity token, Rotating the key)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer
from joserfc.jwk import OKPKey

from gateway.testing.fake_github import FakeGitHub

from .support.headers import bearer
from .support.processes import eventually, serving
from .support.sockets import free_port
from .support.verifier import VerifyingUpstream, write_key
from .support.world import CLIENT_ID, CLIENT_SECRET

ISSUER = "https://gateway.test"
CLIENTS = 6  # requests in flight at every moment of the rotation


@contextlib.asynccontextmanager
async def hammering(url: str, token: str) -> AsyncIterator[tuple[list[int], list[str]]]:
    """Clients sending requests back to back until the block ends: the statuses they got, and the
    kid of each token the upstream verified."""
    statuses: list[int] = []
    kids: list[str] = []
    stop = asyncio.Event()

    async def client(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            async with session.get(url + "/svc", headers=bearer(token)) as resp:
                statuses.append(resp.status)
                if resp.status == 200:
                    kids.append((await resp.json())["kid"])

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        tasks = [asyncio.create_task(client(session)) for _ in range(CLIENTS)]
        try:
            yield statuses, kids
        finally:
            stop.set()
            await asyncio.gather(*tasks)


def _reload(proc: subprocess.Popen[bytes], path: Path, cfg: dict[str, Any], **token: Any) -> None:
    cfg["identity_token"] = {**cfg["identity_token"], **token}
    path.write_text(yaml.safe_dump(cfg))
    proc.send_signal(signal.SIGHUP)


async def _every_worker_lists(url: str, kid: str) -> bool:
    """Whether ten JWKS fetches on new connections (so, from any worker) all list `kid`."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        for _ in range(10):
            async with session.get(url + "/_gateway/jwks.json") as resp:
                if kid not in {k["kid"] for k in (await resp.json())["keys"]}:
                    return False
    return True


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
async def test_rotating_the_key_under_load_fails_no_verification(
    workers: int, tmp_path: Path, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    github = FakeGitHub({CLIENT_ID: CLIENT_SECRET})
    token = github.add_token("alice", 7)
    gh = await aiohttp_server(github.app())
    upstream = VerifyingUpstream(issuer=ISSUER, audience="urn:svc")
    up = await aiohttp_server(upstream.app())
    old, old_public, _ = write_key(tmp_path, "old", "ec")
    new, new_public, _ = write_key(tmp_path, "new", "ed25519")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    upstream.jwks_url = url + "/_gateway/jwks.json"
    cfg: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port, "workers": workers},
        "admin": None,
        "github": {
            "api_url": str(gh.make_url("")).rstrip("/"),
            "apps": [{"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}],
        },
        "identity_token": {"signing_key_file": str(old), "issuer": ISSUER},
        "routes": [{"path": "/", "upstream": str(up.make_url("")).rstrip("/"), "audience": "urn:svc"}],
    }
    path = tmp_path / "gateway.yaml"
    async with serving(cfg, tmp_path) as proc, hammering(url, token) as (statuses, kids):
        await eventually(lambda: len(kids) > 20, "the clients never got through")
        old_kid = kids[-1]
        if workers > 1:
            # several processes (or replicas): the new public key is published first, everywhere,
            # and signed with only then (README: Rotating the key)
            new_kid = upstream_kid_of(new_public)
            _reload(proc, path, cfg, previous_public_keys=[str(new_public)])
            await eventually(lambda: _every_worker_lists(url, new_kid), "the new key was never published")
        _reload(proc, path, cfg, signing_key_file=str(new), previous_public_keys=[str(old_public)])
        await eventually(lambda: kids[-1] != old_kid, "the new key never signed")
        rotated = len(kids)
        await eventually(lambda: len(kids) > rotated + 50, "the clients stopped getting through")

        # a token signed just before the rotation, arriving late, still verifies after the refetch
        assert (await upstream.verify(upstream.last_by_kid[old_kid]))["login"] == "alice"

    assert upstream.rejected == []
    assert set(statuses) == {200}
    assert {old_kid, kids[-1]} == set(kids) and kids[-1] == upstream_kid_of(new_public)
    assert upstream.fetches >= 2  # the JWKS was fetched again when the new kid appeared


def upstream_kid_of(public: Path) -> str:
    """The kid upstreams know a public key by (its RFC 7638 thumbprint, computed by joserfc)."""
    return OKPKey.import_key(public.read_bytes()).thumbprint()
