"""`gateway auth login|token|status|logout` (DESIGN §12) against the fake GitHub and a real gateway on
local sockets: the CLI as a real subprocess (`python -m gateway auth …`), or its `main` in-process
where a test needs to hold its clock."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import json
import os
import re
import stat
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway import auth_cli
from gateway.credentials import normal_url
from gateway.errors import GitHubUnavailable, GrantRefused
from gateway.github.web import device_code, next_interval
from gateway.testing.fake_github import FakeGitHub

from .support.clock import FakeClock
from .support.processes import REPO, eventually
from .support.sockets import free_port
from .support.world import CLIENT_ID, CLIENT_SECRET, SECOND_APP, SECOND_ID, Gateway, GatewayFactory, World

GITHUB_APP_FIRST = {"apps": [SECOND_APP, {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}]}
A_TOKEN = re.compile(r"gh[opusr]_[A-Za-z0-9]")  # any token GitHub (or the fake) issues


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def shows_no_token(self) -> bool:
        return A_TOKEN.search(self.out + self.err) is None


@dataclass
class User:
    """A person at a terminal: their credentials file and the gateway they use."""

    home: Path
    url: str

    @property
    def file(self) -> Path:
        return self.home / "gateway" / "credentials.json"

    def entries(self) -> dict[str, Any]:
        gateways: dict[str, Any] = json.loads(self.file.read_text())["gateways"]
        return gateways

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != auth_cli.GATEWAY_ENV}
        return {**env, "XDG_CONFIG_HOME": str(self.home)}

    async def start(self, *args: str, gateway: str | None = None) -> asyncio.subprocess.Process:
        """`python -m gateway auth ARGS --gateway URL` in a subprocess, running."""
        return await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "gateway", "auth", *args, "--gateway", gateway or self.url),
            cwd=REPO,
            env=self.env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

    async def run(self, *args: str, gateway: str | None = None) -> Ran:
        return await finished(await self.start(*args, gateway=gateway))

    async def run_here(
        self,
        *argv: str,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> Ran:
        """`gateway auth ARGV` in this process (its clock and sleep held by the test)."""
        parser = argparse.ArgumentParser()
        auth_cli.add_arguments(parser)
        out, err = io.StringIO(), io.StringIO()
        terminal = auth_cli.Terminal(out, err, {"XDG_CONFIG_HOME": str(self.home)}, sleep=sleep, clock=clock)
        code = await auth_cli.main(parser.parse_args(argv), terminal)
        return Ran(code, out.getvalue(), err.getvalue())


async def finished(proc: asyncio.subprocess.Process) -> Ran:
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


def url_of(gateway: Gateway) -> str:
    return f"http://127.0.0.1:{gateway.port}"


@pytest.fixture
def github(world: World) -> FakeGitHub:
    """The world's fake GitHub, whose people approve a device code at once, polled without waiting."""
    world.github.add_user("alice", 7)
    world.github.flows.interval = 0
    world.github.flows.auto_approve = "alice"
    return world.github


@pytest.fixture
async def gateway(github: FakeGitHub, start_gateway: GatewayFactory) -> Gateway:
    """A gateway whose sign-in app is a GitHub App: expiring ghu_ tokens with refresh tokens."""
    return await start_gateway(github=GITHUB_APP_FIRST)


@pytest.fixture
def user(tmp_path: Path, gateway: Gateway) -> User:
    return User(tmp_path / "config", url_of(gateway))


