"""GitHub's sign-in endpoint, on the web URL rather than the API's (DESIGN §12):
`POST {web_url}/login/oauth/access_token`, for the three grants users sign in with.

    grant                 who sends it                        with
    authorization_code    the gateway (browser sign-in)       client secret, code, redirect_uri, PKCE verifier
    refresh_token         the gateway (for cookies and CLIs)  client secret, the single-use refresh token
    device_code           `gateway auth login`                client id only (no secret: GitHub's rule)

GitHub answers every one with 200, and a refusal as an `error` field (`authorization_pending`,
`slow_down`, `bad_verification_code`, `bad_refresh_token`, `incorrect_client_credentials` …): that is
`GrantRefused`, carrying GitHub's code; anything else unusable is `GitHubUnavailable`. Answers are
asked for as JSON. No token, in or out, ever appears in an exception or a log line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from ..config import GitHubApp
from ..errors import GitHubError, GitHubUnavailable
from ..identity import well_formed_token
from .client import USER_AGENT

ACCESS_TOKEN_PATH = "/login/oauth/access_token"  # noqa: S105 (a path, not a secret)
DEVICE_CODE_PATH = "/login/device/code"
AUTHORIZE_PATH = "/login/oauth/authorize"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
MAX_ANSWER = 64 * 1024


class GrantRefused(GitHubError):
    """GitHub refused a grant; `code` is its error code, `description` its words (never a token)."""

    def __init__(self, code: str, description: str = "") -> None:
        self.code = code
        self.description = description
        super().__init__(f"GitHub refused the grant: {code}" + (f" ({description})" if description else ""))


@dataclass(frozen=True, repr=False)
class UserToken:
    """A user token as GitHub's sign-in endpoint issues it; the `*_in` are seconds from now."""

    access_token: str
    scope: str
    expires_in: int | None  # None: an OAuth App token, which does not expire
    refresh_token: str | None
    refresh_token_expires_in: int | None

    def __repr__(self) -> str:
        return f"<UserToken expires_in={self.expires_in} refreshable={self.refresh_token is not None}>"


def user_token(answer: object) -> UserToken:
    """GitHub's answer to a grant, read strictly: a UserToken, or GrantRefused, or GitHubUnavailable."""
    if not isinstance(answer, Mapping):
        raise GitHubUnavailable("GitHub's token endpoint answered with something other than a JSON object")
    error = answer.get("error")
    if isinstance(error, str):
        description = answer.get("error_description")
        raise GrantRefused(error[:100], description[:300] if isinstance(description, str) else "")
    token, refresh = answer.get("access_token"), answer.get("refresh_token")
    expires_in, refresh_in, scope = (
        answer.get("expires_in"),
        answer.get("refresh_token_expires_in"),
        answer.get("scope", ""),
    )
    if not well_formed_token(token) or not (refresh is None or well_formed_token(refresh)):
        raise GitHubUnavailable("GitHub's token endpoint answered without a well-formed token")
    if not all(v is None or (type(v) is int and v > 0) for v in (expires_in, refresh_in)):
        raise GitHubUnavailable("GitHub's token endpoint answered with a lifetime that is not seconds")
    if not isinstance(scope, str):
        raise GitHubUnavailable("GitHub's token endpoint answered with a scope that is not text")
    return UserToken(token, scope, expires_in, refresh, refresh_in)


async def post_form(
    session: aiohttp.ClientSession, url: str, form: Mapping[str, str], *, seconds: float
) -> object:
    """POST a form to one of GitHub's sign-in endpoints, asking for JSON; the decoded answer."""
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    try:
        async with session.post(
            url, data=dict(form), headers=headers, timeout=aiohttp.ClientTimeout(total=seconds)
        ) as resp:
            body = await resp.content.read(MAX_ANSWER + 1)
            if resp.status != 200 or len(body) > MAX_ANSWER:
                raise GitHubUnavailable(f"GitHub's {url.rsplit('/', 1)[-1]} endpoint answered {resp.status}")
            return _json(body)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise GitHubUnavailable(
            f"GitHub's sign-in endpoint could not be reached ({type(exc).__name__})"
        ) from exc


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise GitHubUnavailable("GitHub's sign-in endpoint answered with something other than JSON") from exc


class SignInClient:
    """The gateway's side of the grants that need the app's client secret."""

    def __init__(
        self, session: aiohttp.ClientSession, *, web_url: str, app: GitHubApp, timeout: float
    ) -> None:
        self._session = session
        self._url = web_url + ACCESS_TOKEN_PATH
        self._app = app
        self._timeout = timeout

    @property
    def client_id(self) -> str:
        """The app people sign in with."""
        return self._app.client_id

    async def exchange_code(self, code: str, *, redirect_uri: str, verifier: str) -> UserToken:
        """The token for an authorization code (browser sign-in, PKCE)."""
        return await self._grant(
            {"code": code, "redirect_uri": redirect_uri, "code_verifier": verifier},
        )

    async def refresh(self, refresh_token: str) -> UserToken:
        """A new token, and a new refresh token, for a GitHub App user's refresh token (used up)."""
        return await self._grant({"grant_type": "refresh_token", "refresh_token": refresh_token})

    async def _grant(self, form: Mapping[str, str]) -> UserToken:
        credentials = {
            "client_id": self._app.client_id,
            "client_secret": self._app.client_secret.get_secret_value(),
        }
        return user_token(
            await post_form(self._session, self._url, {**credentials, **form}, seconds=self._timeout)
        )
