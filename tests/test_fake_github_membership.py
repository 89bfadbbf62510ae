"""The fake GitHub's membership REST API over real sockets: organisations, teams, repositories, the
GitHub App and its installations, SSO and rate limits, every answer checked against GitHub's OpenAPI
description of the operation (api.github.com.membership.json; GHES 3.19's under /api/v3)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .support.github import CID, CID2
from .support.openapi import OPENAPI, Env, Schemas, open_env

pytestmark = pytest.mark.skipif(
    not OPENAPI.is_dir(), reason=f"GitHub's OpenAPI description is not at {OPENAPI}"
)

APP_ID = 4242
ORG_OPS = (
    "orgs/get-membership-for-authenticated-user",
    "teams/get-membership-for-user-in-org",
    "orgs/check-membership-for-user",
)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True)
class Keys:
    private: rsa.RSAPrivateKey
    public_pem: bytes
    other: rsa.RSAPrivateKey  # not the app's


@pytest.fixture(scope="module")
def schemas() -> Schemas:
    return Schemas("api.github.com.membership.json")


@pytest.fixture(scope="module")
def keys() -> Keys:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Keys(private, public, rsa.generate_private_key(public_exponent=65537, key_size=2048))


@dataclass
class World:
    env: Env
    alice: str  # active member of acme, of acme/platform; read:org and repo
    bob: str  # pending member of acme
    carol: str  # no member of anything
    dave: str  # active member of acme/sre, a child team of acme/platform
    erin: str  # an owner (admin) of acme
    bare: str  # alice again, without any scope


@pytest.fixture
async def world(aiohttp_server: Any, schemas: Schemas) -> AsyncIterator[World]:
    async with open_env(aiohttp_server, schemas) as env:
        fake = env.fake
        people = ("alice", "bob", "carol", "dave", "erin")
        alice, bob, carol, dave, erin = (
            fake.add_token(p, n, ["read:org", "repo"]) for n, p in enumerate(people, 1)
        )
        fake.add_org("acme", 100)
        fake.add_member("acme", "alice")
        fake.add_member("acme", "bob", state="pending")
        fake.add_member("acme", "dave")
        fake.add_member("acme", "erin", role="admin")
        fake.add_team("acme", "platform", "Platform Team")
        fake.add_team("acme", "sre", "Site Reliability", parent="platform")
        fake.add_team_member("acme", "platform", "alice")
        fake.add_team_member("acme", "sre", "dave")
        fake.add_repo("acme/api")
        fake.add_repo("acme/www", private=False)
        yield World(env, alice, bob, carol, dave, erin, fake.add_token("alice", 1))


async def call(env: Env, path: str, token: str | None, *, method: str = "GET", prefix: str = "") -> Answer:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with env.session.request(
        method, env.url + prefix + path, headers=headers, allow_redirects=False
    ) as response:
        body = await response.json() if response.content_type == "application/json" else None
        return Answer(response.status, dict(response.headers), body)


def app_jwt(private: rsa.RSAPrivateKey, now: float, *, iss: str = str(APP_ID), lifetime: float = 540) -> str:
    """An app JWT as GitHub asks for one: iat a minute in the past, exp within ten minutes of it."""
    claims = {"iat": int(now - 60), "exp": int(now - 60 + lifetime), "iss": iss}
    return jwt.encode(claims, private, algorithm="RS256")


# ---------------------------------------------------------------------------------------------------
# As the user: organisations


async def test_org_membership_is_active_pending_or_404(world: World) -> None:
    env = world.env
    alice = await call(env, "/user/memberships/orgs/ACME", world.alice)
    assert alice.status == 200
    assert (alice.body["state"], alice.body["role"], alice.body["organization"]["login"]) == (
        "active",
        "member",
        "acme",
    )
    assert alice.headers["X-OAuth-Scopes"] == "read:org, repo"
    bob = await call(env, "/user/memberships/orgs/acme", world.bob)
    assert (bob.status, bob.body["state"]) == (200, "pending")
    assert (await call(env, "/user/memberships/orgs/acme", world.carol)).status == 404
    assert (await call(env, "/user/memberships/orgs/nowhere", world.alice)).status == 404
    assert ("orgs/get-membership-for-authenticated-user", 404) in env.validated


async def test_an_oauth_token_without_read_org_gets_403_naming_the_scope(world: World) -> None:
    refused = await call(world.env, "/user/memberships/orgs/acme", world.bare)
    assert refused.status == 403
    assert "read:org" in refused.body["message"]
    assert refused.headers["X-Accepted-OAuth-Scopes"] == "read:org, write:org, admin:org"
    assert refused.headers["X-OAuth-Scopes"] == ""


async def test_credentials_missing_unknown_revoked_or_of_the_wrong_kind(world: World, keys: Keys) -> None:
    env = world.env
    assert (await call(env, "/user/orgs", None)).body["message"] == "Requires authentication"
    assert (await call(env, "/user/orgs", "gho_never_issued")).status == 401
    env.fake.revoke(world.carol)
    assert (await call(env, "/user/orgs", world.carol)).status == 401
    assert (await call(env, "/orgs/acme/installation", world.alice)).status == 401  # needs the app's JWT
    env.fake.set_app(APP_ID, keys.public_pem)
    env.fake.install("acme")
    as_app = app_jwt(keys.private, env.wall.now)
    assert (await call(env, "/user/orgs", as_app)).status == 403


# ---------------------------------------------------------------------------------------------------
# Lists and their pages


async def test_user_orgs_pages_with_githubs_link_header(world: World) -> None:
    env = world.env
    for n in range(1, 5):
        env.fake.add_org(f"org{n}")
        env.fake.add_member(f"org{n}", "alice")
    env.fake.add_org("invited")
    env.fake.add_member("invited", "alice", state="pending")  # not listed: not a member yet
    everything = await call(env, "/user/orgs", world.alice)
    assert [o["login"] for o in everything.body] == ["acme", "org1", "org2", "org3", "org4"]
    assert "Link" not in everything.headers
    base = f"{env.url}/user/orgs?per_page=2&page="
    first = await call(env, "/user/orgs?per_page=2", world.alice)
    assert [o["login"] for o in first.body] == ["acme", "org1"]
    assert first.headers["Link"] == f'<{base}2>; rel="next", <{base}3>; rel="last"'
    middle = await call(env, "/user/orgs?per_page=2&page=2", world.alice)
    assert [o["login"] for o in middle.body] == ["org2", "org3"]
    assert middle.headers["Link"] == (
        f'<{base}1>; rel="prev", <{base}3>; rel="next", <{base}3>; rel="last", <{base}1>; rel="first"'
    )
    last = await call(env, "/user/orgs?per_page=2&page=3", world.alice)
    assert [o["login"] for o in last.body] == ["org4"]
    assert last.headers["Link"] == f'<{base}2>; rel="prev", <{base}1>; rel="first"'
    assert ("orgs/list-for-authenticated-user", 200) in env.validated


async def test_pages_of_thirty_by_default(world: World) -> None:
    env = world.env
    for n in range(30):
        env.fake.add_org(f"org{n:02}")
        env.fake.add_member(f"org{n:02}", "alice")
    first = await call(env, "/user/orgs", world.alice)
    assert len(first.body) == 30
    assert (
        first.headers["Link"]
        == f'<{env.url}/user/orgs?page=2>; rel="next", <{env.url}/user/orgs?page=2>; rel="last"'
    )
    second = await call(env, "/user/orgs?page=2", world.alice)
    assert [o["login"] for o in second.body] == ["org29"]


async def test_user_teams_lists_the_users_own_teams_with_their_parent(world: World) -> None:
    env = world.env
    dave = await call(env, "/user/teams", world.dave)
    assert [(t["slug"], t["name"], t["parent"]["slug"]) for t in dave.body] == [
        ("sre", "Site Reliability", "platform")
    ]
    alice = await call(env, "/user/teams?per_page=1", world.alice)
    assert [(t["slug"], t["parent"]) for t in alice.body] == [("platform", None)]
    assert "Link" not in alice.headers
    assert (await call(env, "/user/teams", world.carol)).body == []
    assert ("teams/list-for-authenticated-user", 200) in env.validated


# ---------------------------------------------------------------------------------------------------
# Teams


async def test_team_membership_counts_child_teams(world: World) -> None:
    env = world.env
    path = "/orgs/acme/teams/{}/memberships/{}"
    direct = await call(env, path.format("platform", "alice"), world.alice)
    assert (direct.status, direct.body["state"], direct.body["role"]) == (200, "active", "member")
    through_child = await call(env, path.format("platform", "dave"), world.alice)
    assert (through_child.status, through_child.body["state"]) == (200, "active")
    assert (await call(env, path.format("sre", "alice"), world.alice)).status == 404  # not downwards
    assert (await call(env, path.format("platform", "carol"), world.alice)).status == 404
    assert (await call(env, path.format("platform", "nobody"), world.alice)).status == 404
    assert ("teams/get-membership-for-user-in-org", 200) in env.validated


async def test_a_team_is_named_by_its_slug_not_its_display_name(world: World) -> None:
    answer = await call(world.env, "/orgs/acme/teams/Platform%20Team/memberships/alice", world.alice)
    assert answer.status == 404


async def test_pending_team_members_and_owners_as_maintainers(world: World) -> None:
    env = world.env
    env.fake.add_team_member("acme", "sre", "alice", state="pending")
    pending = await call(env, "/orgs/acme/teams/sre/memberships/alice", world.alice)
    assert (pending.status, pending.body["state"]) == (200, "pending")
    env.fake.add_team_member("acme", "platform", "erin")
    owner = await call(env, "/orgs/acme/teams/platform/memberships/erin", world.alice)
    assert owner.body["role"] == "maintainer"


async def test_outsiders_do_not_see_the_organisations_teams(world: World) -> None:
    env = world.env
    assert (await call(env, "/orgs/acme/teams/platform/memberships/alice", world.carol)).status == 404
    assert (await call(env, "/orgs/acme/teams/platform/memberships/alice", world.bob)).status == 404


# ---------------------------------------------------------------------------------------------------
# Repositories

ROLES = {
    "read": {"admin": False, "maintain": False, "push": False, "triage": False, "pull": True},
    "triage": {"admin": False, "maintain": False, "push": False, "triage": True, "pull": True},
    "write": {"admin": False, "maintain": False, "push": True, "triage": True, "pull": True},
    "maintain": {"admin": False, "maintain": True, "push": True, "triage": True, "pull": True},
    "admin": {"admin": True, "maintain": True, "push": True, "triage": True, "pull": True},
}
LEGACY = {"read": "read", "triage": "read", "write": "write", "maintain": "write", "admin": "admin"}


@pytest.mark.parametrize("role", list(ROLES))
async def test_each_repository_role_gives_githubs_permissions(world: World, keys: Keys, role: str) -> None:
    env = world.env
    env.fake.set_role("acme/api", "carol", role)
    mine = await call(env, "/repos/acme/api", world.carol)
    assert (mine.status, mine.body["full_name"], mine.body["permissions"]) == (200, "acme/api", ROLES[role])
    token = await installation_token(env, keys)
    theirs = await call(env, "/repos/acme/api/collaborators/carol/permission", token)
    assert (theirs.body["role_name"], theirs.body["permission"]) == (role, LEGACY[role])
    assert theirs.body["user"]["permissions"] == ROLES[role]
    assert ("repos/get", 200) in env.validated
    assert ("repos/get-collaborator-permission-level", 200) in env.validated


async def test_older_role_names_and_organisation_owners(world: World) -> None:
    env = world.env
    env.fake.set_role("acme/api", "alice", "push")
    assert (await call(env, "/repos/acme/api", world.alice)).body["permissions"] == ROLES["write"]
    assert (await call(env, "/repos/acme/api", world.erin)).body["permissions"] == ROLES["admin"]
    with pytest.raises(ValueError, match="repository role"):
        env.fake.set_role("acme/api", "alice", "owner")


async def test_private_repositories_need_a_role_and_the_repo_scope(world: World) -> None:
    env = world.env
    assert (await call(env, "/repos/acme/api", world.carol)).status == 404  # no role
    env.fake.set_role("acme/api", "alice", "write")
    assert (await call(env, "/repos/acme/api", world.bare)).status == 404  # no repo scope
    public = await call(env, "/repos/acme/www", world.bare)
    assert (public.status, public.body["permissions"]) == (200, ROLES["read"])
    assert ("repos/get", 404) in env.validated


async def test_collaborator_permission_needs_push_access_for_a_user(world: World) -> None:
    env = world.env
    env.fake.set_role("acme/api", "alice", "triage")
    refused = await call(env, "/repos/acme/api/collaborators/carol/permission", world.alice)
    assert refused.status == 403
    env.fake.set_role("acme/api", "alice", "write")
    answer = await call(env, "/repos/acme/api/collaborators/carol/permission", world.alice)
    assert (answer.body["role_name"], answer.body["permission"]) == ("none", "none")


# ---------------------------------------------------------------------------------------------------
# Changes while a test runs


async def test_removal_and_role_changes_show_at_once(world: World) -> None:
    env = world.env
    env.fake.set_role("acme/api", "alice", "admin")
    env.fake.remove_member("acme", "dave")
    assert (await call(env, "/orgs/acme/teams/platform/memberships/dave", world.alice)).status == 404
    env.fake.remove_team_member("acme", "platform", "alice")
    assert (await call(env, "/orgs/acme/teams/platform/memberships/alice", world.alice)).status == 404
    env.fake.set_role("acme/api", "alice", "read")
    assert (await call(env, "/repos/acme/api", world.alice)).body["permissions"] == ROLES["read"]
    env.fake.set_role("acme/api", "alice", None)
    assert (await call(env, "/repos/acme/api", world.alice)).status == 404
    env.fake.remove_member("acme", "alice")
    assert (await call(env, "/user/memberships/orgs/acme", world.alice)).status == 404


async def test_memberships_follow_the_user_id_through_a_rename(world: World, keys: Keys) -> None:
    env = world.env
    token = await installation_token(env, keys)
    env.fake.add_user("alice-renamed", 1)
    assert (await call(env, "/orgs/acme/members/alice-renamed", token)).status == 204
    assert (await call(env, "/orgs/acme/members/alice", token)).status == 404
    team = await call(env, "/orgs/acme/teams/platform/memberships/alice-renamed", world.alice)
    assert team.body["url"].endswith("/memberships/alice-renamed")
    env.fake.add_user("alice", 99)  # someone else takes the old login: they are no member
    assert (await call(env, "/orgs/acme/members/alice", token)).status == 404


# ---------------------------------------------------------------------------------------------------
# A GitHub App user token (ghu_)


async def test_a_github_app_user_token_reaches_only_where_the_app_is_installed(
    world: World, keys: Keys
) -> None:
    env = world.env
    ghu = env.fake.add_token("alice", 1, client_id=CID2)
    env.fake.set_role("acme/api", "alice", "write")
    env.fake.set_app(APP_ID, keys.public_pem)
    refused = await call(env, "/user/memberships/orgs/acme", ghu)
    assert (refused.status, refused.body["message"]) == (403, "Resource not accessible by integration")
    assert (await call(env, "/repos/acme/api", ghu)).status == 404
    assert (await call(env, "/user/orgs", ghu)).body == []
    installed = env.fake.install("acme", permissions={"metadata": "read"})  # without Members
    assert (await call(env, "/user/memberships/orgs/acme", ghu)).status == 403
    assert (await call(env, "/repos/acme/api", ghu)).body["permissions"] == ROLES["write"]
    assert env.fake.install("acme", repositories=["www"]) is installed  # now with Members, not api
    assert (await call(env, "/user/memberships/orgs/acme", ghu)).status == 200
    assert (await call(env, "/repos/acme/api", ghu)).status == 404
    env.fake.register_app("Iv23liAnotherGitHubAp", "another-secret")  # a GitHub App not installed on acme
    other_app = env.fake.add_token("alice", 1, client_id="Iv23liAnotherGitHubAp")
    assert (await call(env, "/repos/acme/api", other_app)).status == 404


async def test_a_github_app_user_token_with_members_permission(world: World, keys: Keys) -> None:
    env = world.env
    ghu = env.fake.add_token("alice", 1, client_id=CID2)
    env.fake.set_app(APP_ID, keys.public_pem, client_id=CID2)
    env.fake.install("acme")
    member = await call(env, "/user/memberships/orgs/acme", ghu)
    assert (member.status, member.body["state"], "X-OAuth-Scopes" in member.headers) == (200, "active", False)
    assert [o["login"] for o in (await call(env, "/user/orgs", ghu)).body] == ["acme"]


# ---------------------------------------------------------------------------------------------------
# The GitHub App: JWT, installations, installation tokens


async def installation_token(env: Env, keys: Keys, account: str = "acme") -> str:
    env.fake.set_app(APP_ID, keys.public_pem)
    installation = env.fake.installation_for(account) or env.fake.install(account)
    as_app = app_jwt(keys.private, env.wall.now)
    created = await call(env, f"/app/installations/{installation.id}/access_tokens", as_app, method="POST")
    assert created.status == 201
    return str(created.body["token"])


async def test_the_app_finds_its_installations_and_gets_tokens(world: World, keys: Keys) -> None:
    env = world.env
    env.fake.set_app(APP_ID, keys.public_pem)
    installed = env.fake.install("acme", repositories=["api"])
    as_app = app_jwt(keys.private, env.wall.now)
    by_org = await call(env, "/orgs/acme/installation", as_app)
    assert (by_org.body["id"], by_org.body["app_id"], by_org.body["account"]["login"]) == (
        installed.id,
        APP_ID,
        "acme",
    )
    assert (await call(env, "/repos/acme/api/installation", as_app)).body["id"] == installed.id
    assert (await call(env, "/repos/acme/www/installation", as_app)).status == 404  # not selected
    assert (await call(env, "/orgs/elsewhere/installation", as_app)).status == 404
    path = f"/app/installations/{installed.id}/access_tokens"
    created = await call(env, path, as_app, method="POST")
    assert created.body["token"].startswith("ghs_")
    assert created.body["expires_at"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(env.wall.now + 3600))
    assert created.body["repository_selection"] == "selected"
    assert (await call(env, "/app/installations/999/access_tokens", as_app, method="POST")).status == 404
    me = await call(env, "/app", as_app)
    assert (me.body["id"], me.body["client_id"], me.body["installations_count"]) == (APP_ID, CID2, 1)
    assert ("apps/create-installation-access-token", 201) in env.validated
    assert ("apps/get-org-installation", 200) in env.validated
    assert ("apps/get-authenticated", 200) in env.validated


async def test_an_installation_token_answers_membership(world: World, keys: Keys) -> None:
    env = world.env
    token = await installation_token(env, keys)
    assert (await call(env, "/orgs/acme/members/alice", token)).status == 204
    assert (await call(env, "/orgs/acme/members/bob", token)).status == 404  # pending is not a member
    assert (await call(env, "/orgs/acme/members/carol", token)).status == 404
    team = await call(env, "/orgs/acme/teams/platform/memberships/dave", token)
    assert (team.status, team.body["state"]) == (200, "active")
    assert (await call(env, "/user/memberships/orgs/acme", token)).status == 403  # not a user
    env.fake.add_org("other")
    assert (await call(env, "/orgs/other/members/alice", token)).status == 403  # not installed there
    assert ("orgs/check-membership-for-user", 204) in env.validated
    assert ("orgs/check-membership-for-user", 404) in env.validated


async def test_a_user_not_in_the_org_is_sent_to_the_public_check(world: World) -> None:
    answer = await call(world.env, "/orgs/acme/members/alice", world.carol)
    assert answer.status == 302
    assert answer.headers["Location"] == f"{world.env.url}/orgs/acme/public_members/alice"
    assert (await call(world.env, "/orgs/acme/members/alice", world.alice)).status == 204


async def test_installation_tokens_expire(world: World, keys: Keys) -> None:
    env = world.env
    token = await installation_token(env, keys)
    env.wall.now += 3599
    assert (await call(env, "/orgs/acme/members/alice", token)).status == 204
    env.wall.now += 1
    expired = await call(env, "/orgs/acme/members/alice", token)
    assert (expired.status, expired.body["message"]) == (401, "Bad credentials")
    fresh = await installation_token(env, keys)
    assert (await call(env, "/orgs/acme/members/alice", fresh)).status == 204
    env.fake.expire_installation_tokens()
    assert (await call(env, "/orgs/acme/members/alice", fresh)).status == 401


def _unsigned(now: float) -> str:
    return jwt.encode(
        {"iat": int(now), "exp": int(now) + 60, "iss": str(APP_ID)},
        "a shared secret that is long enough for HS256",
        "HS256",
    )


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("another key", "A JSON web token could not be decoded"),
        ("HS256", "A JSON web token could not be decoded"),
        ("not a JWT", "A JSON web token could not be decoded"),
        ("expired", "'Expiration time' claim ('exp') must be a numeric value"),
        ("eleven minutes", "'Expiration time' claim ('exp') is too far in the future"),
        ("issued in the future", "'Issued at' claim ('iat') must be an Integer"),
        ("another app", "Integration not found"),
    ],
)
async def test_app_jwts_github_refuses(world: World, keys: Keys, case: str, message: str) -> None:
    env = world.env
    env.fake.set_app(APP_ID, keys.public_pem)
    env.fake.install("acme")
    now = env.wall.now
    makers: dict[str, Callable[[], str]] = {
        "another key": lambda: app_jwt(keys.other, now),
        "HS256": lambda: _unsigned(now),
        "not a JWT": lambda: "not.a.jwt",
        "expired": lambda: app_jwt(keys.private, now - 600),
        "eleven minutes": lambda: app_jwt(keys.private, now, lifetime=660),
        "issued in the future": lambda: app_jwt(keys.private, now + 600),
        "another app": lambda: app_jwt(keys.private, now, iss=str(APP_ID + 1)),
    }
    token = makers[case]()
    refused = await call(env, "/orgs/acme/installation", token)
    assert refused.status == 401
    assert refused.body["message"].startswith(message)


async def test_the_app_is_known_by_its_id_or_client_id(world: World, keys: Keys) -> None:
    env = world.env
    env.fake.set_app(APP_ID, keys.public_pem)
    env.fake.install("acme")
    for iss in (str(APP_ID), CID2):
        good = app_jwt(keys.private, env.wall.now, iss=iss)
        assert (await call(env, "/orgs/acme/installation", good)).status == 200
    # Octokit writes iss as a number, which PyJWT's encode refuses: sign the claims as they are
    now = int(env.wall.now)
    claims = json.dumps({"iat": now - 60, "exp": now + 480, "iss": APP_ID}).encode()
    numeric = jwt.PyJWS().encode(claims, keys.private, algorithm="RS256")
    assert (await call(env, "/orgs/acme/installation", numeric)).status == 200


async def test_no_app_set_means_no_jwt_is_good(world: World, keys: Keys) -> None:
    refused = await call(world.env, "/orgs/acme/installation", app_jwt(keys.private, world.env.wall.now))
    assert (refused.status, refused.body["message"]) == (401, "Integration not found")


# ---------------------------------------------------------------------------------------------------
# SAML single sign-on


async def test_an_sso_organisation_refuses_an_unauthorized_token_with_the_url(world: World) -> None:
    env = world.env
    env.fake.add_org("secure", 200, sso=True)
    env.fake.add_member("secure", "alice")
    env.fake.add_team("secure", "ops")
    env.fake.add_team_member("secure", "ops", "alice")
    refused = await call(env, "/user/memberships/orgs/secure", world.alice)
    assert refused.status == 403
    kind, _, url = refused.headers["X-GitHub-SSO"].partition("; url=")
    assert kind == "required"
    assert url.startswith(f"{env.url}/orgs/secure/sso?authorization_request=")
    again = await call(env, "/orgs/secure/teams/ops/memberships/alice", world.alice)
    assert again.headers["X-GitHub-SSO"] == refused.headers["X-GitHub-SSO"]  # one request per token
    listed = await call(env, "/user/orgs", world.alice)
    assert [o["login"] for o in listed.body] == ["acme"]
    assert listed.headers["X-GitHub-SSO"] == "partial-results; organizations=200"
    assert (await call(env, "/user/memberships/orgs/secure", world.carol)).status == 404  # no member
    env.fake.add_repo("secure/vault")
    env.fake.set_role("secure/vault", "alice", "read")
    vault = await call(env, "/repos/secure/vault", world.alice)
    assert (vault.status, vault.headers["X-GitHub-SSO"]) == (403, refused.headers["X-GitHub-SSO"])
    env.fake.authorize_sso(world.alice, "SECURE")
    assert (await call(env, "/user/memberships/orgs/secure", world.alice)).status == 200
    assert (await call(env, "/repos/secure/vault", world.alice)).status == 200
    assert "X-GitHub-SSO" not in (await call(env, "/user/orgs", world.alice)).headers
    assert (await call(env, "/user/memberships/orgs/secure", world.bare)).status == 403  # per token


# ---------------------------------------------------------------------------------------------------
# Rate limits


async def test_every_answer_carries_the_rate_limit(world: World) -> None:
    env = world.env
    first = await call(env, "/user/memberships/orgs/acme", world.alice)
    second = await call(env, "/user/memberships/orgs/nowhere", world.alice)
    other = await call(env, "/user/orgs", world.carol)
    reset = str(int(env.wall.now) + 3600)
    assert {k: v for k, v in first.headers.items() if k.startswith("X-RateLimit")} == {
        "X-RateLimit-Limit": "5000",
        "X-RateLimit-Remaining": "4999",
        "X-RateLimit-Reset": reset,
        "X-RateLimit-Used": "1",
        "X-RateLimit-Resource": "core",
    }
    assert (second.headers["X-RateLimit-Remaining"], second.headers["X-RateLimit-Used"]) == ("4998", "2")
    assert other.headers["X-RateLimit-Remaining"] == "4999"  # each user has a budget
    for _ in range(2):  # asking what is left costs nothing
        left = await call(env, "/rate_limit", world.alice)
        assert left.body["rate"] == {"limit": 5000, "remaining": 4998, "reset": int(reset), "used": 2}
    assert ("rate-limit/get", 200) in env.validated


@pytest.mark.parametrize("status", [403, 429])
async def test_an_exhausted_budget_refuses_until_the_reset(world: World, status: int) -> None:
    env = world.env
    env.fake.exhaust_rate_limit(reset_in=120, status=status)
    refused = await call(env, "/user/memberships/orgs/acme", world.alice)
    assert refused.status == status
    assert refused.body["message"].startswith("API rate limit exceeded for user ID 1.")
    assert (refused.headers["X-RateLimit-Remaining"], refused.headers["X-RateLimit-Reset"]) == (
        "0",
        str(int(env.wall.now) + 120),
    )
    assert "Retry-After" not in refused.headers
    left = await call(env, "/rate_limit", world.alice)  # answered, and says so
    assert (left.status, left.body["rate"]["remaining"]) == (200, 0)
    env.wall.now += 119
    assert (await call(env, "/user/memberships/orgs/acme", world.alice)).status == status
    env.wall.now += 1
    restored = await call(env, "/user/memberships/orgs/acme", world.alice)
    assert (restored.status, restored.headers["X-RateLimit-Remaining"]) == (200, "4999")


async def test_a_secondary_limit_says_retry_after(world: World) -> None:
    env = world.env
    env.fake.exhaust_rate_limit(reset_in=30, status=429, retry_after=30)
    refused = await call(env, "/repos/acme/www", world.alice)
    assert (refused.status, refused.headers["Retry-After"]) == (429, "30")
    assert "secondary rate limit" in refused.body["message"]


async def test_the_outage_switch_applies_to_the_membership_api(world: World) -> None:
    env = world.env
    env.fake.outage = 502
    down = await call(env, "/user/memberships/orgs/acme", world.alice)
    assert (down.status, "X-RateLimit-Remaining" in down.headers) == (502, False)
    env.fake.outage = None
    assert (await call(env, "/user/memberships/orgs/acme", world.alice)).status == 200
    assert env.fake.count("orgs/get-membership-for-authenticated-user") == 2


# ---------------------------------------------------------------------------------------------------
# The call log


async def test_calls_are_counted_per_operation_and_target_without_tokens(world: World, keys: Keys) -> None:
    env = world.env
    await call(env, "/user/memberships/orgs/acme", world.alice)
    await call(env, "/user/memberships/orgs/acme", world.bob)
    await call(env, "/orgs/acme/teams/platform/memberships/alice", world.alice)
    token = await installation_token(env, keys)
    await call(env, "/orgs/acme/members/ALICE", token)
    fake = env.fake
    assert fake.count("orgs/get-membership-for-authenticated-user", target="acme") == 2
    assert fake.count("teams/get-membership-for-user-in-org", target="acme/platform/alice") == 1
    assert fake.count(*ORG_OPS) == 4
    assert fake.count("apps/create-installation-access-token") == 1
    assert fake.count() == len(fake.calls) == 5
    assert {c.client_id for c in fake.calls} == {CID, CID2}  # the users' OAuth App, the GitHub App
    logged = repr(fake.calls)
    assert all(secret not in logged for secret in (world.alice, world.bob, token))


# ---------------------------------------------------------------------------------------------------
# GHES: the same API under /api/v3, checked against GHES 3.19's description


async def test_ghes_serves_the_same_api_under_api_v3(aiohttp_server: Any, keys: Keys) -> None:
    async with open_env(aiohttp_server, Schemas("ghes-3.19.membership.json")) as env:
        token = env.fake.add_token("alice", 1, ["read:org"])
        env.fake.add_org("acme")
        env.fake.add_member("acme", "alice")
        env.fake.add_team("acme", "sre")
        env.fake.add_team_member("acme", "sre", "alice")
        env.fake.add_repo("acme/www", private=False)
        member = await call(env, "/user/memberships/orgs/acme", token, prefix="/api/v3")
        assert member.body["organization_url"] == f"{env.url}/api/v3/orgs/acme"
        assert (await call(env, "/user/teams", token, prefix="/api/v3")).status == 200
        assert (await call(env, "/repos/acme/www", token, prefix="/api/v3")).status == 200
        installed = await installation_token(env, keys)
        assert (await call(env, "/orgs/acme/members/alice", installed, prefix="/api/v3")).status == 204
        assert len(env.validated) == 5
