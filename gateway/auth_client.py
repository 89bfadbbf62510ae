"""A gateway's endpoints as `gateway auth` calls them (DESIGN §5, §12): `sign-in/config`, `refresh`,
`whoami` and `logout`; and the failures of `gateway auth`, each with its exit code:

    Failure
    ├── NotSignedIn     1  no credentials yet, or unusable ones (refresh refused, token revoked)
    ├── UsageError      2  (argparse's own errors exit 2 too)
    ├── AccessDenied    3  the person declined at GitHub
    ├── CodeExpired     4  the device code expired before it was approved
    ├── GatewayFailed   5  the gateway unreachable or answering unusably
    └── GitHubFailed    6  GitHub unreachable (or the gateway says so: 503 github_unavailable)

Connection errors and unusable answers are translated here, where they are met. Nothing the gateway
says is printed unfiltered (`shown`: printable text only, and short), and no message holds a token.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeGuard

import aiohttp

from .errors import GitHubUnavailable
from .github.client import USER_AGENT
from .github.web import UserToken, user_token
from .identity import LOGIN

CONTROL_PREFIX = "/_gateway"  # the gateway's default `server.control_prefix`
MAX_ANSWER = 256 * 1024
_CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")
_WEB_URL = re.compile(r"https?://[!-~]{1,2000}")


class Failure(Exception):
    """Why `gateway auth` stopped: one line for stderr, and the exit code."""

    exit_code = 1


class NotSignedIn(Failure):
    exit_code = 1


class UsageError(Failure):
    exit_code = 2


class AccessDenied(Failure):
    exit_code = 3


class CodeExpired(Failure):
    exit_code = 4


class GatewayFailed(Failure):
    exit_code = 5


class GitHubFailed(Failure):
    exit_code = 6


def shown(text: object, limit: int = 200) -> str:
    """Text another server sent, safe on a terminal: printable characters only, at most `limit`."""
    printable = "".join(c if c.isprintable() else " " for c in str(text))
    return printable[:limit] + ("…" if len(printable) > limit else "")


@dataclass(frozen=True)
class SignInConfig:
    """What a gateway says a CLI needs to sign in: its app, GitHub's web URL, the scopes to ask."""

    client_id: str
    web_url: str
    scopes: tuple[str, ...]


@dataclass(frozen=True)
class Whoami:
    """Who a token belongs to, as the gateway says (`GET whoami`)."""

    login: str
    id: int
    scopes: tuple[str, ...]
    groups: tuple[str, ...] | None  # None: the gateway's routes name no organisations or teams
    expires_at: float | None
    client_id: str


