"""Who may pass: organisations, teams and repository permissions, asked of the fake GitHub with the
caller's own token (`github.membership.as: user`), over real sockets (README: Who may pass)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .support.headers import bearer, seen_headers
from .support.metrics import value
from .support.world import Gateway, GatewayFactory, World

MEMBERSHIP = "orgs/get-membership-for-authenticated-user"
REST_CALLERS = ("user", "installation", "app")  # the REST API's budgets: not the OAuth Apps API's
TEAM = "teams/get-membership-for-user-in-org"
REPO = "repos/get"


def routes(world: World, **policy: Any) -> list[dict[str, Any]]:
    """/gated with the policy given, and an open / for comparison."""
    up = world.upstream_url
    return [{"path": "/gated", "upstream": up, **policy}, {"path": "/", "upstream": up}]


async def gated(
    start_gateway: GatewayFactory,
    world: World,
    *,
    membership: dict[str, Any] | None = None,
    identity_headers: dict[str, Any] | None = None,
    **policy: Any,
) -> Gateway:
    github = {"membership": membership} if membership else {}
    return await start_gateway(
        routes=routes(world, **policy), github=github, identity_headers=identity_headers or {}
    )


@pytest.fixture
def acme(world: World) -> World:
    """acme: alice an active member, carol pending; teams sre (alice) and its child team oncall (dave)."""
    world.github.add_org("acme")
    world.github.add_user("alice", 7)
    world.github.add_user("bob", 8)
    world.github.add_user("carol", 9)
    world.github.add_user("dave", 10)
    world.github.add_member("acme", "alice")
    world.github.add_member("acme", "carol", state="pending")
    world.github.add_member("acme", "dave")
    world.github.add_team("acme", "sre", "Site Reliability")
    world.github.add_team("acme", "oncall", "On call", parent="sre")
    world.github.add_team_member("acme", "sre", "alice")
    world.github.add_team_member("acme", "oncall", "dave")
    return world


def token(world: World, login: str, uid: int, scopes: tuple[str, ...] = ("read:org", "repo")) -> str:
    return world.github.add_token(login, uid, list(scopes))


async def status(gateway: Gateway, token: str, path: str = "/gated") -> int:
    return (await gateway.client.get(path, headers=bearer(token))).status


async def test_an_active_member_of_the_org_passes_and_others_get_403(
    start_gateway: GatewayFactory, acme: World
) -> None:
    gateway = await gated(start_gateway, acme, orgs=["ACME"])  # names compare case-insensitively
    assert await status(gateway, token(acme, "alice", 7)) == 200
    bob = token(acme, "bob", 8)
    resp = await gateway.client.get("/gated", headers=bearer(bob))
    assert resp.status == 403
    assert (await resp.json())["error"] == "forbidden"
    assert await status(gateway, bob, "/other") == 200  # a valid token: only the gated route refuses


async def test_a_pending_member_is_no_member(start_gateway: GatewayFactory, acme: World) -> None:
    gateway = await gated(start_gateway, acme, orgs=["acme"])
    assert await status(gateway, token(acme, "carol", 9)) == 403


async def test_a_team_is_named_by_its_slug_and_its_child_teams_count(
    start_gateway: GatewayFactory, acme: World
) -> None:
    gateway = await gated(start_gateway, acme, teams=["acme/sre"])
    assert await status(gateway, token(acme, "alice", 7)) == 200
    assert await status(gateway, token(acme, "dave", 10)) == 200  # a member of oncall, sre's child
    assert await status(gateway, token(acme, "carol", 9)) == 403


@pytest.mark.parametrize(
    ("role", "passes"),
    [("read", False), ("triage", False), ("write", True), ("maintain", True), ("admin", True), (None, False)],
)
async def test_a_repository_permission_admits_at_its_level_and_above(
    start_gateway: GatewayFactory, acme: World, role: str | None, passes: bool
) -> None:
    acme.github.add_repo("acme/api")
    acme.github.set_role("acme/api", "bob", role)
    gateway = await gated(start_gateway, acme, repos={"acme/api": "write"})
    assert await status(gateway, token(acme, "bob", 8)) == (200 if passes else 403)


async def test_users_and_teams_together_admit_either(start_gateway: GatewayFactory, acme: World) -> None:
    gateway = await start_gateway(
        routes=routes(acme, users=["bob"], teams=["acme/sre"]), identity_headers={"groups": None}
    )
    assert await status(gateway, token(acme, "bob", 8)) == 200
    assert await status(gateway, token(acme, "alice", 7)) == 200
    assert await status(gateway, token(acme, "carol", 9)) == 403
    # bob passed by name: nothing asked about him (no groups header to gather either)
    assert acme.github.count(TEAM, target="acme/sre/bob") == 0


async def test_someone_removed_from_the_org_is_refused_within_membership_ttl(
    start_gateway: GatewayFactory, acme: World
) -> None:
    gateway = await start_gateway(
        routes=routes(acme, orgs=["acme"]),
        cache={"ttl": "1h"},
        github={"membership": {"ttl": "60s", "negative_ttl": "10s"}},
    )
    alice = token(acme, "alice", 7)
    assert await status(gateway, alice) == 200
    acme.github.remove_member("acme", "alice")
    acme.clock.advance(59)
    assert await status(gateway, alice) == 200  # the fact is still believed, as configured
    acme.clock.advance(2)
    assert await status(gateway, alice) == 403
    assert acme.github.check_calls(alice) == 1  # her token was cached as valid all along


async def test_an_org_enforcing_sso_is_403_sso_required_with_githubs_url(
    start_gateway: GatewayFactory, world: World
) -> None:
    world.github.add_org("secure", sso=True)
    world.github.add_user("alice", 7)
    world.github.add_member("secure", "alice")
    gateway = await gated(start_gateway, world, orgs=["secure"])
    alice = token(world, "alice", 7)
    resp = await gateway.client.get("/gated", headers=bearer(alice))
    assert resp.status == 403
    body = await resp.json()
    assert body["error"] == "sso_required"
    assert "/orgs/secure/sso?authorization_request=" in body["message"] and alice not in body["message"]
    world.github.authorize_sso(alice, "secure")
    world.clock.advance(3600)  # past the cached "no"
    assert await status(gateway, alice) == 200


async def test_a_thousand_requests_of_one_new_user_make_one_call_per_fact(
    start_gateway: GatewayFactory, acme: World
) -> None:
    acme.github.add_repo("acme/api")
    acme.github.set_role("acme/api", "bob", "admin")
    gateway = await gated(start_gateway, acme, orgs=["acme"], teams=["acme/sre"], repos={"acme/api": "read"})
    bob = token(acme, "bob", 8)
    answers = await asyncio.gather(*(status(gateway, bob) for _ in range(1000)))
    assert answers == [200] * 1000
    assert acme.github.count(MEMBERSHIP) == 1
    assert acme.github.count(TEAM) == 1
    assert acme.github.count(REPO) == 1


@pytest.mark.parametrize("stale", ["0s", "10m"])
async def test_with_github_down_a_known_fact_is_served_only_within_stale_if_error(
    start_gateway: GatewayFactory, acme: World, stale: str
) -> None:
    gateway = await start_gateway(
        routes=routes(acme, orgs=["acme"]),
        cache={"ttl": "1h", "stale_if_error": stale},
        github={"membership": {"ttl": "60s"}},
    )
    alice = token(acme, "alice", 7)
    assert await status(gateway, alice) == 200
    acme.github.outage = 502
    acme.clock.advance(61)
    resp = await gateway.client.get("/gated", headers=bearer(alice))
    assert resp.status == (200 if stale == "10m" else 503)


async def test_a_token_github_will_not_answer_for_is_403_and_logged_once(
    start_gateway: GatewayFactory, acme: World, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await gated(start_gateway, acme, orgs=["acme"])
    for n in range(3):  # OAuth App tokens without read:org, of three users
        assert await status(gateway, token(acme, f"user{n}", 100 + n, scopes=("repo",))) == 403
    said = [r for r in caplog.records if r.name == "gateway.membership"]
    assert len(said) == 1 and "read:org" in said[0].getMessage()


async def test_upstreams_get_the_groups_and_whoami_shows_them(
    start_gateway: GatewayFactory, acme: World
) -> None:
    gateway = await start_gateway(
        routes=[
            *routes(acme, orgs=["acme"]),
            {"path": "/teams", "upstream": acme.upstream_url, "teams": ["acme/sre"]},
        ]
    )
    alice = token(acme, "alice", 7)
    echo = await (await gateway.client.get("/gated", headers=bearer(alice))).json()
    assert seen_headers(echo, "X-Auth-Groups") == ["acme,acme/sre"]
    who = await (await gateway.client.get("/_gateway/whoami", headers=bearer(alice))).json()
    assert who["groups"] == ["acme", "acme/sre"]
    spoof = {**bearer(token(acme, "bob", 8)), "X-Auth-Groups": "acme", "X_Auth_Groups": "acme/sre"}
    echo = await (await gateway.client.get("/open", headers=spoof)).json()
    assert seen_headers(echo, "X-Auth-Groups") == []  # bob belongs to none; his own header is dropped


async def test_forward_auth_and_websockets_apply_the_same_policy(
    start_gateway: GatewayFactory, acme: World
) -> None:
    gateway = await gated(start_gateway, acme, orgs=["acme"])
    alice, bob = token(acme, "alice", 7), token(acme, "bob", 8)
    original = {"X-Original-URI": "/gated/x", "X-Original-Method": "GET"}
    resp = await gateway.client.get("/_gateway/auth", headers={**bearer(alice), **original})
    assert resp.status == 200 and resp.headers["X-Auth-Groups"] == "acme"
    assert (await gateway.client.get("/_gateway/auth", headers={**bearer(bob), **original})).status == 403
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with gateway.client.ws_connect("/gated/ws", headers=bearer(bob)):
            pass
    assert refused.value.status == 403
    async with gateway.client.ws_connect("/gated/ws", headers=bearer(alice)) as ws:
        await ws.send_str("hi")
        assert (await ws.receive()).data == "alice: hi"  # the echo upstream names who it heard


async def test_a_display_name_is_no_slug_and_is_refused_at_load(
    start_gateway: GatewayFactory, world: World
) -> None:
    with pytest.raises(ValueError, match="display name is not its slug"):
        await gated(start_gateway, world, teams=["acme/Site Reliability"])


async def test_a_spent_rate_limit_is_a_503_and_github_is_left_alone_until_its_reset(
    start_gateway: GatewayFactory, acme: World
) -> None:
    gateway = await gated(start_gateway, acme, orgs=["acme"])
    alice = token(acme, "alice", 7)
    acme.github.exhaust_rate_limit(reset_in=600, status=429, retry_after=120, budgets=REST_CALLERS)
    resp = await gateway.client.get("/gated", headers=bearer(alice))
    assert resp.status == 503 and resp.headers["Retry-After"] == "120"
    asked = acme.github.count(MEMBERSHIP)
    assert [await status(gateway, alice) for _ in range(5)] == [503] * 5
    assert acme.github.count(MEMBERSHIP) == asked  # left alone, as GitHub asked
    acme.clock.advance(121)
    await status(gateway, alice)
    assert acme.github.count(MEMBERSHIP) == asked + 1  # asked again once the wait is over


async def test_membership_lookups_are_counted_by_kind_and_result(
    start_gateway: GatewayFactory, acme: World
) -> None:
    gateway = await start_gateway(routes=routes(acme, orgs=["acme"]), identity_headers={"groups": None})
    before = {
        r: value("gateway_membership_lookups_total", kind="org", result=r) for r in ("yes", "no", "cached")
    }
    assert await status(gateway, token(acme, "alice", 7)) == 200
    assert await status(gateway, token(acme, "bob", 8)) == 403
    assert await status(gateway, token(acme, "alice", 7)) == 200
    after = {
        r: value("gateway_membership_lookups_total", kind="org", result=r) for r in ("yes", "no", "cached")
    }
    assert {r: after[r] - before[r] for r in after} == {"yes": 1, "no": 1, "cached": 1}
    logged = [line["membership"] for line in gateway.log_lines()[-3:]]
    assert logged == ["org:yes", "org:no", "org:cached"]  # the access log says what each request cost


@pytest.fixture
def app_key(tmp_path: Path, acme: World) -> Path:
    """The GitHub App's private key in a file, its public key known to the fake, the app on acme."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = tmp_path / "app.pem"
    path.write_bytes(pem)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    acme.github.set_app(4242, public)
    acme.github.install("acme")
    return path


