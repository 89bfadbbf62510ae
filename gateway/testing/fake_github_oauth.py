"""The fake GitHub's web host: the device flow and the web flow, where people sign in (DESIGN §12).

Served on the web URL, at the server's root (github.com: `https://github.com/login/...`; GHES:
`https://HOSTNAME/login/...`), never under `/api/v3`:

    POST /login/device/code         client_id, scope → device_code, user_code ("WDJB-MJHT"),
                                    verification_uri ({web}/login/device), expires_in 900, interval
                                    (5; `interval=` here, `FakeGitHub(device_interval=…)`,
                                    `gateway fake-github --device-interval`). Unknown client id: 404;
                                    device flow off for the app: 400 device_flow_disabled.
    GET  /login/device              the device page: a login field (who is at the browser), the user
    POST /login/device              code, Authorize and Cancel buttons (fields login, user_code,
                                    decision=approve|deny)
    GET  /login/oauth/authorize     client_id, redirect_uri, state, scope, code_challenge +
                                    code_challenge_method=S256, login (prefills the login field),
                                    allow_signup (ignored): the consent page, whose Authorize and Cancel
    POST /login/oauth/authorize     buttons redirect to redirect_uri?code=…&state=… or
                                    ?error=access_denied&…&state=…. A redirect_uri the app's callback
                                    URLs do not admit (`AppSettings.redirect_allowed`) is sent to the first
                                    callback with error=redirect_uri_mismatch; a malformed PKCE
                                    challenge or a method other than S256, to redirect_uri with
                                    error=invalid_request.
    POST /login/oauth/access_token  the three grants, answered with HTTP 200 and, on failure, `error`,
                                    `error_description`, `error_uri`; JSON for Accept:
                                    application/json, XML for application/xml, else form encoding:
        authorization_code  client_id, client_secret, code, redirect_uri (when sent, the authorize
                            request's), code_verifier (S256 of it = the challenge, when there was one).
                            A code works once, for 10 minutes: bad_verification_code otherwise (a
                            wrong verifier too); incorrect_client_credentials; redirect_uri_mismatch.
        device_code         grant_type=urn:ietf:params:oauth:grant-type:device_code, client_id,
                            device_code; no secret. authorization_pending until approved; slow_down
                            with the new `interval` (+5 s) when polled sooner than the interval after
                            the previous poll; expired_token after 15 minutes; access_denied once
                            cancelled; incorrect_device_code (unknown, another app's, already used);
                            device_flow_disabled; incorrect_client_credentials (unknown app).
        refresh_token       grant_type=refresh_token, client_id, client_secret, refresh_token (GitHub
                            Apps: `FakeGitHub.refresh`): bad_refresh_token when it cannot be redeemed,
                            an OAuth App's request included.
        anything else       unsupported_grant_type.

Which tokens come out is the app's kind's business (`fake_github_apps`): `gho_` with the scopes asked
for, or `ghu_` without scopes, expiring in 8 hours, with a single-use `ghr_` refresh token.

Who is at the browser: the login field of both pages, prefilled with `signed_in` (default: the first
known user; `login=` of the authorize request prefills it instead). The login must be a user the fake
knows (`add_user`, `add_token`). `auto_approve = LOGIN` approves for that user at once: a device code
as it is issued (the first poll gets the token), an authorize request by redirecting back straight
away (`gateway fake-github --auto-approve LOGIN`). In Python, `approve_device(user_code=None,
login=None)` and `deny_device(user_code=None)` act as the person at the device page (the latest
pending code when none is named). `unverified_emails` holds logins whose primary email is unverified:
GitHub App tokens are refused to them with unverified_user_email.

Each call is logged in `FakeGitHub.calls` (no secret, code or token in clear; a refresh token by its
SHA-256), under these names, with `target` as shown, so `count()` works on them:
`oauth/device-code`, `oauth/device-page`, `oauth/device-decision` (approve|deny), `oauth/authorize`,
`oauth/authorize-decision` (approve|deny), `oauth/access-token` (authorization_code|device_code|
refresh_token|the grant_type sent). The fake's switches (latency, hang, outage) apply to them too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from .fake_github_apps import GITHUB_APP, OAUTH_APP, AppSettings
from .fake_github_model import Call, sha256
from .fake_github_pages import answer, consent_page, device_page, oauth_error, page, params, redirect_to

if TYPE_CHECKING:
    from .fake_github import FakeGitHub

__all__ = [
    "CODE_LIFETIME",
    "DEVICE_CODE_LIFETIME",
    "DEVICE_GRANT",
    "DEVICE_INTERVAL",
    "DeviceAuthorization",
    "WebFlows",
    "s256",
]

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEVICE_INTERVAL = 5  # seconds between polls, GitHub's
DEVICE_CODE_LIFETIME = 900  # seconds
CODE_LIFETIME = 600  # seconds: a web flow's code
POLL_ALLOWANCE = 0.05  # a poll this early still counts as on time: timers and networks are not exact
_USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # GitHub's: no vowels, no look-alikes
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")  # RFC 7636 §4.1
_CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")
_GRANTS = {
    DEVICE_GRANT: "device_code",
    "authorization_code": "authorization_code",
    "refresh_token": "refresh_token",
}
Params = dict[str, str]


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of a code verifier (RFC 7636 §4.2)."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@dataclass(slots=True)
class DeviceAuthorization:
    """A device code: what the CLI polls with, and the user code a person approves or cancels."""

    device_code: str = field(repr=False)
    user_code: str
    client_id: str
    scopes: tuple[str, ...]
    expires_at: float
    interval: int
    status: str = "pending"  # pending | approved | denied | used
    login: str | None = None  # who approved it
    last_poll: float | None = None


@dataclass(frozen=True, slots=True)
class _Consent:
    """An authorize request, between the consent page and its decision."""

    client_id: str
    redirect_uri: str
    state: str | None
    scopes: tuple[str, ...]
    challenge: str | None


@dataclass(slots=True)
class _Code:
    consent: _Consent
    login: str
    expires_at: float
    used: bool = False


class WebFlows:
    """GitHub's web host for one FakeGitHub (`fake.flows`): its apps, users and tokens are the fake's."""

    def __init__(
        self,
        fake: FakeGitHub,
        *,
        interval: int = DEVICE_INTERVAL,
        auto_approve: str | None = None,
        signed_in: str | None = None,
    ) -> None:
        self.interval = interval
        self.auto_approve = auto_approve  # a login: approve every device code and authorize request for them
        self.signed_in = signed_in  # the login prefilled at the browser (default: the first known user)
        self.device_code_lifetime = DEVICE_CODE_LIFETIME
        self.code_lifetime = CODE_LIFETIME
        self.unverified_emails: set[str] = set()  # casefolded logins
        self._fake = fake
        self._devices: dict[str, DeviceAuthorization] = {}  # by SHA-256 of the device code
        self._codes: dict[str, _Code] = {}  # by SHA-256 of the code
        self._consents: dict[str, _Consent] = {}  # by ticket

    def add_routes(self, app: web.Application) -> None:
        """Serve the flows at the root of `app`."""
        for method, path, handler in (
            ("POST", "/login/device/code", self._device_code),
            ("GET", "/login/device", self._device_page),
            ("POST", "/login/device", self._device_decision),
            ("GET", "/login/oauth/authorize", self._authorize),
            ("POST", "/login/oauth/authorize", self._authorize_decision),
            ("POST", "/login/oauth/access_token", self._access_token),
        ):
            app.router.add_route(method, path, handler)

    # -----------------------------------------------------------------------------------------------
    # The person at the browser, from Python

    def pending(self) -> list[DeviceAuthorization]:
        """Device codes waiting for a person, oldest first."""
        now = self._fake.now()
        return [d for d in self._devices.values() if d.status == "pending" and d.expires_at > now]

    def approve_device(
        self, user_code: str | None = None, *, login: str | None = None
    ) -> DeviceAuthorization:
        """Authorize a pending user code (the latest when None) for a known user (default: the one
        signed in); LookupError when there is no such code, ValueError for an unknown user."""
        device = self._pending(user_code)
        device.login = self._known(login or self.default_login())
        device.status = "approved"
        return device

    def deny_device(self, user_code: str | None = None) -> DeviceAuthorization:
        """Cancel a pending user code (the latest when None): the next poll gets access_denied."""
        device = self._pending(user_code)
        device.status = "denied"
        return device

    def default_login(self) -> str:
        """Who is signed in at the browser: `signed_in`, else the first user the fake knows."""
        return self.signed_in or next(iter(self._fake.logins.values()), "")

    def _pending(self, user_code: str | None) -> DeviceAuthorization:
        wanted = None if user_code is None else _normal_user_code(user_code)
        found = [d for d in self.pending() if wanted is None or d.user_code == wanted]
        if not found:
            raise LookupError(f"no pending device code {user_code or ''}".rstrip())
        return found[-1]

    def _known(self, login: str) -> str:
        known = self._fake.user(login)
        if known is None:
            raise ValueError(f"unknown user {login!r}: add_user or add_token first")
        return known[0]

    # -----------------------------------------------------------------------------------------------
    # The device flow

    async def _device_code(self, request: web.Request) -> web.StreamResponse:
        p = await params(request)
        cid = p.get("client_id", "")
        interrupted = await self._enter("oauth/device-code", cid)
        if interrupted is not None:
            return interrupted
        app = self._fake.settings.get(cid)
        if app is None:
            return answer(request, {"error": "Not Found"}, status=404)
        if not app.device_flow:
            return answer(request, oauth_error("device_flow_disabled"), status=400)
        device = DeviceAuthorization(
            secrets.token_hex(20),
            self._new_user_code(),
            cid,
            _scopes(app, p.get("scope", "")),
            self._fake.now() + self.device_code_lifetime,
            self.interval,
        )
        self._devices[sha256(device.device_code)] = device
        if self.auto_approve is not None:
            device.login, device.status = self._known(self.auto_approve), "approved"
        body: dict[str, str | int] = {
            "device_code": device.device_code,
            "user_code": device.user_code,
            "verification_uri": f"{request.url.origin()}/login/device",
            "expires_in": self.device_code_lifetime,
            "interval": device.interval,
        }
        return answer(request, body)

    def _new_user_code(self) -> str:
        taken = {d.user_code for d in self._devices.values()}
        while True:
            raw = "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(8))
            code = f"{raw[:4]}-{raw[4:]}"
            if code not in taken:
                return code

    async def _device_page(self, request: web.Request) -> web.StreamResponse:
        interrupted = await self._enter("oauth/device-page", "")
        if interrupted is not None:
            return interrupted
        return device_page(request.query.get("user_code", ""), self.default_login())

    async def _device_decision(self, request: web.Request) -> web.StreamResponse:
        p = await params(request)
        decision = "deny" if p.get("decision") == "deny" else "approve"
        interrupted = await self._enter("oauth/device-decision", "", target=decision)
        if interrupted is not None:
            return interrupted
        try:
            if decision == "deny":
                self.deny_device(p.get("user_code", ""))
                return page("Access denied", "<p>You cancelled the authorization of your device.</p>")
            self.approve_device(p.get("user_code", ""), login=p.get("login") or None)
        except LookupError:
            return page("Device Activation", "<p>The code you entered is incorrect or expired.</p>", 404)
        except ValueError:
            return page("Device Activation", "<p>No such user on this GitHub.</p>", 422)
        return page("Congratulations, you're all set!", "<p>Your device is now connected.</p>")

    def _device_grant(self, p: Params) -> dict[str, str | int]:
        cid = p.get("client_id", "")
        app = self._fake.settings.get(cid)
        if app is None:
            return oauth_error("incorrect_client_credentials")
        if not app.device_flow:
            return oauth_error("device_flow_disabled")
        device = self._devices.get(sha256(p.get("device_code", "")))
        if device is None or device.client_id != cid or device.status == "used":
            return oauth_error("incorrect_device_code")
        now = self._fake.now()
        early = device.last_poll is not None and now - device.last_poll < device.interval - POLL_ALLOWANCE
        device.last_poll = now
        if now >= device.expires_at:
            return oauth_error("expired_token")
        if early:
            device.interval += 5
            return {**oauth_error("slow_down"), "interval": device.interval}
        if device.status == "denied":
            return oauth_error("access_denied")
        if device.status == "pending" or device.login is None:
            return oauth_error("authorization_pending")
        device.status = "used"
        return self._issue(app, device.login, device.scopes)

    # -----------------------------------------------------------------------------------------------
    # The web flow

    async def _authorize(self, request: web.Request) -> web.StreamResponse:
        q = dict(request.query)
        cid = q.get("client_id", "")
        interrupted = await self._enter("oauth/authorize", cid)
        if interrupted is not None:
            return interrupted
        app = self._fake.settings.get(cid)
        if app is None:
            return page("Not Found", "<p>No application is registered with this client id.</p>", 404)
        consent = _consent(app, q)
        if isinstance(consent, web.Response):
            return consent
        if self.auto_approve is not None:
            return self._approve(consent, self._known(self.auto_approve))
        ticket = secrets.token_urlsafe(16)
        self._consents[ticket] = consent
        return consent_page(app.name, list(consent.scopes), ticket, q.get("login") or self.default_login())

    async def _authorize_decision(self, request: web.Request) -> web.StreamResponse:
        p = await params(request)
        decision = "deny" if p.get("decision") == "deny" else "approve"
        ticket = p.get("consent", "")
        consent = self._consents.get(ticket)
        interrupted = await self._enter(
            "oauth/authorize-decision", consent.client_id if consent else "", decision
        )
        if interrupted is not None:
            return interrupted  # the request stays open: the person may click again
        if consent is None or self._consents.pop(ticket, None) is None:
            return page("Not Found", "<p>This authorization request is unknown or was answered.</p>", 404)
        if decision == "deny":
            return redirect_to(
                consent.redirect_uri, {**oauth_error("access_denied", authorize=True), "state": consent.state}
            )
        try:
            login = self._known(p.get("login") or self.default_login())
        except ValueError:
            self._consents[ticket] = consent  # a person may correct the login and retry
            return page("Sign in to GitHub", "<p>No such user on this GitHub.</p>", 422)
        return self._approve(consent, login)

    def _approve(self, consent: _Consent, login: str) -> web.Response:
        code = secrets.token_hex(10)
        self._codes[sha256(code)] = _Code(consent, login, self._fake.now() + self.code_lifetime)
        return redirect_to(consent.redirect_uri, {"code": code, "state": consent.state})

    def _code_grant(self, p: Params) -> dict[str, str | int]:
        app = self._authenticated(p)
        if app is None:
            return oauth_error("incorrect_client_credentials")
        code = self._codes.get(sha256(p.get("code", "")))
        if (
            code is None
            or code.used
            or code.consent.client_id != app.client_id
            or code.expires_at <= self._fake.now()
        ):
            return oauth_error("bad_verification_code")
        if "redirect_uri" in p and p["redirect_uri"] != code.consent.redirect_uri:
            return oauth_error("redirect_uri_mismatch")
        challenge = code.consent.challenge
        verifier = p.get("code_verifier", "")
        if challenge is not None and not (
            _VERIFIER.fullmatch(verifier) and hmac.compare_digest(s256(verifier), challenge)
        ):
            return oauth_error("bad_verification_code")
        code.used = True
        return self._issue(app, code.login, code.consent.scopes)

    # -----------------------------------------------------------------------------------------------
    # The token endpoint

    async def _access_token(self, request: web.Request) -> web.StreamResponse:
        p = await params(request)
        grant = p.get("grant_type") or ("authorization_code" if "code" in p else "")
        refresh = p.get("refresh_token") if grant == "refresh_token" else None
        call = Call(
            "oauth/access-token",
            p.get("client_id", ""),
            self._fake.now(),
            refresh and sha256(refresh),
            _GRANTS.get(grant, grant),
        )
        interrupted = await self._fake.enter(call)
        if interrupted is not None:
            return interrupted
        handlers: dict[str, Callable[[Params], dict[str, str | int]]] = {
            DEVICE_GRANT: self._device_grant,
            "authorization_code": self._code_grant,
            "refresh_token": self._refresh_grant,
        }
        handler = handlers.get(grant)
        return answer(request, handler(p) if handler else oauth_error("unsupported_grant_type"))

    def _refresh_grant(self, p: Params) -> dict[str, str | int]:
        app = self._authenticated(p)
        if app is None:
            return oauth_error("incorrect_client_credentials")
        issued = self._fake.refresh(app.client_id, p.get("refresh_token", ""))
        return oauth_error("bad_refresh_token") if issued is None else issued.body()

    def _authenticated(self, p: Params) -> AppSettings | None:
        """The app named by client_id, when client_secret is its secret."""
        app = self._fake.settings.get(p.get("client_id", ""))
        # SECURITY: constant-time comparison, even in a fake, so the pattern is never copied wrong
        if app is None or not hmac.compare_digest(p.get("client_secret", "").encode(), app.secret.encode()):
            return None
        return app

    def _issue(self, app: AppSettings, login: str, scopes: tuple[str, ...]) -> dict[str, str | int]:
        if app.kind == GITHUB_APP and login.casefold() in self.unverified_emails:
            return oauth_error("unverified_user_email")
        return self._fake.issue(login, client_id=app.client_id, scopes=scopes).body()

    async def _enter(self, op: str, client_id: str, target: str | None = None) -> web.Response | None:
        return await self._fake.enter(Call(op, client_id, self._fake.now(), None, target))


def _scopes(app: AppSettings, asked: str) -> tuple[str, ...]:
    """The scopes a flow grants: an OAuth App's asked for (space- or comma-separated), a GitHub App none."""
    if app.kind != OAUTH_APP:
        return ()
    found: list[str] = []
    for scope in re.split(r"[\s,]+", asked):
        if scope and scope not in found:
            found.append(scope)
    return tuple(found)


def _consent(app: AppSettings, q: dict[str, str]) -> _Consent | web.Response:
    """What an authorize request asks for; or GitHub's answer to one it will not show."""
    state = q.get("state")
    redirect_uri = q.get("redirect_uri") or (app.callback_urls[0] if app.callback_urls else "")
    if not redirect_uri:
        return page("Bad request", "<p>No redirect_uri, and the app has no callback URL.</p>", 400)
    if not app.redirect_allowed(redirect_uri):
        return redirect_to(app.callback_urls[0], {**oauth_error("redirect_uri_mismatch"), "state": state})
    challenge, method = q.get("code_challenge"), q.get("code_challenge_method")
    if (challenge is not None or method is not None) and (
        method != "S256" or not _CHALLENGE.fullmatch(challenge or "")
    ):
        return redirect_to(redirect_uri, {**oauth_error("invalid_request"), "state": state})
    return _Consent(app.client_id, redirect_uri, state, _scopes(app, q.get("scope", "")), challenge)


def _normal_user_code(code: str) -> str:
    raw = re.sub(r"[\s-]", "", code).upper()
    return f"{raw[:4]}-{raw[4:]}" if len(raw) == 8 else raw