class GatewayClient:
    """One gateway's endpoints, at `url` (as `credentials.normal_url` spells it).

    They are under `/_gateway` (DESIGN §12), unless the gateway says otherwise: before the first call,
    `/_gateway/sign-in/config` is asked without credentials; a gateway whose `server.control_prefix`
    is another answers that, as anything it refuses, with `Link: <PREFIX/sign-in/config>;
    rel="help"` (or `/` does), and its endpoints are used there.
    """

    def __init__(self, session: aiohttp.ClientSession, url: str, *, timeout: float) -> None:
        self._session = session
        self.url = url
        self._timeout = timeout
        self._prefix = CONTROL_PREFIX
        self._found = False

    async def sign_in_config(self) -> SignInConfig:
        """`GET sign-in/config`."""
        status, body = await self._call("GET", "/sign-in/config")
        self._check(status, body, "")
        config = _sign_in_config(body)
        if config is None:
            raise self._unusable("sign-in/config")
        return config

    async def refresh(self, refresh_token: str, client_id: str) -> UserToken:
        """`POST refresh`: a new token for a GitHub App refresh token (used up)."""
        status, body = await self._call(
            "POST", "/refresh", json_body={"refresh_token": refresh_token, "client_id": client_id}
        )
        self._check(
            status,
            body,
            "the gateway refused the refresh token (expired, revoked or already used):"
            f" run `gateway auth login --gateway {self.url}`",
        )
        try:
            return user_token(body)
        except GitHubUnavailable as exc:
            raise self._unusable("refresh") from exc

    async def whoami(self, token: str) -> Whoami:
        """`GET whoami` with the token."""
        status, body = await self._call("GET", "/whoami", token=token)
        self._check(
            status,
            body,
            f"{self.url} does not accept the stored token (revoked or expired):"
            f" run `gateway auth login --gateway {self.url}`",
        )
        who = _whoami(body)
        if who is None:
            raise self._unusable("whoami")
        return who

    async def logout(self, token: str) -> bool:
        """`POST logout` with the token: True when revoked now, False when it was already invalid."""
        status, body = await self._call("POST", "/logout", token=token)
        if status == 401:
            return False
        self._check(status, body, "")
        return True

    async def _call(
        self, method: str, path: str, *, token: str | None = None, json_body: object = None
    ) -> tuple[int, object]:
        await self._find_prefix()
        status, body, _ = await self._send(method, self._prefix + path, token, json_body)
        return status, body

    async def _find_prefix(self) -> None:
        """Learn where this gateway's endpoints are, once, before anything is sent with a token (on a
        gateway with another prefix, `/_gateway/whoami` with a token would be an upstream's path)."""
        if self._found:
            return
        status, body, link = await self._send("GET", CONTROL_PREFIX + "/sign-in/config", None, None)
        self._found = True
        if status == 200 and _sign_in_config(body) is not None:
            return
        prefix = _help_prefix(link) or _help_prefix((await self._send("GET", "/", None, None))[2])
        if prefix is not None:
            self._prefix = prefix

    async def _send(
        self, method: str, path: str, token: str | None, json_body: object
    ) -> tuple[int, object, str]:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            # SECURITY: redirects are not followed: a token goes to this gateway and nowhere else
            async with self._session.request(
                method,
                self.url + path,
                headers=headers,
                json=json_body,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            ) as resp:
                raw = await resp.content.read(MAX_ANSWER + 1)
                status, link = resp.status, resp.headers.get("Link", "")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else getattr(exc, "strerror", None)
            raise GatewayFailed(
                f"{self.url} could not be reached ({shown(reason or type(exc).__name__)})"
            ) from exc
        try:
            return status, json.loads(raw), link
        except ValueError:
            return status, None, link

    def _check(self, status: int, body: object, refused: str) -> None:
        """Raise the Failure for an answer other than 200: `refused` (NotSignedIn) for a 401."""
        if status == 200:
            return
        error = body.get("error") if isinstance(body, Mapping) else None
        message = body.get("message") if isinstance(body, Mapping) else None
        said = f": {shown(message)}" if isinstance(message, str) else ""
        if status == 401 and refused:
            raise NotSignedIn(refused)
        if status == 503 and error == "github_unavailable":
            raise GitHubFailed(f"{self.url} could not reach GitHub{said}")
        raise GatewayFailed(f"{self.url} answered {status}{said}")

    def _unusable(self, endpoint: str) -> GatewayFailed:
        return GatewayFailed(
            f"{self.url} answered {self._prefix}/{endpoint} with something else than a gateway's"
            " answer: is it the gateway's URL?"
        )


# the gateway's 401: `Link: </_gateway/sign-in/config>; rel="help"` (a path on the same gateway)
_HELP_LINK = re.compile(r'<(/[A-Za-z0-9\-._~!$&\'()*+,;=:@/]*)/sign-in/config>\s*;\s*rel="help"')


def _help_prefix(link: str) -> str | None:
    """The control prefix a gateway's `Link` names, if any: a path on this gateway, never a URL."""
    # SECURITY: only a path is taken: a token is sent to this gateway's URL and nowhere else
    found = _HELP_LINK.search(link)
    if found is None or found.group(1).startswith("//"):
        return None
    return found.group(1)


def _names(value: object) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(n, str) and n.isprintable() for n in value)


def _sign_in_config(body: object) -> SignInConfig | None:
    if not isinstance(body, dict):
        return None
    client_id, web_url, scopes = body.get("client_id"), body.get("web_url"), body.get("scopes")
    if not isinstance(client_id, str) or not _CLIENT_ID.fullmatch(client_id):
        return None
    if not isinstance(web_url, str) or not _WEB_URL.fullmatch(web_url) or not _names(scopes):
        return None
    return SignInConfig(client_id, web_url.rstrip("/"), tuple(scopes))


def _whoami(body: object) -> Whoami | None:
    if not isinstance(body, dict):
        return None
    login, user_id, client_id = body.get("login"), body.get("id"), body.get("client_id")
    scopes, groups, expires_at = body.get("scopes"), body.get("groups"), body.get("expires_at")
    if not isinstance(login, str) or not LOGIN.fullmatch(login) or type(user_id) is not int:
        return None
    if not isinstance(client_id, str) or not _CLIENT_ID.fullmatch(client_id):
        return None
    if not _names(scopes) or not (groups is None or _names(groups)):
        return None
    if not (expires_at is None or (isinstance(expires_at, int | float) and not isinstance(expires_at, bool))):
        return None
    return Whoami(
        login,
        user_id,
        tuple(scopes),
        None if groups is None else tuple(groups),
        expires_at,
        client_id,
    )
