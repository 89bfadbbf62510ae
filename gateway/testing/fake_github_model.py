"""The fake GitHub's records (tokens, accounts, calls), the JSON bodies GitHub answers with, and the
rules of a scope-token request.

Pure values and functions: `gateway.testing.fake_github` keeps the registry and serves HTTP with them.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from types import MappingProxyType

from aiohttp import web

__all__ = ["Call", "FakeAccount", "FakeToken", "Restriction"]

DOCS = "https://docs.github.com/rest/apps/oauth-applications"
_ANCHORS = {
    "apps/check-token": "#check-a-token",
    "apps/reset-token": "#reset-a-token",
    "apps/delete-token": "#delete-an-app-token",
    "apps/delete-authorization": "#delete-an-app-authorization",
    "apps/check-authorization": "#check-an-authorization",
    "apps/reset-authorization": "#reset-an-authorization",
    "apps/revoke-authorization-for-application": "#revoke-an-authorization-for-an-application",
    "apps/revoke-grant-for-application": "#revoke-a-grant-for-an-application",
}
_LEVELS = frozenset({"read", "write", "admin"})  # of a permission
_DOCS = "https://docs.github.com/rest/"
_DOC_URLS = {
    "apps/scope-token": _DOCS + "apps/apps#create-a-scoped-access-token",
    "orgs/get-membership-for-authenticated-user": _DOCS
    + "orgs/members#get-an-organization-membership-for-the-authenticated-user",
    "orgs/list-for-authenticated-user": _DOCS + "orgs/orgs#list-organizations-for-the-authenticated-user",
    "orgs/check-membership-for-user": _DOCS + "orgs/members#check-organization-membership-for-a-user",
    "teams/list-for-authenticated-user": _DOCS + "teams/teams#list-teams-for-the-authenticated-user",
    "teams/get-membership-for-user-in-org": _DOCS + "teams/members#get-team-membership-for-a-user",
    "repos/get": _DOCS + "repos/repos#get-a-repository",
    "repos/get-collaborator-permission-level": _DOCS
    + "collaborators/collaborators#get-repository-permissions-for-a-user",
    "apps/get-org-installation": _DOCS
    + "apps/apps#get-an-organization-installation-for-the-authenticated-app",
    "apps/get-repo-installation": _DOCS + "apps/apps#get-a-repository-installation-for-the-authenticated-app",
    "apps/create-installation-access-token": _DOCS
    + "apps/apps#create-an-installation-access-token-for-an-app",
    "rate-limit": _DOCS + "using-the-rest-api/rate-limits-for-the-rest-api",
    "sso": "https://docs.github.com/articles/authenticating-to-a-github-organization-with-saml-single-sign-on/",
}


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Call:
    """One call the fake received: GitHub's operationId, the app (the token's, on the REST API), when,
    the token's SHA-256, and on the REST API what it asked about (the path's parameters, e.g.
    `acme/sre/alice`)."""

    op: str
    client_id: str
    at: float
    token_sha256: str | None
    target: str | None = None


@dataclass(frozen=True, slots=True)
class FakeAccount:
    """A user or organization a GitHub App is installed on: a target scoped tokens can name."""

    login: str
    id: int
    repositories: Mapping[str, int]  # name → id
    type: str = "Organization"
    permissions: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({"metadata": "read"}))


@dataclass(frozen=True, slots=True)
class Restriction:
    """What a scoped token may reach upstream: one account, these repositories (empty: all of the
    account's), with these permissions."""

    account: str
    account_id: int
    repositories: tuple[str, ...]
    permissions: Mapping[str, str]


@dataclass(slots=True)
class FakeToken:
    """A token the fake issued: to whom, by which app, with which scopes, until when, limited to what."""

    id: int
    login: str
    user_id: int
    scopes: tuple[str, ...]
    client_id: str
    created_at: float
    expires_at: float | None
    revoked: bool = False
    restriction: Restriction | None = None  # scoped tokens only
    updated_at: float | None = None  # reset: when


# ---------------------------------------------------------------------------------------------------
# GitHub's answer bodies


def doc_url(op: str | None) -> str:
    return _DOC_URLS.get(op or "", DOCS + _ANCHORS.get(op or "", ""))


def simple_user(site: str, api: str, login: str, user_id: int, kind: str = "User") -> dict[str, object]:
    """GitHub's `simple-user` object."""
    user_api = f"{api}/users/{login}"
    node_id = base64.b64encode(f"04:{kind}{user_id}".encode()).decode()
    return {
        "login": login,
        "id": user_id,
        "node_id": node_id,
        "avatar_url": f"{site}/avatars/u/{user_id}",
        "gravatar_id": "",
        "url": user_api,
        "html_url": f"{site}/{login}",
        "followers_url": f"{user_api}/followers",
        "following_url": f"{user_api}/following{{/other_user}}",
        "gists_url": f"{user_api}/gists{{/gist_id}}",
        "starred_url": f"{user_api}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{user_api}/subscriptions",
        "organizations_url": f"{user_api}/orgs",
        "repos_url": f"{user_api}/repos",
        "events_url": f"{user_api}/events{{/privacy}}",
        "received_events_url": f"{user_api}/received_events",
        "type": kind,
        "site_admin": False,
    }


def authorization(
    site: str, api: str, token: str, entry: FakeToken, account: FakeAccount | None
) -> dict[str, object]:
    """The `authorization` object GitHub answers with (it echoes the token back); `account` is the
    target of a scoped token."""
    installation: dict[str, object] | None = None
    if entry.restriction is not None and account is not None:
        installation = {
            "permissions": dict(entry.restriction.permissions),
            "repository_selection": "selected" if entry.restriction.repositories else "all",
            "single_file_name": None,
            "has_multiple_single_files": False,
            "single_file_paths": [],
            "repositories_url": f"{api}/user/repos",
            "account": simple_user(site, api, account.login, account.id, account.type),
        }
    return {
        "id": entry.id,
        "url": f"{api}/authorizations/{entry.id}",
        "scopes": list(entry.scopes),
        "token": token,
        "token_last_eight": token[-8:],
        "hashed_token": sha256(token),
        "app": {"client_id": entry.client_id, "name": f"Fake app {entry.client_id}", "url": site},
        "note": None,
        "note_url": None,
        "updated_at": iso(entry.updated_at or entry.created_at),
        "created_at": iso(entry.created_at),
        "fingerprint": None,
        "expires_at": None if entry.expires_at is None else iso(entry.expires_at),
        "user": simple_user(site, api, entry.login, entry.user_id),
        "installation": installation,
    }


def error(status: int, message: str, op: str | None = None) -> web.Response:
    """GitHub's basic-error body."""
    return web.json_response({"message": message, "documentation_url": doc_url(op)}, status=status)


def validation_failed(
    op: str | None,
    *,
    field: str | None = None,
    code: str = "missing_field",
    message: str | None = None,
    resource: str = "OauthAccess",
) -> web.Response:
    """GitHub's validation-error body (422)."""
    body: dict[str, object] = {"message": "Validation Failed", "documentation_url": doc_url(op)}
    if field is not None:
        item: dict[str, object] = {"resource": resource, "field": field, "code": code}
        if message is not None:
            item["message"] = message
        body["errors"] = [item]
    return web.json_response(body, status=422)


def outage(status: int, op: str) -> web.Response:
    """What GitHub answers when it is in trouble with `status`."""
    if status == 422:
        return validation_failed(op)
    if status == 500:
        return web.json_response({"message": "Server Error"}, status=500)
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return (
        error(status, phrase, op) if status < 500 else web.json_response({"message": phrase}, status=status)
    )


# ---------------------------------------------------------------------------------------------------
# Scoped tokens


def scope_request(
    accounts: Iterable[FakeAccount], op: str, body: Mapping[str, object]
) -> Restriction | web.Response:
    """What a scope-token request asks for, among the accounts the app is installed on; or GitHub's
    404/422 refusal of it."""
    target, target_id = body.get("target"), body.get("target_id")
    names, ids = body.get("repositories"), body.get("repository_ids")
    permissions = body.get("permissions", {})
    if target is None and target_id is None:
        return validation_failed(op, field="target", message="target or target_id is required")
    if target is not None and not isinstance(target, str):
        return validation_failed(op, field="target", code="invalid")
    if target_id is not None and type(target_id) is not int:
        return validation_failed(op, field="target_id", code="invalid")
    if names is not None and ids is not None:
        why = "repositories may not be specified with repository_ids"
        return validation_failed(op, field="repositories", code="invalid", message=why)
    if not isinstance(permissions, dict) or not all(
        isinstance(level, str) and level in _LEVELS for level in permissions.values()
    ):
        why = "permission levels are read, write or admin"
        return validation_failed(op, field="permissions", code="invalid", message=why)
    if isinstance(target, str):
        account = next((a for a in accounts if a.login.casefold() == target.casefold()), None)
    else:
        account = next((a for a in accounts if a.id == target_id), None)
    if account is None:
        return error(404, "Not Found", op)
    if target_id is not None and account.id != target_id:
        return validation_failed(op, field="target_id", code="invalid", message="target_id is not target's")
    repos = _repositories_of(account, names, ids)
    if repos is None:
        why = f"expected repositories of {account.login}"
        name = "repositories" if ids is None else "repository_ids"
        return validation_failed(op, field=name, code="invalid", message=why)
    granted = dict(permissions) or dict(account.permissions)
    return Restriction(account.login, account.id, repos, MappingProxyType(granted))


def _repositories_of(account: FakeAccount, names: object, ids: object) -> tuple[str, ...] | None:
    """The repository names a request selects (() for all of the account's); None: not all are its."""
    by_name = {name.casefold(): name for name in account.repositories}
    by_id = {repo_id: name for name, repo_id in account.repositories.items()}
    if names is not None:
        if not isinstance(names, list) or not all(
            isinstance(n, str) and n.casefold() in by_name for n in names
        ):
            return None
        return tuple(by_name[n.casefold()] for n in names)
    if ids is not None:
        if not isinstance(ids, list) or not all(type(i) is int and i in by_id for i in ids):
            return None
        return tuple(by_id[i] for i in ids)
    return ()
