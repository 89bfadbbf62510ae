"""GitHub's sign-in endpoint, on the web URL rather than the API's (DESIGN §12):
`POST {web_url}/login/oauth/access_token`, for the three grants users sign in with.

    grant                 who sends it                        with
    authorization_code    the gateway (browser sign-in)       client secret, code, redirect_uri, PKCE verifier
    refresh_token         the gateway (for cookies and CLIs)  client secret, the single-use refresh token
    device_code           `gateway auth login`                client id only (no secret: GitHub's rule)

GitHub answers every one with 200, and a refusal as an `error` field (`authorization_pending`,
`slow_down`, `bad_verification_code`, `bad_refresh_token`, `incorrect_client_credentials` …): that is
`GrantRefused`, carrying GitHub's code; anything else unusable is `GitHubUnavailable`. Answers are
asked for as JSON (a 4xx carrying an `error` reads as a refusal too). No token, in or out, ever
appears in an exception or a log line.

`DeviceFlow` is the command line's side of the device grant: a device code from
`POST {web_url}/login/device/code`, then polls honouring `interval` and `slow_down` until the person
approves, denies, or the code expires.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import aiohttp

from ..config import GitHubApp
from ..errors import GitHubUnavailable, GrantRefused
from ..identity import well_formed_token
from .client import USER_AGENT

ACCESS_TOKEN_PATH = "/login/oauth/access_token"  # noqa: S105 (a path, not a secret)
DEVICE_CODE_PATH = "/login/device/code"
AUTHORIZE_PATH = "/login/oauth/authorize"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
MAX_ANSWER = 64 * 1024


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


def _refuse_on_error(answer: Mapping[str, object]) -> None:
    """GrantRefused when GitHub's answer is an OAuth error (`{"error": "authorization_pending"}`)."""
    error = answer.get("error")
    if isinstance(error, str):
        description = answer.get("error_description")
        raise GrantRefused(error[:100], description[:300] if isinstance(description, str) else "")


def user_token(answer: object) -> UserToken:
    """GitHub's answer to a grant, read strictly: a UserToken, or GrantRefused, or GitHubUnavailable."""
    if not isinstance(answer, Mapping):
        raise GitHubUnavailable("GitHub's token endpoint answered with something other than a JSON object")
    _refuse_on_error(answer)
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
            if len(body) <= MAX_ANSWER and (resp.status == 200 or _refusal(resp.status, body)):
                return _json(body)
            raise GitHubUnavailable(f"GitHub's {url.rsplit('/', 1)[-1]} endpoint answered {resp.status}")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise GitHubUnavailable(
            f"GitHub's sign-in endpoint could not be reached ({type(exc).__name__})"
        ) from exc


def _refusal(status: int, body: bytes) -> bool:
    """Whether a 4xx answer is an OAuth error (`{"error": "device_flow_disabled"}`): a refusal to read
    like a 200's, not GitHub being unavailable."""
    if not 400 <= status < 500:
        return False
    try:
        answer = json.loads(body)
    except ValueError:
        return False
    return isinstance(answer, dict) and isinstance(answer.get("error"), str)


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


# ---------------------------------------------------------------------------------------------------
# The device flow (RFC 8628), the command line's side: no secret, only the app's client id

_USER_CODE = re.compile(r"[A-Z0-9]{1,16}(-[A-Z0-9]{1,16})?")  # GitHub's "WDJB-MJHT"; shown on a terminal
_WEB_URI = re.compile(r"https?://[!-~]{1,2000}")  # printable ASCII only: shown on a terminal
DEFAULT_INTERVAL = 5.0  # seconds between polls when GitHub names none
SLOW_DOWN = 5.0  # seconds added to the interval by `slow_down` when GitHub names no new one


@dataclass(frozen=True, repr=False)
class DeviceCode:
    """A device authorization: the code polled with, the code a person enters at `verification_uri`."""

    device_code: str
    user_code: str
    verification_uri: str
    expires_in: float  # seconds from now
    interval: float  # seconds between polls

    def __repr__(self) -> str:
        return f"<DeviceCode user_code={self.user_code} expires_in={self.expires_in}>"


def _seconds(value: object) -> float | None:
    """A finite, non-negative number of seconds, else None (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        return None
    return float(value)


def device_code(answer: object) -> DeviceCode:
    """GitHub's answer to `POST /login/device/code`, read strictly: a DeviceCode, or GrantRefused
    (`device_flow_disabled` …), or GitHubUnavailable."""
    if not isinstance(answer, Mapping):
        raise GitHubUnavailable(
            "GitHub's device code endpoint answered with something other than a JSON object"
        )
    _refuse_on_error(answer)
    code, user_code, uri = answer.get("device_code"), answer.get("user_code"), answer.get("verification_uri")
    expires_in, interval = (
        _seconds(answer.get("expires_in")),
        _seconds(answer.get("interval", DEFAULT_INTERVAL)),
    )
    if not well_formed_token(code) or not isinstance(user_code, str) or not _USER_CODE.fullmatch(user_code):
        raise GitHubUnavailable("GitHub's device code endpoint answered without a well-formed code")
    if not isinstance(uri, str) or not _WEB_URI.fullmatch(uri):
        raise GitHubUnavailable("GitHub's device code endpoint answered without a verification URL")
    if expires_in is None or interval is None:
        raise GitHubUnavailable("GitHub's device code endpoint answered with a lifetime that is not seconds")
    return DeviceCode(code, user_code, uri, expires_in, interval)


def next_interval(answer: object, interval: float) -> float:
    """The interval after `slow_down`: the one GitHub sends with it, else 5 s more (RFC 8628 §3.5)."""
    sent = _seconds(answer.get("interval")) if isinstance(answer, Mapping) else None
    return sent if sent is not None and sent > interval else interval + SLOW_DOWN


class DeviceFlow:
    """GitHub's device flow for one app, as `gateway auth login` runs it."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        web_url: str,
        client_id: str,
        timeout: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._web_url = web_url
        self._client_id = client_id
        self._timeout = timeout
        self._sleep = sleep
        self._clock = clock

    async def start(self, scopes: Sequence[str]) -> DeviceCode:
        """A new device code, for a token with these scopes (an OAuth App's; a GitHub App ignores them)."""
        form = {"client_id": self._client_id, "scope": " ".join(scopes)}
        return device_code(
            await post_form(self._session, self._web_url + DEVICE_CODE_PATH, form, seconds=self._timeout)
        )

    async def token(self, code: DeviceCode) -> UserToken:
        """Poll until the person approves (the token), or GrantRefused: `access_denied`,
        `expired_token` (also when GitHub still says pending after the code's lifetime), or another of
        GitHub's codes. Waits `interval` before each poll, and longer after each `slow_down`."""
        interval, deadline = code.interval, self._clock() + code.expires_in
        form = {"client_id": self._client_id, "device_code": code.device_code, "grant_type": DEVICE_GRANT}
        while True:
            await self._sleep(min(interval, max(0.0, deadline - self._clock())))
            answer = await post_form(
                self._session, self._web_url + ACCESS_TOKEN_PATH, form, seconds=self._timeout
            )
            try:
                return user_token(answer)
            except GrantRefused as exc:
                if exc.code == "slow_down":
                    interval = next_interval(answer, interval)
                elif exc.code != "authorization_pending":
                    raise
            if self._clock() >= deadline:
                raise GrantRefused("expired_token", "the device code expired before it was approved")
