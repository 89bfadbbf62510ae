"""The fake GitHub's apps and tokens: which apps exist (each of one kind, `fake_github_apps`), the
tokens they issued to whom, the refresh tokens of GitHub Apps, and the accounts scoped tokens can
target. Tokens are kept by their SHA-256, like GitHub's `hashed_token`.

Two ways in, the same rules:
- `add_token(login, user_id, scopes, client_id=…)` registers a user token as if the app had issued it
  (a test's shortcut); it refuses what the app's kind could not issue: scopes on a GitHub App token, an
  expiry on an OAuth App token (or a GitHub App's with expiration off), a `token` of the other prefix.
- `issue(login, client_id=…, scopes=…)` is what the token endpoint hands out (`Issued`): for a GitHub
  App with expiring tokens, a user token for 8 hours and a refresh token for 6 months;
  `refresh(client_id, refresh_token)` redeems one, once: the new pair replaces the old, whose user token
  stops working too (as world_oauth's GitHub does).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from .fake_github_apps import (
    GITHUB_APP,
    REFRESH_TOKEN_LIFETIME,
    USER_TOKEN_LIFETIME,
    AppSettings,
    Issued,
    Kind,
    kind_of,
    new_token,
)
from .fake_github_model import FakeAccount, FakeToken, sha256
from .fake_github_orgs import Directory, GitHubApp

__all__ = ["RefreshGrant", "Registry"]


@dataclass(slots=True)
class RefreshGrant:
    """A GitHub App's refresh token: for whom, by which app, until when, with which user token."""

    client_id: str
    user_id: int
    expires_at: float
    access_token_sha256: str
    used: bool = False


