"""GitHub's answers to the OAuth Apps API, read strictly: each operation's parser gives None for a 404
(not this app's token) and otherwise a value that fits GitHub's schema, or raises GitHubUnavailable
(an answer off the schema is an outage, never passed on). Pure functions: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from ..errors import GitHubUnavailable
from ..identity import Identity, checked_identity, well_formed_token

_PERMISSION = re.compile(r"[a-z0-9_]{1,100}")
_LEVELS = frozenset({"read", "write", "admin"})


@dataclass(frozen=True, slots=True)
class Reply:
    """What GitHub answered to a REST call made with a caller's token: status, headers, JSON body."""

    status: int
    headers: Mapping[str, str]
    body: object


@dataclass(frozen=True, slots=True)
class Answer:
    """What GitHub said: a status and its JSON body (None when empty). Short-lived: never stored."""

    status: int
    body: object


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token GitHub just minted (reset or scoped): shown once, never logged."""

    token: str = field(repr=False)
    identity: Identity
    permissions: Mapping[str, str]  # scoped tokens: the installation's permissions; {} otherwise
    repositories: tuple[str, ...]  # scoped tokens limited to selected repositories, else ()


def off_schema(what: str, status: int = 200) -> GitHubUnavailable:
    return GitHubUnavailable(f"GitHub's answer did not fit its schema: {what}", status=status)


def _timestamp(value: object) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise off_schema("expires_at is not an ISO-8601 time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise off_schema("expires_at is not an ISO-8601 time") from None
    if moment.tzinfo is None:
        raise off_schema("expires_at has no time zone")
    return moment.timestamp()


# ---------------------------------------------------------------------------------------------------
# Parsers of each operation's answer: None for a 404 (not this app's token), else a strictly valid value


def _authorization(answer: Answer) -> dict[str, object]:
    if answer.status != 200 or not isinstance(answer.body, dict):
        raise off_schema(f"a {answer.status} answer without an authorization object", answer.status)
    return answer.body


def _identity(body: Mapping[str, object], client_id: str) -> Identity:
    """The identity in an `authorization` object."""
    user = body.get("user")
    if not isinstance(user, dict):
        raise off_schema("user is not an object")
    if "scopes" not in body:
        raise off_schema("scopes is missing")
    scopes = [] if body["scopes"] is None else body["scopes"]
    expires_at = _timestamp(body.get("expires_at"))
    try:
        return checked_identity(user.get("login"), user.get("id"), scopes, expires_at, client_id)
    except ValueError as exc:
        raise off_schema(str(exc)) from None


def checked(client_id: str, answer: Answer) -> Identity | None:
    return None if answer.status == 404 else _identity(_authorization(answer), client_id)


def deleted(_client_id: str, answer: Answer) -> bool | None:
    if answer.status == 404:
        return None
    if answer.status != 204:
        raise off_schema(f"a {answer.status} answer where GitHub answers 204", answer.status)
    return True


def issued(requested: tuple[str, ...] = (), *, scoped: bool) -> Callable[[str, Answer], IssuedToken | None]:
    """The parser of a reset or scope answer. GitHub names no repositories in it (only
    `repository_selection`), so a token limited to selected repositories lists the ones requested."""

    def parse(client_id: str, answer: Answer) -> IssuedToken | None:
        if answer.status == 404:
            return None
        body = _authorization(answer)
        token = body.get("token")
        if not well_formed_token(token):
            raise off_schema("token is not a token (a b64token of at most 255 characters)")
        identity = _identity(body, client_id)
        installation = body.get("installation")
        if installation is None and not scoped:
            return IssuedToken(token, identity, MappingProxyType({}), ())
        if not isinstance(installation, dict):
            raise off_schema("installation is not an object")
        permissions = installation.get("permissions")
        if not isinstance(permissions, dict) or not all(
            isinstance(k, str) and _PERMISSION.fullmatch(k) and v in _LEVELS for k, v in permissions.items()
        ):
            raise off_schema("installation.permissions is not a map of permissions to read/write/admin")
        selection = installation.get("repository_selection")
        if selection not in ("all", "selected"):
            raise off_schema("installation.repository_selection is not 'all' or 'selected'")
        repositories = requested if selection == "selected" else ()
        return IssuedToken(token, identity, MappingProxyType(dict(permissions)), repositories)

    return parse