async def test_as_the_app_members_pass_whatever_their_tokens_may_do(
    start_gateway: GatewayFactory, acme: World, app_key: Path
) -> None:
    """membership.as: app: the app's JWT (checked by the fake: signature, iss, expiry) finds the
    installation, whose token asks; the callers' tokens need no read:org."""
    acme.github.add_repo("acme/api")
    acme.github.set_role("acme/api", "bob", "maintain")
    gateway = await gated(
        start_gateway,
        acme,
        membership={"as": "app", "app_id": 4242, "private_key_file": str(app_key)},
        orgs=["acme"],
        repos={"acme/api": "write"},
    )
    assert await status(gateway, token(acme, "alice", 7, scopes=())) == 200  # an org member
    assert await status(gateway, token(acme, "bob", 8, scopes=())) == 200  # maintain >= write
    assert await status(gateway, token(acme, "carol", 9, scopes=())) == 403  # pending
    assert acme.github.count("apps/create-installation-access-token") == 1  # one token, reused
    remaining = value("gateway_github_rate_limit_remaining", account="acme")
    assert 0 < remaining < acme.github.rate_budget  # the installation's budget, as GitHub last said


async def test_an_expired_installation_token_is_replaced(
    start_gateway: GatewayFactory, acme: World, app_key: Path
) -> None:
    gateway = await start_gateway(
        routes=routes(acme, orgs=["acme"]),
        identity_headers={"groups": None},
        github={"membership": {"as": "app", "app_id": 4242, "private_key_file": str(app_key), "ttl": "1s"}},
    )
    alice = token(acme, "alice", 7, scopes=())
    assert await status(gateway, alice) == 200
    acme.github.expire_installation_tokens()
    acme.clock.advance(2)  # past the cached "yes": the app asks again, with a token GitHub refuses
    assert await status(gateway, alice) == 200
    assert acme.github.count("apps/create-installation-access-token") == 2