class Registry(Directory):
    """Apps, the tokens they issued, refresh tokens and accounts, over the membership `Directory`."""

    def __init__(self, apps: Mapping[str, str], *, clock: Callable[[], float] = time.time) -> None:
        if not apps:
            raise ValueError("a fake GitHub needs at least one app (client_id → secret)")
        first_github_app = next((cid for cid in apps if kind_of(cid) == GITHUB_APP), "")
        super().__init__(clock=clock, app_client_id=first_github_app)
        self.settings: dict[str, AppSettings] = {}  # by client id, in registration order
        for client_id, secret in apps.items():
            self.register_app(client_id, secret)
        self._tokens: dict[str, FakeToken] = {}  # by SHA-256 hex of the token
        self._refresh_tokens: dict[str, RefreshGrant] = {}  # by SHA-256 hex of the refresh token
        self._accounts: dict[str, FakeAccount] = {}  # by login, casefolded (GitHub's are case-insensitive)
        self._ids = itertools.count(1)
        self._repo_ids = itertools.count(1_000_000)

    @property
    def apps(self) -> Mapping[str, str]:
        """Every app's client id → secret."""
        return MappingProxyType({cid: app.secret for cid, app in self.settings.items()})

    def register_app(
        self,
        client_id: str,
        secret: str,
        *,
        kind: Kind | None = None,
        callback_urls: Sequence[str] = (),
        device_flow: bool = True,
        expiring_tokens: bool = True,
        name: str | None = None,
    ) -> AppSettings:
        """Create (or change) an app: its kind (default: told by the client id's shape), the callback
        URLs a web flow's redirect_uri must match (none: any), whether the device flow is enabled and
        (GitHub Apps) whether user tokens expire."""
        if isinstance(callback_urls, str):
            raise ValueError("expected a sequence of callback URLs, not one string")
        app = AppSettings(
            client_id,
            secret,
            kind or kind_of(client_id),
            tuple(callback_urls),
            device_flow,
            expiring_tokens,
            name or f"Fake app {client_id}",
        )
        self.settings[client_id] = app
        return app

    def app_of(self, client_id: str | None) -> AppSettings:
        """A registered app (the first when None); ValueError when unknown."""
        if client_id is None:
            return next(iter(self.settings.values()))
        if client_id not in self.settings:
            raise ValueError(f"unknown app {client_id!r}; known: {', '.join(self.settings)}")
        return self.settings[client_id]

    def set_app(
        self, app_id: int, public_key_pem: str | bytes, *, client_id: str | None = None, slug: str = "gateway"
    ) -> GitHubApp:
        """The GitHub App whose JWTs the fake verifies with this RSA public key (PEM); its user tokens
        (ghu_) are those of `client_id` (default: the fake's first GitHub App)."""
        chosen = self.app_of(client_id or self._app_client_id or None)
        if chosen.kind != GITHUB_APP:
            raise ValueError(f"{chosen.client_id} is an OAuth App: register a GitHub App for set_app")
        return super().set_app(app_id, public_key_pem, client_id=chosen.client_id, slug=slug)

    # -----------------------------------------------------------------------------------------------
    # User tokens

    def add_token(
        self,
        login: str,
        user_id: int,
        scopes: Sequence[str] = (),
        *,
        client_id: str | None = None,
        expires_in: float | None = None,
        token: str | None = None,
    ) -> str:
        """Register a token the app (default: the first) issued to a user; returns it. `expires_in`:
        None is the app's own rule (8 hours for a GitHub App with expiring tokens, else never); a number
        (even negative) is for a GitHub App with expiring tokens only. ValueError for a token the app's
        kind could not issue."""
        app = self.app_of(client_id)
        if user_id <= 0:
            raise ValueError("expected a positive user id")
        if isinstance(scopes, str):
            raise ValueError("expected a sequence of scopes, not one string")
        why = app.refusal(tuple(scopes), expires_in, token)
        if why is not None:
            raise ValueError(why)
        token = token if token is not None else new_token(app.prefix)
        if sha256(token) in self._tokens:
            raise ValueError("that token is already registered")
        if expires_in is None and app.refreshes:
            expires_in = USER_TOKEN_LIFETIME
        self.add_user(login, user_id)
        self._register(token, user_id, tuple(scopes), app.client_id, expires_in)
        return token

    def issue(self, login: str, *, client_id: str | None = None, scopes: Sequence[str] = ()) -> Issued:
        """Issue a known user a token of the app (default: the first) as the token endpoint does:
        with the scopes for an OAuth App, with a refresh token for a GitHub App whose tokens expire."""
        app = self.app_of(client_id)
        known = self.user(login)
        if known is None:
            raise ValueError(f"unknown user {login!r}: add_user or add_token first")
        why = app.refusal(tuple(scopes), None, None)
        if why is not None:
            raise ValueError(why)
        token = new_token(app.prefix)
        if not app.refreshes:
            self._register(token, known[1], tuple(scopes), app.client_id, None)
            return Issued(token, ",".join(scopes))
        self._register(token, known[1], (), app.client_id, USER_TOKEN_LIFETIME)
        refresh = new_token("ghr_", 76)
        expires_at = self._clock() + REFRESH_TOKEN_LIFETIME
        self._refresh_tokens[sha256(refresh)] = RefreshGrant(
            app.client_id, known[1], expires_at, sha256(token)
        )
        return Issued(token, "", USER_TOKEN_LIFETIME, refresh, REFRESH_TOKEN_LIFETIME)

    def refresh(self, client_id: str, refresh_token: str) -> Issued | None:
        """Redeem a refresh token of this app for a new pair; None (GitHub's bad_refresh_token) when
        it is unknown, another app's, used, expired, or its user token was revoked."""
        grant = self._refresh_tokens.get(sha256(refresh_token))
        if grant is None or grant.used or grant.client_id != client_id or grant.expires_at <= self._clock():
            return None
        old = self._tokens[grant.access_token_sha256]
        login = self.logins.get(grant.user_id)
        if old.revoked or login is None:
            return None
        grant.used = old.revoked = True
        return self.issue(login, client_id=client_id)

    def _register(
        self, token: str, user_id: int, scopes: tuple[str, ...], client_id: str, expires_in: float | None
    ) -> None:
        now = self._clock()
        self._tokens[sha256(token)] = FakeToken(
            id=next(self._ids),
            login=self.logins[user_id],
            user_id=user_id,
            scopes=scopes,
            client_id=client_id,
            created_at=now,
            expires_at=None if expires_in is None else now + expires_in,
        )

    def revoke(self, token: str) -> bool:
        """Revoke a token; False when the fake never issued it."""
        entry = self._tokens.get(sha256(token))
        if entry is not None:
            entry.revoked = True
        return entry is not None

    def lookup(self, token: str) -> FakeToken | None:
        """The registry entry of a token the fake issued, whatever its state (revoked, expired)."""
        return self._tokens.get(sha256(token))

    def live(self, token: str, client_id: str) -> FakeToken | None:
        """The registry entry of a token that `client_id` may see: issued by it, not revoked or expired."""
        entry = self._tokens.get(sha256(token))
        if entry is None or entry.revoked or entry.client_id != client_id:
            return None
        if entry.expires_at is not None and entry.expires_at <= self._clock():
            return None
        return entry

    # -----------------------------------------------------------------------------------------------
    # Accounts scoped tokens target

    def add_account(
        self,
        login: str,
        id: int,
        repositories: Mapping[str, int] | Sequence[str] = (),
        *,
        type: str = "Organization",
        permissions: Mapping[str, str] | None = None,
    ) -> FakeAccount:
        """Install the GitHub App on a user or organization with these repositories (name → id, or
        names: ids are made up); `permissions` are what a scoped token gets when it asks for none."""
        if login.casefold() in self._accounts or any(a.id == id for a in self._accounts.values()):
            raise ValueError(f"an account {login!r} or with id {id} is already registered")
        if id <= 0 or isinstance(repositories, str):
            raise ValueError("expected a positive id and repository names (or name → id)")
        repos = (
            dict(repositories)
            if isinstance(repositories, Mapping)
            else {name: next(self._repo_ids) for name in repositories}
        )
        account = FakeAccount(login, id, MappingProxyType(repos), type)
        if permissions is not None:
            account = dataclasses.replace(account, permissions=MappingProxyType(dict(permissions)))
        self._accounts[login.casefold()] = account
        return account
