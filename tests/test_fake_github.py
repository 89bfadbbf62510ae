"""GitHubClient against FakeGitHub over real sockets; every answer checked against GitHub's OpenAPI."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import signal
import sys
import traceback
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gateway.config import GitHubConfig, UpstreamTokenConfig
from gateway.errors import AppCredentialsRejected, CheckMethodUnsupported, GitHubUnavailable
from gateway.github import GitHubClient
from gateway.identity import Identity
from gateway.testing.fake_github import DEMO_APP, FakeGitHub
from gateway.testing.fake_github_cli import add_arguments, run
from gateway.testing.fake_github_oauth import DEVICE_GRANT

from .support.github import CID, CID2, SECRET, SECRET2
from .support.openapi import OPENAPI, Env, Schemas, open_env
from .support.processes import REPO

pytestmark = pytest.mark.skipif(
    not OPENAPI.is_dir(),
    reason=f"GitHub's OpenAPI description is not there: {OPENAPI} (../shared/github-openapi)",
)


@pytest.fixture
async def env(aiohttp_server: Any, schemas: Schemas) -> AsyncIterator[Env]:
    async with open_env(aiohttp_server, schemas) as env:
        yield env


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------
# Check a token


async def test_valid_token(env: Env) -> None:
    token = env.fake.add_token("alice", 42, ["repo", "read:org"])
    assert await env.client().check(token) == Identity("alice", 42, ("repo", "read:org"), None, CID)
    assert env.fake.check_calls(token) == 1 and env.fake.check_calls("gho_other") == 0
    assert env.fake.calls[0].token_sha256 == sha256(token) and token not in repr(env.fake.calls)
    assert env.validated == [("apps/check-token", "request"), ("apps/check-token", 200)]


async def test_github_app_token_expires(env: Env) -> None:
    token = env.fake.add_token("monalisa", 2, client_id=CID2)
    assert token.startswith("ghu_") and len(token) == 40
    client = env.client(apps=[(CID2, SECRET2)])
    identity = await client.check(token)
    assert identity == Identity("monalisa", 2, (), env.wall.now + 8 * 3600, CID2)
    env.wall.now += 8 * 3600
    assert await client.check(token) is None
    assert ("apps/check-token", 404) in env.validated


async def test_revoked_token(env: Env) -> None:
    token = env.fake.add_token("alice", 42)
    assert env.fake.revoke(token) and not env.fake.revoke("gho_never_issued")
    assert await env.client().check(token) is None


async def test_another_apps_token(env: Env) -> None:
    token = env.fake.add_token("bob", 7, client_id=CID2)
    assert await env.client().check(token) is None
    identity = await env.client(apps=[(CID, SECRET), (CID2, SECRET2)]).check(token)
    assert identity is not None and identity.client_id == CID2


async def test_unknown_app_is_404(env: Env) -> None:
    token = env.fake.add_token("alice", 42)
    assert await env.client(apps=[("Iv1.unknown", "whatever")]).check(token) is None


async def test_wrong_secret(env: Env) -> None:
    token = env.fake.add_token("alice", 42)
    with pytest.raises(AppCredentialsRejected, match=CID) as caught:
        await env.client(apps=[(CID, "wrong")]).check(token)
    assert token not in "".join(traceback.format_exception(caught.value))
    assert env.validated[-1] == ("apps/check-token", 401)


@pytest.mark.parametrize("prefix", ["", "/api/v3"])
async def test_legacy_path_on_an_old_ghes(env: Env, prefix: str) -> None:
    env.fake.legacy_paths = True
    token = env.fake.add_token("alice", 42, ["repo"], token="gho_ab/cd+ef=gh")  # b64token characters
    identity = await env.client(prefix=prefix, check_method="legacy").check(token)
    assert identity == Identity("alice", 42, ("repo",), None, CID)
    assert env.fake.check_calls(token) == 1
    assert env.validated == [("apps/check-authorization", "request"), ("apps/check-authorization", 200)]


@pytest.mark.parametrize("prefix", ["", "/api/v3"])
async def test_legacy_path_removed(env: Env, prefix: str) -> None:
    token = env.fake.add_token("alice", 42)
    legacy = env.client(prefix=prefix, check_method="legacy")
    assert await legacy.check("gho_never_issued") is None  # unknown with either form: just invalid
    with pytest.raises(CheckMethodUnsupported):  # valid with the body form: the config is wrong
        await legacy.check(token)
    assert env.validated == [
        ("apps/check-authorization", "request"),
        ("apps/check-authorization", 404),
        ("apps/check-token", "request"),
        ("apps/check-token", 404),
        ("apps/check-authorization", "request"),
        ("apps/check-authorization", 404),
        ("apps/check-token", "request"),
        ("apps/check-token", 200),
    ]


# ---------------------------------------------------------------------------------------------------
# Switches


async def test_latency(env: Env) -> None:
    token = env.fake.add_token("alice", 42)
    env.fake.latency = 0.05
    assert await env.client().check(token) is not None
    env.fake.latency = 0.5
    with pytest.raises(GitHubUnavailable, match=r"did not answer within 0\.1s"):
        await env.client(timeout=0.1).check(token)


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_outage_5xx(env: Env, status: int) -> None:
    token = env.fake.add_token("alice", 42)
    env.fake.outage = status
    client = env.client(retries=1)
    with pytest.raises(GitHubUnavailable) as caught:
        await client.check(token)
    assert caught.value.status == status and env.fake.check_calls(token) == 2
    with pytest.raises(GitHubUnavailable, match="backed off"):
        await client.check(token)
    assert env.fake.check_calls(token) == 2


async def test_outage_422(env: Env) -> None:
    token = env.fake.add_token("alice", 42)
    env.fake.outage = 422
    with pytest.raises(GitHubUnavailable) as caught:
        await env.client(retries=3).check(token)
    assert caught.value.status == 422 and env.fake.check_calls() == 1
    assert isinstance(caught.value.details, dict) and caught.value.details["message"] == "Validation Failed"
    assert ("apps/check-token", 422) in env.validated


async def test_hang_times_out_without_leaking_the_token(env: Env) -> None:
    env.fake.legacy_paths = True
    token = env.fake.add_token("alice", 42, token="gho_hangs0000000000000000000000000000000")
    env.fake.hang = True
    with pytest.raises(GitHubUnavailable, match="did not answer") as caught:
        await env.client(timeout=0.1, check_method="legacy").check(token)
    assert token not in "".join(traceback.format_exception(caught.value))


async def test_hang_released(env: Env) -> None:
    token = env.fake.add_token("alice", 42)
    env.fake.hang = True
    task = asyncio.create_task(env.client().check(token))
    async with asyncio.timeout(5):
        await env.fake.wait_for_calls(1)  # the call is held at the fake
    assert not task.done()
    env.fake.hang = False
    assert (await task) is not None


# ---------------------------------------------------------------------------------------------------
# Requests our client never sends: GitHub's error shapes


async def post(env: Env, path: str, *, auth: tuple[str, str] | None = (CID, SECRET), **kw: Any) -> Any:
    headers = {} if auth is None else {"Authorization": aiohttp.encode_basic_auth(*auth)}
    async with env.session.post(env.url + path, headers=headers, **kw) as resp:
        return resp.status, await resp.json()


async def test_missing_access_token_is_422(env: Env) -> None:
    status, body = await post(env, f"/applications/{CID}/token", json={"token": "gho_x"})
    assert status == 422 and body["errors"][0]["field"] == "access_token"
    status, _ = await post(env, f"/api/v3/applications/{CID}/token", json={"access_token": ""})
    assert status == 422
    assert env.validated == [("apps/check-token", 422)] * 2


async def test_bad_json_missing_credentials_and_unknown_paths(env: Env) -> None:
    assert (await post(env, f"/applications/{CID}/token", data=b"{"))[0] == 400
    assert (await post(env, f"/applications/{CID}/token", auth=None, json={"access_token": "x"}))[0] == 401
    assert (await post(env, f"/applications/{CID}/token", auth=(CID2, SECRET2), json={"access_token": "x"}))[
        0
    ] == 401
    assert (await post(env, "/applications/x/token/nope", json={}))[0] == 404
    assert [status for _, status in env.validated] == [400, 401, 401, 404]


def test_registry_refuses_unknown_apps_and_duplicates() -> None:
    fake = FakeGitHub({CID: SECRET})
    with pytest.raises(ValueError, match="unknown app"):
        fake.add_token("alice", 1, client_id=CID2)
    fake.add_token("alice", 1, token="gho_same")
    with pytest.raises(ValueError, match="already"):
        fake.add_token("bob", 2, token="gho_same")
    assert "gho_same" not in repr(fake)


# ---------------------------------------------------------------------------------------------------
# `gateway fake-github`


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_defaults() -> None:
    args = parse()
    assert (args.host, args.port, args.apps, args.tokens, args.legacy_paths, args.latency) == (
        "127.0.0.1",
        9100,
        None,
        None,
        False,
        0.0,
    )
    assert (args.app_tokens, args.accounts, args.orgs, args.teams) == (None, None, None, None)
    assert parse("--app", "Iv1.x:s:with:colons").apps == [("Iv1.x", "s:with:colons")]


def test_cli_refuses_a_bad_token_spec(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(parse("--token", "alice:notanumber:repo")) == 2
    assert run(parse("--token", "alice:1:repo:Iv1.unknown")) == 2
    assert "LOGIN:ID:SCOPES" in capsys.readouterr().err
    assert run(parse("--app-token", "carol:x")) == 2
    assert run(parse("--app-token", "carol:3:Iv1.unknown")) == 2
    assert "LOGIN:ID[:CLIENT_ID]" in capsys.readouterr().err
    assert run(parse("--account", "octo-org:0")) == 2
    assert run(parse("--account", "octo-org:100", "--account", "octo-org:101")) == 2
    assert "--account" in capsys.readouterr().err
    assert run(parse("--org", "acme:nobody")) == 2
    assert "unknown user 'nobody'" in capsys.readouterr().err
    assert run(parse("--team", "acme")) == 2
    assert "ORG/SLUG[:LOGIN,...]" in capsys.readouterr().err
    assert run(parse("--team", "acme/sre")) == 2  # no such organisation


@contextlib.asynccontextmanager
async def serving(argv: list[str]) -> AsyncIterator[list[str]]:
    """`gateway fake-github ARGV` in a process of its own: the lines it prints before serving; it must
    stop on SIGTERM with status 0."""
    code = (
        "import argparse, sys; from gateway.testing.fake_github_cli import add_arguments, run\n"
        "p = argparse.ArgumentParser(); add_arguments(p); sys.exit(run(p.parse_args(sys.argv[1:])))"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, *argv, cwd=REPO, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    try:
        lines = []
        async with asyncio.timeout(10):
            while not (line := (await proc.stdout.readline()).decode()).startswith("stop it"):
                assert line, "the fake exited before serving"
                lines.append(line)
        yield lines
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await proc.wait() == 0


async def test_cli_serves_until_sigterm() -> None:
    argv = ["--port", "0", "--token", "alice:1:repo,read:org", "--app-token", f"bob:2:{CID2}"]
    argv += ["--app", f"{CID}:{SECRET}", "--app", f"{CID2}:{SECRET2}", "--legacy-paths"]
    argv += ["--app-token", "carol:3", "--account", "octo-org:100:api,web"]
    argv += ["--org", "acme:alice,carol", "--team", "acme/sre:alice"]
    async with serving(argv) as lines:
        url = lines[0].split()[4]
        tokens = {line.split()[2]: line.split()[-1] for line in lines if line.startswith("  token for")}
        async with aiohttp.ClientSession() as session:
            data = {
                "api_url": url,
                "apps": [{"client_id": c, "client_secret": s} for c, s in [(CID, SECRET)]],
            }
            alice = await GitHubClient(GitHubConfig.model_validate(data), session).check(tokens["alice"])
            data["apps"] = [{"client_id": CID2, "client_secret": SECRET2}]
            second = GitHubClient(GitHubConfig.model_validate(data), session)
            bob = await second.check(tokens["bob"])
            carol = await second.scoped(
                tokens["carol"], UpstreamTokenConfig(target="octo-org", repositories=("web",))
            )
            as_alice = {"Authorization": f"Bearer {tokens['alice']}"}
            async with session.get(f"{url}/user/memberships/orgs/acme", headers=as_alice) as member:
                assert (await member.json())["state"] == "active"
            async with session.get(f"{url}/orgs/acme/teams/sre/memberships/alice", headers=as_alice) as team:
                assert (await team.json())["state"] == "active"
        assert alice == Identity("alice", 1, ("repo", "read:org"), None, CID)
        assert bob is not None and (bob.scopes, bob.client_id) == ((), CID2)
        assert bob.expires_at is not None  # a GitHub App user token's 8 hours
        assert carol is not None and carol.identity.login == "carol" and carol.repositories == ("web",)
        assert carol.identity.expires_at is not None  # a GitHub App user token's 8 hours
        assert f"  app {CID} (OAuth App)\n" in lines and f"  app {CID2} (GitHub App)\n" in lines
        assert f"  web flows at {url}/login/device and {url}/login/oauth/authorize\n" in lines
        assert "  account octo-org (id 100, repositories: api, web)\n" in lines
        assert "  organisation acme (members: alice, carol)\n" in lines
        assert "  team acme/sre (members: alice)\n" in lines


def test_cli_flow_options() -> None:
    args = parse("--device-interval", "0", "--auto-approve", "alice", "--signed-in", "bob")
    assert (args.device_interval, args.auto_approve, args.signed_in) == (0, "alice", "bob")
    args = parse("--callback-url", f"{CID}=http://127.0.0.1/cb", "--no-device-flow", CID, "--user", "bob:2")
    assert (args.callback_urls, args.no_device_flow, args.users) == (
        [(CID, "http://127.0.0.1/cb")],
        [CID],
        ["bob:2"],
    )
    assert parse().device_interval == 5


def test_cli_refuses_flow_options_naming_the_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(parse("--auto-approve", "nobody")) == 2
    assert "--auto-approve: unknown user 'nobody'" in capsys.readouterr().err
    assert run(parse("--user", "alice:1", "--signed-in", "bob")) == 2
    assert run(parse("--callback-url", "Iv1.unknown=http://x/cb")) == 2
    assert "unknown app 'Iv1.unknown'" in capsys.readouterr().err
    assert run(parse("--token", f"alice:1:repo:{DEMO_APP[0]}")) == 2  # a GitHub App issues no gho_
    assert "--app-token issues its tokens" in capsys.readouterr().err


async def test_cli_serves_the_device_flow_with_auto_approve() -> None:
    argv = ["--port", "0", "--user", "alice:1", "--auto-approve", "alice", "--device-interval", "0"]
    async with serving(argv) as lines:
        url = lines[0].split()[4]
        assert "  device interval 0s; auto-approve: alice\n" in lines
        headers = {"Accept": "application/json"}
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{url}/login/device/code", data={"client_id": DEMO_APP[0]}, headers=headers
            ) as resp:
                device = await resp.json()
            assert device["interval"] == 0 and device["verification_uri"] == f"{url}/login/device"
            grant = {
                "client_id": DEMO_APP[0],
                "device_code": device["device_code"],
                "grant_type": DEVICE_GRANT,
            }
            async with session.post(f"{url}/login/oauth/access_token", data=grant, headers=headers) as resp:
                token = await resp.json()
    assert token["access_token"].startswith("ghu_") and token["refresh_token"].startswith("ghr_")


def test_demo_app_default() -> None:
    assert DEMO_APP == ("Iv1.demo0000000000", "demo-secret")