@pytest.mark.parametrize("problem", ["missing", "not a key", "encrypted"])
async def test_the_apps_private_key_is_checked_when_the_config_is_loaded(
    start_gateway: GatewayFactory, world: World, tmp_path: Path, problem: str
) -> None:
    path = tmp_path / "app.pem"
    if problem == "not a key":
        path.write_text("hello")
    elif problem == "encrypted":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        encrypted = serialization.BestAvailableEncryption(b"secret")
        path.write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encrypted)
        )
    with pytest.raises(ValueError, match="PEM file of the GitHub App's RSA private key"):
        await gated(
            start_gateway,
            world,
            membership={"as": "app", "app_id": 1, "private_key_file": str(path)},
            orgs=["acme"],
        )


async def test_as_the_app_a_spent_installation_budget_rests_every_caller_of_that_org(
    start_gateway: GatewayFactory, acme: World, app_key: Path
) -> None:
    gateway = await gated(
        start_gateway,
        acme,
        membership={"as": "app", "app_id": 4242, "private_key_file": str(app_key)},
        orgs=["acme"],
        identity_headers={"groups": None},
    )
    alice, bob = token(acme, "alice", 7, scopes=()), token(acme, "bob", 8, scopes=())
    assert await status(gateway, alice) == 200  # the installation token is minted and used
    acme.github.exhaust_rate_limit(reset_in=600, status=403, retry_after=90, budgets=REST_CALLERS)
    assert await status(gateway, bob) == 503  # the installation's budget is spent
    asked = acme.github.count("orgs/check-membership-for-user")
    assert await status(gateway, token(acme, "carol", 9, scopes=())) == 503  # another caller: not asked
    assert acme.github.count("orgs/check-membership-for-user") == asked