async def whoami_status(gateway: Gateway, token: str) -> int:
    async with gateway.client.get("/_gateway/whoami", headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status


# ---------------------------------------------------------------------------------------------------
# login


async def test_login_keeps_a_working_token_owner_only_and_never_shows_it(
    user: User, gateway: Gateway, github: FakeGitHub
) -> None:
    ran = await user.run("login")
    assert ran.code == 0, ran.err
    assert ran.out == f"Signed in to {user.url} as alice\n"
    assert re.search(r"open http://\S+/login/device and enter the code [A-Z]{4}-[A-Z]{4}\n", ran.err)
    assert ran.shows_no_token()
    assert stat.S_IMODE(user.file.stat().st_mode) == 0o600
    assert stat.S_IMODE(user.file.parent.stat().st_mode) == 0o700
    assert [p.name for p in user.file.parent.iterdir() if p.name.endswith(".tmp")] == []
    entry = user.entries()[user.url]
    assert entry["client_id"] == SECOND_ID
    assert entry["access_token"].startswith("ghu_") and entry["refresh_token"].startswith("ghr_")
    assert entry["expires_at"] == pytest.approx(time.time() + 8 * 3600, abs=60)
    assert entry["refresh_token_expires_at"] > entry["expires_at"]
    assert await whoami_status(gateway, entry["access_token"]) == 200


async def test_login_waits_while_pending_slows_down_when_told_and_ends_when_approved(
    tmp_path: Path, start_gateway: GatewayFactory
) -> None:
    clock = FakeClock(time.time())
    fake = FakeGitHub({CLIENT_ID: CLIENT_SECRET}, clock=clock)  # GitHub's own interval: 5 s
    fake.add_user("alice", 7)
    runner = await fake.start()
    try:
        gateway = await start_gateway(github={"api_url": fake.web_url})
        waits: list[float] = []

        async def sleep(seconds: float) -> None:
            waits.append(seconds)
            clock.advance(2 if len(waits) == 2 else seconds)  # the second poll comes 3 s early
            if len(waits) == 4:
                fake.flows.approve_device(login="alice")

        ran = await User(tmp_path, url_of(gateway)).run_here(
            "login", "--gateway", url_of(gateway), sleep=sleep, clock=clock
        )
    finally:
        await runner.cleanup()
    assert ran.code == 0, ran.err
    assert ran.out.endswith("as alice\n")
    # pending, slow_down (GitHub's new interval, 10 s, from then on), pending, approved
    assert waits == [5, 5, 10, 10]
    assert fake.count("oauth/access-token", target="device_code") == 4


async def test_a_sign_in_declined_at_github_exits_3(user: User, github: FakeGitHub) -> None:
    github.flows.auto_approve = None
    login = await user.start("login")
    await eventually(lambda: bool(github.flows.pending()), "the CLI never asked for a device code")
    github.flows.deny_device()
    ran = await finished(login)
    assert ran.code == 3
    assert ran.err.splitlines()[-1].startswith("gateway auth: the sign-in was declined at GitHub")
    assert not user.file.exists()


async def test_a_device_code_that_expires_unapproved_exits_4(user: User, github: FakeGitHub) -> None:
    github.flows.auto_approve = None
    github.flows.device_code_lifetime = 0
    ran = await user.run("login")
    assert ran.code == 4
    assert ran.err.splitlines()[-1].startswith("gateway auth: the code expired before it was approved")


async def test_an_unreachable_gateway_exits_5(user: User) -> None:
    ran = await user.run("login", gateway=f"http://127.0.0.1:{free_port()}")
    assert ran.code == 5
    assert ran.err.startswith("gateway auth: http://127.0.0.1:") and "could not be reached" in ran.err
    assert len(ran.err.splitlines()) == 1


async def test_an_unreachable_github_exits_6(
    tmp_path: Path, github: FakeGitHub, start_gateway: GatewayFactory
) -> None:
    gateway = await start_gateway(github={"web_url": f"http://127.0.0.1:{free_port()}"})
    ran = await User(tmp_path, url_of(gateway)).run("login")
    assert ran.code == 6
    assert ran.err.startswith("gateway auth: GitHub (http://127.0.0.1:") and "could not be" in ran.err


async def test_a_gateway_whose_app_has_no_device_flow_exits_5_naming_it(
    user: User, github: FakeGitHub
) -> None:
    github.settings[SECOND_ID] = dataclasses.replace(github.settings[SECOND_ID], device_flow=False)
    ran = await user.run("login")
    assert ran.code == 5
    assert "device_flow_disabled" in ran.err and "ask the gateway's operator" in ran.err


# ---------------------------------------------------------------------------------------------------
# token


async def test_token_prints_the_token_and_nothing_else(user: User) -> None:
    assert (await user.run("login")).code == 0
    ran = await user.run("token")
    assert ran.code == 0
    assert ran.out == user.entries()[user.url]["access_token"] + "\n"
    assert ran.err == ""


async def test_token_renews_through_the_gateway_once_for_two_callers_at_once(
    user: User, gateway: Gateway, github: FakeGitHub
) -> None:
    assert (await user.run("login")).code == 0
    old = user.entries()[user.url]
    entries = user.entries()
    entries[user.url]["expires_at"] = time.time() + 60  # within 5 minutes of expiring
    user.file.write_text(json.dumps({"gateways": entries}))

    first, second = await asyncio.gather(user.run("token"), user.run("token"))

    assert (first.code, second.code) == (0, 0), first.err + second.err
    assert first.out == second.out  # the second waited for the first's renewal, and used it
    new = user.entries()[user.url]
    assert first.out == new["access_token"] + "\n" != old["access_token"] + "\n"
    assert new["refresh_token"] != old["refresh_token"]
    assert new["expires_at"] == pytest.approx(time.time() + 8 * 3600, abs=60)
    assert github.count("oauth/access-token", target="refresh_token") == 1
    assert await whoami_status(gateway, new["access_token"]) == 200
    async with gateway.client.post("/_gateway/refresh", json={"refresh_token": old["refresh_token"]}) as resp:
        assert resp.status == 401  # a refresh token works once


async def test_an_expired_token_whose_renewal_is_refused_exits_1(user: User, github: FakeGitHub) -> None:
    assert (await user.run("login")).code == 0
    entries = user.entries()
    entries[user.url]["expires_at"] = time.time() - 1
    user.file.write_text(json.dumps({"gateways": entries}))
    github.refresh(SECOND_ID, entries[user.url]["refresh_token"])  # spent elsewhere
    ran = await user.run_here("token", "--gateway", user.url)
    assert ran.code == 1
    assert ran.out == ""
    assert ran.err == (
        f"gateway auth: the gateway refused the refresh token (expired, revoked or already used):"
        f" run `gateway auth login --gateway {user.url}`\n"
    )


async def test_without_credentials_token_exits_1_naming_the_command(user: User) -> None:
    ran = await user.run_here("token", "--gateway", user.url + "/")
    assert ran.code == 1
    assert ran.err == (
        f"gateway auth: no credentials for {user.url} yet: run `gateway auth login --gateway {user.url}`\n"
    )


async def test_the_gateway_comes_from_the_environment_or_the_only_one_signed_in_to(
    user: User, tmp_path: Path
) -> None:
    nowhere = User(tmp_path / "nowhere", user.url)
    assert (await nowhere.run_here("token")).code == 2
    assert (await user.run("login")).code == 0
    assert (await user.run_here("token")).code == 0
    env = {**user.env(), auth_cli.GATEWAY_ENV: user.url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "auth", "token", cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE
    )
    assert (await proc.communicate())[0].decode() == user.entries()[user.url]["access_token"] + "\n"


# ---------------------------------------------------------------------------------------------------
# status, logout, several gateways


async def test_status_shows_user_scopes_groups_and_expiry(
    tmp_path: Path, github: FakeGitHub, world: World, start_gateway: GatewayFactory
) -> None:
    github.add_org("acme")
    github.add_member("acme", "alice")
    routes = [{"path": "/internal", "upstream": world.upstream_url, "orgs": ["acme"]}]
    user = User(tmp_path, url_of(await start_gateway(routes=routes)))  # an OAuth App's gho_ tokens
    assert (await user.run_here("login", "--gateway", user.url)).code == 0

    ran = await user.run_here("status", "--gateway", user.url)
    assert ran.code == 0
    assert ran.out.splitlines() == [
        f"Signed in to {user.url} as alice (id 7)",
        "  scopes:  read:org",
        "  groups:  acme",
        "  expires: never",
        f"  app:     {CLIENT_ID}",
    ]
    assert ran.shows_no_token()
    shown = json.loads((await user.run_here("status", "--gateway", user.url, "--json")).out)
    assert shown == {
        "gateway": user.url,
        "login": "alice",
        "id": 7,
        "scopes": ["read:org"],
        "groups": ["acme"],
        "client_id": CLIENT_ID,
        "expires_at": None,
        "refresh_token_expires_at": None,
    }


async def test_status_of_a_github_app_token_shows_when_it_expires(user: User) -> None:
    assert (await user.run("login")).code == 0
    ran = await user.run("status")
    assert ran.code == 0, ran.err
    assert ran.shows_no_token()
    lines = ran.out.splitlines()
    assert lines[0] == f"Signed in to {user.url} as alice (id 7)"
    assert "  scopes:  (none)" in lines
    assert re.fullmatch(r"  expires: \d{4}-\d\d-\d\d \d\d:\d\d UTC \(in 7 h 59 min\)", lines[2])
    assert lines[3].startswith("  renewed: through the gateway, automatically until ")


async def test_logout_revokes_the_token_and_forgets_it(user: User, gateway: Gateway) -> None:
    assert (await user.run("login")).code == 0
    token = user.entries()[user.url]["access_token"]
    assert await whoami_status(gateway, token) == 200

    ran = await user.run("logout")
    assert ran.code == 0
    assert ran.out == f"Signed out of {user.url}: the token is revoked and forgotten\n"
    assert ran.shows_no_token()
    assert await whoami_status(gateway, token) == 401
    assert user.entries() == {}
    assert stat.S_IMODE(user.file.stat().st_mode) == 0o600

    again = await user.run_here("logout", "--gateway", user.url)
    assert again.code == 1 and "no credentials" in again.err


async def test_logout_of_an_already_revoked_token_forgets_it_and_succeeds(
    user: User, gateway: Gateway
) -> None:
    assert (await user.run_here("login", "--gateway", user.url)).code == 0
    token = user.entries()[user.url]["access_token"]
    async with gateway.client.post("/_gateway/logout", headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200  # revoked by another program
    ran = await user.run_here("logout", "--gateway", user.url)
    assert ran.code == 0
    assert ran.out == f"Signed out of {user.url}: the token was already invalid and forgotten\n"
    assert user.entries() == {}


async def test_logout_from_an_unreachable_gateway_forgets_the_token_and_says_how_to_revoke_it(
    user: User,
) -> None:
    assert (await user.run_here("login", "--gateway", user.url)).code == 0
    entries = user.entries()
    gone = f"http://127.0.0.1:{free_port()}"
    entries[gone] = entries.pop(user.url)
    user.file.write_text(json.dumps({"gateways": entries}))

    ran = await user.run_here("logout", "--gateway", gone)
    assert ran.code == 5
    assert ran.err.startswith("gateway auth: the token could NOT be revoked (")
    assert ran.err.rstrip().endswith("/settings/apps/authorizations")
    assert len(ran.err.splitlines()) == 1
    assert ran.shows_no_token()
    assert user.entries() == {}


async def test_two_gateways_are_kept_apart_in_one_file(
    user: User, github: FakeGitHub, start_gateway: GatewayFactory
) -> None:
    other = url_of(await start_gateway())  # an OAuth App's gho_ tokens
    github.add_user("bob", 8)
    assert (await user.run_here("login", "--gateway", user.url)).code == 0
    github.flows.auto_approve = "bob"
    assert (await user.run_here("login", "--gateway", other)).code == 0

    assert sorted(user.entries()) == sorted([user.url, other])
    mine, theirs = (
        await user.run_here("token", "--gateway", user.url),
        await user.run_here("token", "--gateway", other),
    )
    assert mine.out.startswith("ghu_") and theirs.out.startswith("gho_")
    which = await user.run_here("token")
    assert which.code == 2 and f"(signed in to: {', '.join(sorted([user.url, other]))})" in which.err

    assert (await user.run_here("logout", "--gateway", other)).code == 0
    assert list(user.entries()) == [user.url]
    assert (await user.run_here("status")).out.startswith(f"Signed in to {user.url} as alice")


# ---------------------------------------------------------------------------------------------------
# the parts, alone


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("https://GW.example.com/", "https://gw.example.com"),
        ("https://gw.example.com:443", "https://gw.example.com"),
        ("HTTP://gw.example.com:80/", "http://gw.example.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("https://example.com/gw/", "https://example.com/gw"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_gateway_urls_are_keyed_one_way(given: str, normal: str) -> None:
    assert normal_url(given) == normal


@pytest.mark.parametrize(
    "junk",
    [
        "gw.example.com",
        "ftp://gw.example.com",
        "https://user:pw@gw.example.com",
        "https://gw?x=1",
        "https://:99",
    ],
)
def test_a_url_that_is_not_a_gateways_is_refused(junk: str) -> None:
    with pytest.raises(ValueError, match="expected the gateway's base URL"):
        normal_url(junk)


def test_slow_down_takes_githubs_new_interval_else_adds_5_seconds() -> None:
    assert next_interval({"error": "slow_down", "interval": 10}, 5) == 10
    assert next_interval({"error": "slow_down"}, 5) == 10
    assert next_interval({"error": "slow_down", "interval": "soon"}, 7) == 12


@pytest.mark.parametrize(
    "answer",
    [
        [],
        {"device_code": "abc", "user_code": "\x1b[2J", "verification_uri": "https://x/", "expires_in": 900},
        {"device_code": "abc", "user_code": "ABCD-EFGH", "verification_uri": "javascript:1", "expires_in": 9},
        {"device_code": "abc", "user_code": "ABCD-EFGH", "verification_uri": "https://x/", "expires_in": -1},
    ],
)
def test_a_device_code_answer_off_githubs_shape_is_github_unavailable(answer: object) -> None:
    with pytest.raises(GitHubUnavailable):
        device_code(answer)


def test_a_device_code_refusal_carries_githubs_code() -> None:
    with pytest.raises(GrantRefused) as refused:
        device_code({"error": "device_flow_disabled", "error_description": "Device Flow must be enabled"})
    assert refused.value.code == "device_flow_disabled"


async def test_a_renewal_that_fails_while_the_token_still_works_warns_and_prints_it(
    user: User, github: FakeGitHub
) -> None:
    assert (await user.run_here("login", "--gateway", user.url)).code == 0
    entries = user.entries()
    entries[user.url]["expires_at"] = time.time() + 120
    user.file.write_text(json.dumps({"gateways": entries}))
    github.outage = 502
    ran = await user.run_here("token", "--gateway", user.url)
    assert ran.code == 0
    assert ran.out == entries[user.url]["access_token"] + "\n"
    assert ran.err.startswith(f"gateway auth: warning: {user.url} could not reach GitHub")
    assert ran.err.rstrip().endswith("(the token works 1 min more)")
    assert user.entries() == entries  # kept as it was, the refresh token too, for the next try


async def test_a_credentials_directory_that_cannot_be_written_exits_1_before_sign_in(
    user: User, github: FakeGitHub
) -> None:
    user.home.mkdir()
    (user.home / "gateway").write_text("a file where the directory goes")
    ran = await user.run_here("login", "--gateway", user.url)
    assert ran.code == 1
    assert ran.err.endswith("credentials.json.lock: Not a directory\n")
    assert len(ran.err.splitlines()) == 1
    assert github.count("oauth/device-code") == 0  # nobody was asked to approve a sign-in for nothing


async def test_a_gateway_with_another_control_prefix_is_found_by_its_401s_link(
    tmp_path: Path, github: FakeGitHub, start_gateway: GatewayFactory
) -> None:
    moved = await start_gateway(github=GITHUB_APP_FIRST, server={"control_prefix": "/_gw"})
    user = User(tmp_path / "config", url_of(moved))

    login = await user.run_here("login", "--gateway", user.url)
    status = await user.run_here("status", "--gateway", user.url)
    logout = await user.run_here("logout", "--gateway", user.url)

    assert (login.code, status.code, logout.code) == (0, 0, 0), login.err + status.err + logout.err
    assert login.out == f"Signed in to {user.url} as alice\n"
    assert "alice" in status.out
    assert user.url not in user.entries()
