"""GitHub's two kinds of app, as the fake GitHub knows them, and what each kind may issue.

    OAuth App   `gho_` tokens with the scopes asked for, that never expire; no refresh token; it
                cannot mint scoped tokens (POST /applications/{client_id}/token/scoped: 422).
    GitHub App  `ghu_` user tokens without scopes (what they may do is the app's permissions). With
                user-token expiration on (GitHub's default, `expiring_tokens`) they expire after 8 hours
                and come with a `ghr_` refresh token good for 6 months, usable once; with it off they
                never expire and come alone.

A client id's shape tells the kind, as GitHub issues them: `Iv1.…` and `Iv23…` are GitHub Apps,
anything else (`Ov23…`, 20 hex digits) an OAuth App; `FakeGitHub.register_app(kind=…)` says otherwise.
Pure values: `fake_github_tokens` keeps the registry that uses them.
"""

from __future__ import annotations

import secrets
import string
import urllib.parse
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "GITHUB_APP",
    "OAUTH_APP",
    "REFRESH_TOKEN_LIFETIME",
    "USER_TOKEN_LIFETIME",
    "AppSettings",
    "Issued",
    "kind_of",
    "new_token",
]

Kind = Literal["oauth_app", "github_app"]
OAUTH_APP: Kind = "oauth_app"
GITHUB_APP: Kind = "github_app"
USER_TOKEN_LIFETIME = 8 * 3600  # seconds: a GitHub App user token's `expires_in`
REFRESH_TOKEN_LIFETIME = 15_897_600  # seconds (six months): its refresh token's `refresh_token_expires_in`
_ALPHABET = string.ascii_letters + string.digits


def kind_of(client_id: str) -> Kind:
    """The kind of app GitHub issues a client id of this shape to."""
    return GITHUB_APP if client_id.startswith(("Iv1.", "Iv23")) else OAUTH_APP


def new_token(prefix: str, length: int = 36) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


@dataclass(frozen=True, slots=True)
class AppSettings:
    """An app registered on the fake GitHub, with the settings of its page on github.com."""

    client_id: str
    secret: str = field(repr=False)
    kind: Kind
    callback_urls: tuple[str, ...] = ()  # empty: any redirect_uri is accepted (a test's convenience)
    device_flow: bool = True  # "Enable Device Flow"
    expiring_tokens: bool = True  # GitHub App "User-to-server token expiration"
    name: str = "Fake app"

    @property
    def prefix(self) -> str:
        """The prefix of the user tokens this app issues."""
        return "ghu_" if self.kind == GITHUB_APP else "gho_"

    @property
    def refreshes(self) -> bool:
        """Whether its user tokens expire and come with a refresh token."""
        return self.kind == GITHUB_APP and self.expiring_tokens

    def refusal(self, scopes: tuple[str, ...], expires_in: float | None, token: str | None) -> str | None:
        """Why this app could not have issued such a token; None when it could."""
        kind = "a GitHub App" if self.kind == GITHUB_APP else "an OAuth App"
        if scopes and self.kind == GITHUB_APP:
            return f"{self.client_id} is a GitHub App: its user tokens have no scopes"
        if expires_in is not None and not self.refreshes:
            return f"{self.client_id} is {kind} whose tokens do not expire"
        if token is not None and not token.startswith(self.prefix):
            return f"{self.client_id} is {kind}: its tokens start with {self.prefix}"
        return None

    def redirect_allowed(self, redirect_uri: str) -> bool:
        """GitHub's rule for a web flow's redirect_uri: a registered callback URL, or (OAuth Apps only)
        a path under one, on its host or a subdomain of it; the port must match, except that a loopback
        callback (127.0.0.1, ::1) registered without one admits any."""
        if not self.callback_urls or redirect_uri in self.callback_urls:
            return True
        got = urllib.parse.urlsplit(redirect_uri)
        return any(self._under(got, urllib.parse.urlsplit(url)) for url in self.callback_urls)

    def _under(self, got: urllib.parse.SplitResult, callback: urllib.parse.SplitResult) -> bool:
        host, registered = got.hostname or "", callback.hostname or ""
        subdomain = self.kind == OAUTH_APP and host.endswith("." + registered)
        if got.scheme != callback.scheme or got.query or not (host == registered or subdomain):
            return False
        loopback = registered in ("127.0.0.1", "::1") and callback.port is None
        if not loopback and got.port != callback.port:
            return False
        if got.path == callback.path:
            return True
        return self.kind == OAUTH_APP and got.path.startswith(callback.path.rstrip("/") + "/")


@dataclass(frozen=True, slots=True)
class Issued:
    """A user token as the token endpoint hands it out (and `FakeGitHub.issue` returns it)."""

    access_token: str = field(repr=False)
    scope: str  # comma-separated, as GitHub answers it; "" for a GitHub App
    expires_in: int | None = None
    refresh_token: str | None = field(default=None, repr=False)
    refresh_token_expires_in: int | None = None

    def body(self) -> dict[str, str | int]:
        """The token endpoint's answer, in GitHub's order."""
        body: dict[str, str | int] = {"access_token": self.access_token}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        if self.refresh_token is not None and self.refresh_token_expires_in is not None:
            body["refresh_token"] = self.refresh_token
            body["refresh_token_expires_in"] = self.refresh_token_expires_in
        body["scope"] = self.scope
        body["token_type"] = "bearer"  # noqa: S105 - the kind of token, not a secret
        return body
