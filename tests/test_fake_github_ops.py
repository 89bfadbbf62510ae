"""Reset, delete, delete grant and scope: GitHubClient against FakeGitHub over real sockets, every
request and answer checked against GitHub's OpenAPI description (see tests/test_fake_github.py)."""

from __future__ import annotations

import traceback
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gateway.config import UpstreamTokenConfig
from gateway.errors import (
    AppCredentialsRejected,
    CheckMethodUnsupported,
    GitHubUnavailable,
    GitHubValidationFailed,
    TargetNotFound,
)
from gateway.github import GitHubClient
from gateway.identity import Identity
from gateway.testing.fake_github import FakeGitHub, Restriction

from .support.github import CID, CID2, SECRET, SECRET2
from .support.openapi import OPENAPI, Env, Schemas, open_env

pytestmark = pytest.mark.skipif(
    not OPENAPI.is_dir(), reason=f"GitHub's OpenAPI description is not at {OPENAPI}"
)

EIGHT_HOURS = 8 * 3600


@pytest.fixture
async def env(aiohttp_server: Any, schemas: Schemas) -> AsyncIterator[Env]:
    async with open_env(aiohttp_server, schemas) as env:
        env.fake.add_account("octo-org", 100, {"api": 1, "web": 2, "docs": 3})
        env.fake.add_account("monalisa", 2, ["dotfiles"], type="User", permissions={"contents": "write"})
        yield env


def spec(**fields: Any) -> UpstreamTokenConfig:
    return UpstreamTokenConfig.model_validate(fields)


def app_client(env: Env, **cfg: Any) -> GitHubClient:
    """The GitHub client of the GitHub App (CID2), whose user tokens can be scoped."""
    return env.client(apps=[(CID2, SECRET2)], **cfg)


def ops(env: Env) -> list[str]:
    return [call.op for call in env.fake.calls]


