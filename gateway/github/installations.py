"""Asking GitHub as the GitHub App itself (`github.membership.as: app`): the app's JWT and its
installations' tokens.

A JWT signed with the app's private key (RS256, `iss` = the app id, `iat` a minute in the past for
clock drift, `exp` nine minutes ahead: GitHub takes at most ten) finds the installation on an
organisation (`GET /orgs/{org}/installation`) and mints an installation token
(`POST /app/installations/{id}/access_tokens`). The token is kept in this process until five minutes
before its `expires_at`, one mint per installation however many requests need it; it is never logged,
never written to Redis, and a 401 with it (revoked, or expired early) mints a new one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import jwt

from ..errors import GitHubUnavailable
from ..identity import well_formed_token
from ..identity.singleflight import SingleFlight
from .client import GitHubClient

log = logging.getLogger("gateway.github")

JWT_LIFETIME = 540.0  # seconds; GitHub refuses a JWT valid for more than ten minutes
CLOCK_DRIFT = 60.0  # `iat` this far in the past: GitHub's clock may be behind ours
RENEW_BEFORE = 300.0  # an installation token is replaced this long before it expires


class Installations:
    """Installation tokens of one GitHub App, per organisation, minted as needed and reused."""

    def __init__(
        self,
        github: GitHubClient,
        *,
        app_id: int,
        private_key_file: str,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._github = github
        self._app_id = app_id
        self._key = Path(private_key_file).read_bytes()  # checked when the config was loaded
        self._wall_clock = wall_clock
        self._tokens: dict[str, tuple[str, float]] = {}  # organisation -> (token, renew at)
        self._flights: SingleFlight[str, str | None] = SingleFlight()
        self._not_installed: set[str] = set()

    def __repr__(self) -> str:
        return f"<Installations app {self._app_id}: {len(self._tokens)} tokens>"  # never a token

    async def token(self, account: str, repo: str | None = None) -> str | None:
        """An installation token for the app on `account` (or on the repository `repo` of it); None when
        the app is not installed there."""
        held = self._tokens.get(account)
        if held is not None and held[1] > self._wall_clock():
            return held[0]
        return await self._flights.run(account, lambda: self._mint(account, repo))

    def forget(self, account: str) -> None:
        """Drop the token of `account` (GitHub refused it): the next `token` mints a new one."""
        self._tokens.pop(account, None)

    def _jwt(self) -> str:
        now = self._wall_clock()
        claims = {"iat": int(now - CLOCK_DRIFT), "exp": int(now + JWT_LIFETIME), "iss": str(self._app_id)}
        return jwt.encode(claims, self._key, algorithm="RS256")

    async def _mint(self, account: str, repo: str | None) -> str | None:
        as_app = f"Bearer {self._jwt()}"
        if repo is None:
            op, path = "apps/get-org-installation", f"/orgs/{quote(account, safe='')}/installation"
        else:
            op, path = (
                "apps/get-repo-installation",
                f"/repos/{quote(account, safe='')}/{quote(repo, safe='')}/installation",
            )
        found = await self._github.fetch(op, path, credential=as_app)
        if found.status == 404:
            if account not in self._not_installed:  # one line per account, not one per request
                self._not_installed.add(account)
                log.warning(
                    "the GitHub App %d is not installed on %s: nobody there can be admitted",
                    self._app_id,
                    account,
                )
            return None
        installation = found.body.get("id") if isinstance(found.body, dict) else None
        if found.status != 200 or type(installation) is not int:
            raise GitHubUnavailable(f"GitHub answered {found.status} for the app's installation on {account}")
        minted = await self._github.fetch(
            "apps/create-installation-access-token",
            f"/app/installations/{installation}/access_tokens",
            credential=as_app,
            method="POST",
        )
        body = minted.body if isinstance(minted.body, dict) else {}
        token, expires_at = body.get("token"), body.get("expires_at")
        if minted.status != 201 or not well_formed_token(token) or not isinstance(expires_at, str):
            raise GitHubUnavailable(f"GitHub answered {minted.status} for an installation token on {account}")
        try:
            expires = datetime.fromisoformat(expires_at.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise GitHubUnavailable("the installation token's expires_at is not a time") from None
        self._tokens[account] = (token, expires - RENEW_BEFORE)
        return token
