"""Sign-in (DESIGN §12): how end users get in. What a CLI needs to run GitHub's device flow
(`sign-in/config`), a GitHub App refresh token exchanged with the app's secret (`refresh`), and
browser sessions: `sign-in` sends a browser to GitHub with a single-use `state` bound to it and a PKCE
challenge, `callback` checks both, exchanges the code and sets the session cookie, then returns the
browser to where it was going, a path on this gateway and never anywhere else.

A request with the session cookie is authenticated like a bearer token (`credentials`, which the
Authenticator asks when there is no Authorization header); an expiring GitHub App token in it is
refreshed first, once however many requests carry it, and the cookie re-issued.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import aiohttp
from multidict import CIMultiDictProxy

from .config import Config, GitHubApp
from .errors import (
    BadRequest,
    Forbidden,
    GitHubError,
    GrantRefused,
    InvalidToken,
    NoRoute,
    ServiceUnavailable,
)
from .github.web import AUTHORIZE_PATH, SignInClient, UserToken
from .identity import token_digest, token_id, well_formed_token
from .identity.singleflight import SingleFlight
from .listener import Answer, Request
from .ratelimit import FailedAuthLimiter
from .responses import json_answer
from .sessions import Sealer, Session

log = logging.getLogger("gateway.signin")

SIGN_IN_SECONDS = 600  # a sign-in started must come back within this (GitHub's codes live 10 minutes)
RENEW_BEFORE = 300.0  # a session's GitHub App token is refreshed this long before it expires
REFRESHED_KEPT = 60.0  # a refresh's result serves requests still carrying the old cookie this long
MAX_FORM = 8192


class CookieCredentials(NamedTuple):
    """The token a session cookie holds, and the Set-Cookie to send back when it was refreshed."""

    token: str
    set_cookie: str | None


def sign_in_scopes(config: Config) -> tuple[str, ...]:
    """The scopes an OAuth App token needs here: every route's, and read:org when organisations or
    teams are asked about with the caller's own token (GitHub Apps ignore scopes)."""
    scopes = dict.fromkeys(s for route in config.routes for s in route.scopes)
    if config.github.membership.as_ == "user" and any(r.orgs or r.teams for r in config.routes):
        scopes.setdefault("read:org")
    return tuple(scopes)


def safe_return_path(rd: str) -> str | None:
    """`rd` if it is a path on this gateway (with its query), else None: never another origin."""
    # SECURITY: an open redirect hands a phishing page this gateway's trusted name. `//evil.example`
    # and `/\evil.example` are other hosts to browsers; control characters and `\` are refused
    # outright, and what remains must have neither a scheme nor a host
    if not rd.startswith("/") or rd.startswith(("//", "/\\")) or "\\" in rd:
        return None
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in rd):
        return None
    parts = urlsplit(rd)
    return rd if not parts.scheme and not parts.netloc else None