def text_of(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(getattr(exc, "details", None))


# ---------------------------------------------------------------------------------------------------
# Reset


@pytest.mark.parametrize("prefix", ["", "/api/v3"])
async def test_reset_gives_a_new_token_and_the_old_one_stops_working(env: Env, prefix: str) -> None:
    old = env.fake.add_token("alice", 42, ["repo"])
    client = env.client(prefix=prefix)
    env.wall.now += 60
    issued = await client.reset(old)
    assert issued is not None
    new = issued.token
    assert new.startswith("gho_") and new != old and len(new) == len(old)
    assert issued.identity == Identity("alice", 42, ("repo",), None, CID)
    assert (dict(issued.permissions), issued.repositories) == ({}, ())
    assert new not in repr(issued)
    assert await client.check(old) is None
    assert await client.check(new) == issued.identity
    assert await client.reset(old) is None  # the old one is gone for every operation
    entry = env.fake.lookup(old)
    assert entry is not None and entry.revoked
    assert ops(env) == ["apps/reset-token", "apps/check-token", "apps/check-token", "apps/reset-token"]
    assert ("apps/reset-token", "request") in env.validated and ("apps/reset-token", 200) in env.validated


async def test_reset_keeps_a_github_app_tokens_prefix_and_expiry(env: Env) -> None:
    old = env.fake.add_token("monalisa", 2, client_id=CID2)
    issued = await app_client(env).reset(old)
    assert issued is not None and issued.token.startswith("ghu_")
    assert issued.identity.expires_at == env.wall.now + EIGHT_HOURS


async def test_reset_asks_the_apps_in_order(env: Env) -> None:
    token = env.fake.add_token("bob", 7, client_id=CID2)
    client = env.client(apps=[(CID, SECRET), (CID2, SECRET2)])
    issued = await client.reset(token)
    assert issued is not None and issued.identity.client_id == CID2
    assert [(c.op, c.client_id) for c in env.fake.calls] == [
        ("apps/reset-token", CID),
        ("apps/reset-token", CID2),
    ]
    assert await client.reset(token, client_id=CID) is None  # that app does not know the new one either
    assert ("apps/reset-token", 404) in env.validated


async def test_unknown_token_and_unconfigured_app(env: Env) -> None:
    client = env.client()
    assert await client.reset("gho_never_issued") is None
    with pytest.raises(ValueError, match="not a configured app"):
        await client.reset("gho_never_issued", client_id=CID2)


# ---------------------------------------------------------------------------------------------------
# Delete a token, delete a grant


@pytest.mark.parametrize("prefix", ["", "/api/v3"])
async def test_delete_revokes_the_token(env: Env, prefix: str) -> None:
    token = env.fake.add_token("alice", 42)
    other = env.fake.add_token("alice", 42)
    client = env.client(prefix=prefix)
    assert await client.delete(token) is True
    assert await client.check(token) is None
    assert await client.check(other) is not None  # only that token
    assert await client.delete(token) is False
    assert ("apps/delete-token", 204) in env.validated and ("apps/delete-token", 404) in env.validated


async def test_delete_grant_revokes_every_token_of_that_user_for_that_app(env: Env) -> None:
    first = env.fake.add_token("alice", 42, client_id=CID2)
    second = env.fake.add_token("alice", 42, client_id=CID2)
    elsewhere = env.fake.add_token("alice", 42, ["repo"], client_id=CID)
    bobs = env.fake.add_token("bob", 7, client_id=CID2)
    client = app_client(env)
    scoped = await client.scoped(second, spec(target="octo-org"))
    assert scoped is not None
    assert await client.delete_grant(first) is True
    for token in (first, second, scoped.token):
        assert await client.check(token) is None
    assert await client.check(bobs) is not None
    both = env.client(apps=[(CID, SECRET), (CID2, SECRET2)])
    identity = await both.check(elsewhere)  # the other app's grant stands
    assert identity is not None and identity.client_id == CID
    assert await client.delete_grant(first) is False
    assert ("apps/delete-authorization", "request") in env.validated
    assert ("apps/delete-authorization", 204) in env.validated


async def test_wrong_secret_for_every_operation(env: Env) -> None:
    token = env.fake.add_token("alice", 42, client_id=CID2)
    client = env.client(apps=[(CID2, "wrong")])
    calls = [
        client.reset(token),
        client.delete(token),
        client.delete_grant(token),
        client.scoped(token, spec(target="octo-org")),
    ]
    for call in calls:
        with pytest.raises(AppCredentialsRejected, match=CID2) as caught:
            await call
        assert token not in text_of(caught.value)
    assert await app_client(env).check(token) is not None  # nothing happened to it
    assert [status for _, status in env.validated if status != "request"] == [401, 401, 401, 401, 200]


# ---------------------------------------------------------------------------------------------------
# Scoped tokens


async def test_scoped_token_from_a_github_app_token(env: Env) -> None:
    token = env.fake.add_token("monalisa", 2, client_id=CID2)
    client = app_client(env)
    wanted = spec(target="octo-org", repositories=["api", "docs"], permissions={"contents": "read"})
    issued = await client.scoped(token, wanted)
    assert issued is not None
    assert issued.token.startswith("ghu_") and issued.token != token and issued.token not in repr(issued)
    assert issued.identity == Identity("monalisa", 2, (), env.wall.now + EIGHT_HOURS, CID2)
    assert dict(issued.permissions) == {"contents": "read"}
    assert issued.repositories == ("api", "docs")
    entry = env.fake.lookup(issued.token)
    assert entry is not None and entry.restriction == Restriction(
        "octo-org", 100, ("api", "docs"), {"contents": "read"}
    )
    assert await client.check(issued.token) == issued.identity  # a valid token of the same user
    assert await client.check(token) is not None  # the original stays valid
    assert ("apps/scope-token", "request") in env.validated and ("apps/scope-token", 200) in env.validated


async def test_scoped_by_ids_and_to_every_repository(env: Env) -> None:
    token = env.fake.add_token("monalisa", 2, client_id=CID2)
    client = app_client(env)
    by_ids = await client.scoped(token, spec(target_id=100, repository_ids=[2]))
    assert by_ids is not None and by_ids.repositories == ("2",)
    entry = env.fake.lookup(by_ids.token)
    assert entry is not None and entry.restriction is not None
    assert entry.restriction.repositories == ("web",)
    everything = await client.scoped(token, spec(target="MonaLisa"))  # logins are case-insensitive
    assert everything is not None and everything.repositories == ()
    assert dict(everything.permissions) == {"contents": "write"}  # the installation's own
    entry = env.fake.lookup(everything.token)
    assert entry is not None and entry.restriction == Restriction("monalisa", 2, (), {"contents": "write"})


async def test_scoped_from_an_oauth_app_token_is_refused_without_backing_off(env: Env) -> None:
    token = env.fake.add_token("alice", 42, ["repo"])
    client = env.client()
    with pytest.raises(GitHubValidationFailed) as caught:
        await client.scoped(token, spec(target="octo-org"))
    error = caught.value
    assert error.status == 422 and isinstance(error.details, dict)
    assert error.details["errors"] == [
        {
            "resource": "OauthAccess",
            "field": "access_token",
            "code": "invalid",
            "message": "an OAuth App cannot create scoped tokens: expected a GitHub App's user access token",
        }
    ]
    assert "access_token invalid" in str(error) and token not in text_of(error)
    assert await client.check(token) is not None  # GitHub was not backed off
    assert ("apps/scope-token", 422) in env.validated


async def test_a_scoped_token_cannot_be_scoped_again(env: Env) -> None:
    token = env.fake.add_token("monalisa", 2, client_id=CID2)
    client = app_client(env)
    issued = await client.scoped(token, spec(target="octo-org"))
    assert issued is not None
    with pytest.raises(GitHubValidationFailed, match="access_token"):
        await client.scoped(issued.token, spec(target="octo-org"))


async def test_scoped_to_an_unknown_target_names_it(env: Env) -> None:
    token = env.fake.add_token("monalisa", 2, client_id=CID2)
    client = env.client(apps=[(CID, SECRET), (CID2, SECRET2)])
    with pytest.raises(TargetNotFound, match="no target 'nobody' "):
        await client.scoped(token, spec(target="nobody"))
    with pytest.raises(TargetNotFound, match="no target_id 999 "):
        await client.scoped(token, spec(target_id=999))
    assert ("apps/scope-token", 404) in env.validated
    # the first app did not know the token; the second did, and said the target was not found
    assert env.fake.count("apps/scope-token") == env.fake.count("apps/check-token") == 4
    assert await client.scoped("ghu_never_issued", spec(target="nobody")) is None


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"target": "octo-org", "repositories": ["api", "not-theirs"]}, "repositories"),
        ({"target": "octo-org", "repository_ids": [1, 999]}, "repository_ids"),
        ({"target": "monalisa", "repositories": ["api"]}, "repositories"),
        ({"target": "octo-org", "target_id": 2}, "target_id"),
        ({"target": "octo-org", "repositories": ["api"], "repository_ids": [1]}, "repositories"),
    ],
    ids=["unknown repo", "unknown repo id", "another account's repo", "target_id mismatch", "names and ids"],
)
async def test_scoped_to_what_the_target_does_not_have_is_refused(
    env: Env, fields: dict[str, Any], field: str
) -> None:
    token = env.fake.add_token("monalisa", 2, client_id=CID2)
    with pytest.raises(GitHubValidationFailed) as caught:
        await app_client(env).scoped(token, spec(**fields))
    assert isinstance(caught.value.details, dict)
    errors = caught.value.details["errors"]
    assert isinstance(errors, list) and errors[0]["field"] == field


async def test_scoped_without_a_target_is_refused(env: Env) -> None:
    token = env.fake.add_token("monalisa", 2, client_id=CID2)
    targetless = UpstreamTokenConfig.model_construct(repositories=("api",))  # config would refuse it
    with pytest.raises(GitHubValidationFailed, match="target or target_id is required"):
        await app_client(env).scoped(token, targetless)


async def test_scoped_with_an_unknown_app_or_token_is_none(env: Env) -> None:
    token = env.fake.add_token("monalisa", 2, client_id=CID2)
    assert await env.client().scoped(token, spec(target="octo-org")) is None
    both = env.client(apps=[(CID, SECRET), (CID2, SECRET2)])
    issued = await both.scoped(token, spec(target="octo-org"))
    assert issued is not None and issued.identity.client_id == CID2


async def test_scoped_uses_the_body_form_even_on_an_old_ghes(env: Env) -> None:
    env.fake.legacy_paths = True
    token = env.fake.add_token("monalisa", 2, client_id=CID2)
    client = app_client(env, prefix="/api/v3", check_method="legacy")
    issued = await client.scoped(token, spec(target="octo-org", permissions={"issues": "write"}))
    assert issued is not None
    assert await client.check(issued.token) == issued.identity  # the path form reads it too
    assert ops(env) == ["apps/scope-token", "apps/check-authorization"]


async def test_scoped_token_expires_with_its_parent(env: Env) -> None:
    token = env.fake.add_token("monalisa", 2, client_id=CID2)
    client = app_client(env)
    issued = await client.scoped(token, spec(target="octo-org"))
    assert issued is not None
    env.wall.now += EIGHT_HOURS
    assert await client.check(issued.token) is None


# ---------------------------------------------------------------------------------------------------
# The deprecated path forms


@pytest.mark.parametrize("prefix", ["", "/api/v3"])
async def test_legacy_forms_on_an_old_ghes(env: Env, prefix: str) -> None:
    env.fake.legacy_paths = True
    client = env.client(prefix=prefix, check_method="legacy")
    old = env.fake.add_token("alice", 42, ["repo"], token="gho_ab/cd+ef=gh")  # b64token characters
    issued = await client.reset(old)
    assert issued is not None and issued.identity == Identity("alice", 42, ("repo",), None, CID)
    assert await client.check(old) is None
    assert await client.check(issued.token) is not None
    assert await client.delete(issued.token) is True
    assert await client.check(issued.token) is None
    first, second = env.fake.add_token("bob", 7), env.fake.add_token("bob", 7)
    assert await client.delete_grant(first) is True
    assert await client.check(second) is None
    assert await client.delete(first) is False
    assert ops(env) == [
        "apps/reset-authorization",
        "apps/check-authorization",
        "apps/check-authorization",
        "apps/revoke-authorization-for-application",
        "apps/check-authorization",
        "apps/revoke-grant-for-application",
        "apps/check-authorization",
        "apps/revoke-authorization-for-application",
    ]
    assert ("apps/revoke-grant-for-application", "request") in env.validated  # no body sent
    assert ("apps/revoke-grant-for-application", 204) in env.validated