class SignIn:
    """The sign-in endpoints and the browser sessions of one config."""

    def __init__(
        self,
        config: Config,
        session: aiohttp.ClientSession,
        limiter: FailedAuthLimiter,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        github = config.github
        self._limiter = limiter
        self._app: GitHubApp = github.apps[0]  # the app people sign in with
        self._client = SignInClient(session, web_url=github.web, app=self._app, timeout=github.timeout)
        self._apps = {app.client_id: app for app in github.apps}
        self._session = session
        self._timeout = github.timeout
        self._web_url = github.web
        self._prefix = config.server.control_prefix
        self._clock = clock
        scopes = sign_in_scopes(config)
        self.config_body = json.dumps(
            {
                "client_id": self._app.client_id,
                "web_url": github.web,
                "api_url": github.api_url,
                "scopes": list(scopes),
            }
        ).encode()
        self._scope = " ".join(scopes)
        self.sealer = Sealer(config.sessions, clock=clock) if config.sessions is not None else None
        public = config.server.public_url or ""
        self._public = public
        self._redirect_uri = f"{public}{self._prefix}/callback"
        self._secure = "; Secure" if public.startswith("https://") else ""
        self._refreshing: SingleFlight[bytes, Session | None] = SingleFlight()
        self._refreshed: dict[bytes, tuple[Session, float]] = {}
        self._used_states: dict[str, float] = {}

    # -----------------------------------------------------------------------------------------------
    # browser sessions

    @property
    def state_cookie(self) -> str:
        """The name of the cookie that binds a sign-in under way to its browser."""
        assert self.sealer is not None
        return self.sealer.cookie_name + "_signin"

    def sign_in_location(self, target: str) -> str:
        """Where a browser without credentials goes to sign in, to come back to `target` (relative:
        on whatever name the browser used)."""
        return f"{self._prefix}/sign-in?rd={quote(target, safe='')}"

    async def start(self, request: Request) -> Answer:
        """`GET sign-in?rd=/path`: to GitHub's authorize page, with a new state and PKCE challenge."""
        if self.sealer is None:
            raise NoRoute("browser sign-in is not configured here (sessions)")
        rd = safe_return_path(request.query.get("rd", "/"))
        if rd is None:
            raise BadRequest("rd must be a path on this gateway, such as /dashboard")
        state = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        query = {
            "client_id": self._app.client_id,
            "redirect_uri": self._redirect_uri,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        if self._scope:
            query["scope"] = self._scope
        sealed = self.sealer.seal(
            "sign-in",
            {"state": state, "verifier": verifier, "rd": rd, "until": self._clock() + SIGN_IN_SECONDS},
        )
        return Answer(
            302,
            [
                ("Location", f"{self._web_url}{AUTHORIZE_PATH}?{urlencode(query)}"),
                ("Set-Cookie", self._cookie(self.state_cookie, sealed, SIGN_IN_SECONDS, self._prefix)),
                ("Cache-Control", "no-store"),
            ],
        )

    async def callback(self, request: Request, address: str) -> Answer:
        """`GET callback?code&state`: check the state against this browser's, exchange the code, set
        the session cookie, and return to where the browser was going. A code GitHub refuses is a
        failed authentication of the caller's `address`, paid for before GitHub is asked."""
        if self.sealer is None:
            raise NoRoute("browser sign-in is not configured here (sessions)")
        held = next(
            (
                p
                for v in cookie_values(request.headers, self.state_cookie)
                if (p := self.sealer.open("sign-in", v))
            ),
            None,
        )
        state = request.query.get("state", "")
        if held is None or not hmac.compare_digest(str(held["state"]), state) or not self._first_use(state):
            raise BadRequest(
                f"this sign-in does not match this browser's: start again at {self._prefix}/sign-in"
            )
        if "error" in request.query:
            raise Forbidden("sign-in was declined at GitHub")
        self._limiter.reserve_or_refuse(address)
        try:
            issued = await self._client.exchange_code(
                request.query.get("code", ""), redirect_uri=self._redirect_uri, verifier=str(held["verifier"])
            )
        except GrantRefused as exc:
            log.warning("sign-in: GitHub refused the code (%s)", exc.code)
            raise BadRequest(
                f"GitHub refused this sign-in ({exc.code}): start again at {self._prefix}/sign-in"
            ) from exc
        except GitHubError as exc:
            self._limiter.refund(address)
            raise ServiceUnavailable("GitHub is unavailable: sign-in could not finish") from exc
        self._limiter.refund(address)
        now = self._clock()
        session = _session(issued, now, ends_at=now + self.sealer.max_age)
        return Answer(
            302,
            [
                ("Location", self._public + str(held["rd"])),
                ("Cache-Control", "no-store"),
                ("Set-Cookie", self.session_cookie(session)),
                ("Set-Cookie", self._cookie(self.state_cookie, "", 0, self._prefix)),
            ],
        )

    def session_cookie(self, session: Session) -> str:
        """The Set-Cookie that stores `session` in the browser until it ends."""
        assert self.sealer is not None
        max_age = max(0, int(session.ends_at - self._clock()))
        return self._cookie(self.sealer.cookie_name, self.sealer.seal_session(session), max_age, "/")

    def clear_cookie(self) -> str:
        """The Set-Cookie that removes the session cookie (logout)."""
        assert self.sealer is not None
        return self._cookie(self.sealer.cookie_name, "", 0, "/")

    async def credentials(self, headers: CIMultiDictProxy[str]) -> CookieCredentials | None:
        """The GitHub token of a request's session cookie, refreshed first when it is about to expire;
        None without a cookie that opens (a tampered one counts as none)."""
        assert self.sealer is not None
        session = self.sealer.session(cookie_values(headers, self.sealer.cookie_name))
        if session is None:
            return None
        now = self._clock()
        if (
            session.expires_at is None
            or session.expires_at - now > RENEW_BEFORE
            or session.refresh_token is None
        ):
            return CookieCredentials(session.token, None)
        refreshed = await self._refreshed_session(session)
        if refreshed is None:
            return None if session.expires_at <= now else CookieCredentials(session.token, None)
        return CookieCredentials(refreshed.token, self.session_cookie(refreshed))

    async def _refreshed_session(self, session: Session) -> Session | None:
        assert session.refresh_token is not None
        key = token_digest(session.refresh_token)
        now = self._clock()
        kept = self._refreshed.get(key)
        if kept is not None and kept[1] > now:
            return kept[0]
        refreshed = await self._refreshing.run(key, lambda: self._refresh(session))
        if refreshed is not None:
            self._refreshed = {k: v for k, v in self._refreshed.items() if v[1] > now}
            self._refreshed[key] = (refreshed, now + REFRESHED_KEPT)
        return refreshed

    async def _refresh(self, session: Session) -> Session | None:
        assert session.refresh_token is not None
        try:
            issued = await self._client.refresh(session.refresh_token)
        except GrantRefused as exc:
            log.info(
                "session: GitHub refused the refresh token of token %s (%s)", _id(session.token), exc.code
            )
            return None
        except GitHubError as exc:
            log.warning("session: the token could not be refreshed: %s", exc)
            return None
        return _session(issued, self._clock(), ends_at=session.ends_at)

    def _first_use(self, state: str) -> bool:
        now = self._clock()
        if len(self._used_states) > 10_000:
            self._used_states = {s: t for s, t in self._used_states.items() if t > now}
        if state in self._used_states:
            return False
        self._used_states[state] = now + SIGN_IN_SECONDS
        return True

    def _cookie(self, name: str, value: str, max_age: int, path: str) -> str:
        return f"{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{self._secure}"

    # -----------------------------------------------------------------------------------------------
    # the command line's side

    async def refresh(self, request: Request, address: str) -> Answer:
        """`POST refresh`: a GitHub App refresh token in (form or JSON), a new token out; a refused one
        is a failed authentication of the caller's `address`, paid for before GitHub is asked."""
        fields = await _form(request)
        refresh_token, client_id = fields.get("refresh_token"), fields.get("client_id", self._app.client_id)
        if not well_formed_token(refresh_token):
            raise BadRequest("expected refresh_token, a GitHub App refresh token (ghr_…)")
        app = self._apps.get(str(client_id))
        if app is None:
            raise BadRequest("client_id is not an app of this gateway")
        github = (
            self._client
            if app is self._app
            else SignInClient(self._session, web_url=self._web_url, app=app, timeout=self._timeout)
        )
        self._limiter.reserve_or_refuse(address)
        try:
            issued = await github.refresh(refresh_token)
        except GrantRefused as exc:
            raise InvalidToken(
                "the refresh token is invalid, expired or already used: sign in again (gateway auth login)"
            ) from exc
        except GitHubError as exc:
            self._limiter.refund(address)
            raise ServiceUnavailable("GitHub is unavailable: the token was not refreshed") from exc
        self._limiter.refund(address)
        body = {
            "access_token": issued.access_token,
            "token_type": "bearer",
            "scope": issued.scope,
            "expires_in": issued.expires_in,
            "refresh_token": issued.refresh_token,
            "refresh_token_expires_in": issued.refresh_token_expires_in,
        }
        return json_answer(body, headers=[("Cache-Control", "no-store")])


def cookie_values(headers: CIMultiDictProxy[str], name: str) -> list[str]:
    """Every value the request's Cookie headers give `name` (a browser may send several)."""
    found = []
    for header in headers.getall("Cookie", ()):
        for pair in header.split(";"):
            key, sep, value = pair.strip().partition("=")
            if sep and key == name:
                found.append(value.strip().strip('"'))
    return found


def _session(issued: UserToken, now: float, *, ends_at: float) -> Session:
    return Session(
        issued.access_token,
        issued.refresh_token,
        None if issued.expires_in is None else now + issued.expires_in,
        None if issued.refresh_token_expires_in is None else now + issued.refresh_token_expires_in,
        ends_at,
    )


async def _form(request: Request) -> dict[str, str]:
    if (request.content_length or 0) > MAX_FORM:
        raise BadRequest(f"expected a body of at most {MAX_FORM} bytes")
    raw = await request.content.read(MAX_FORM + 1)
    if len(raw) > MAX_FORM:
        raise BadRequest(f"expected a body of at most {MAX_FORM} bytes")
    if request.content_type == "application/json":
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise BadRequest("the body is not JSON") from exc
        if not isinstance(data, dict):
            raise BadRequest("expected a JSON object")
        return {k: v for k, v in data.items() if isinstance(v, str)}
    return dict(parse_qsl(raw.decode("utf-8", "replace")))


def _id(token: str) -> str:
    return token_id(token_digest(token))