@pytest.mark.parametrize("prefix", ["", "/api/v3"])
async def test_legacy_forms_removed_on_githubcom(env: Env, prefix: str) -> None:
    token = env.fake.add_token("alice", 42)
    for name in ("reset", "delete", "delete_grant"):
        client = env.client(prefix=prefix, check_method="legacy")
        with pytest.raises(CheckMethodUnsupported, match="does not serve the deprecated path forms"):
            await getattr(client, name)(token)
        assert client.problem is not None and "check_method: token" in client.problem
    assert await env.client(prefix=prefix).check(token) is not None  # all of them answered 404, unchanged
    assert [status for op, status in env.validated if op != "apps/check-token"] == ["request", 404] * 3


# ---------------------------------------------------------------------------------------------------
# Failures


async def test_reset_is_not_repeated_after_a_500(env: Env) -> None:
    token = env.fake.add_token("alice", 42)
    env.fake.outage = 500
    with pytest.raises(GitHubUnavailable) as caught:
        await env.client(retries=3).reset(token)
    assert caught.value.status == 500 and ops(env) == ["apps/reset-token"]


async def test_delete_is_repeated_after_a_502(env: Env) -> None:
    token = env.fake.add_token("alice", 42)
    env.fake.outage = 502
    with pytest.raises(GitHubUnavailable):
        await env.client(retries=2).delete(token)
    assert ops(env) == ["apps/delete-token"] * 3


async def test_outage_422_on_delete_is_validation_failed(env: Env) -> None:
    token = env.fake.add_token("alice", 42)
    env.fake.outage = 422
    client = env.client()
    with pytest.raises(GitHubValidationFailed):
        await client.delete(token)
    env.fake.outage = None
    assert await client.delete(token) is True  # no backoff


# ---------------------------------------------------------------------------------------------------
# Requests our client never sends


async def send(
    env: Env, method: str, path: str, *, app: tuple[str, str] = (CID, SECRET), **kw: Any
) -> tuple[int, Any]:
    headers = {"Authorization": aiohttp.encode_basic_auth(*app)}
    async with env.session.request(method, env.url + path, headers=headers, **kw) as resp:
        return resp.status, await resp.json() if resp.status != 204 else None


@pytest.mark.parametrize(
    ("method", "path"),
    [("PATCH", "/token"), ("DELETE", "/token"), ("DELETE", "/grant"), ("POST", "/token/scoped")],
)
async def test_body_forms_need_an_access_token_and_json(env: Env, method: str, path: str) -> None:
    url = f"/applications/{CID}{path}"
    status, body = await send(env, method, url, json={"token": "gho_x"})
    assert status == 422 and body["errors"][0]["field"] == "access_token"
    assert (await send(env, method, url, data=b"{"))[0] == 400


@pytest.mark.parametrize(
    "permissions",
    [{"contents": "own"}, {"contents": 1}, ["contents"]],
    ids=["unknown level", "a number", "a list"],
)
async def test_scoped_with_an_unknown_permission_level_is_refused(env: Env, permissions: Any) -> None:
    token = env.fake.add_token("monalisa", 2, client_id=CID2)
    body = {"access_token": token, "target": "octo-org", "permissions": permissions}
    status, answer = await send(
        env, "POST", f"/applications/{CID2}/token/scoped", json=body, app=(CID2, SECRET2)
    )
    assert status == 422 and answer["errors"][0]["field"] == "permissions"


async def test_scoped_with_fields_of_the_wrong_type_is_refused(env: Env) -> None:
    token = env.fake.add_token("monalisa", 2, client_id=CID2)
    for body in ({"target": 100}, {"target_id": "100"}, {"target": "octo-org", "repositories": "api"}):
        path, app = f"/applications/{CID2}/token/scoped", (CID2, SECRET2)
        status, _ = await send(env, "POST", path, json={"access_token": token} | body, app=app)
        assert status == 422


def test_accounts_registry() -> None:
    fake = FakeGitHub({CID: SECRET})
    account = fake.add_account("octo-org", 100, ["api", "web"])
    assert list(account.repositories) == ["api", "web"] and len(set(account.repositories.values())) == 2
    assert account.type == "Organization" and dict(account.permissions) == {"metadata": "read"}
    with pytest.raises(ValueError, match="already"):
        fake.add_account("Octo-Org", 101)
    with pytest.raises(ValueError, match="already"):
        fake.add_account("other", 100)
    with pytest.raises(ValueError, match="expected"):
        fake.add_account("other", 101, "api")
    assert fake.lookup("gho_never") is None
