"""A fake GitHub: the whole OAuth Apps API, the membership REST API (organisations, teams,
repositories, the GitHub App: DESIGN §10) and the web host's device and web flows (DESIGN §12), with
GitHub's semantics and answer shapes, for tests, the demo and other teams' integration tests
(`gateway fake-github`, in `fake_github_cli`).

    fake = FakeGitHub({"Ov23li…": "secret", "Iv1.…": "secret"}, device_interval=0)
    runner = await fake.start()           # or aiohttp_server(fake.app()); fake.web_url is set by start
    token = fake.add_token("alice", 7, ["repo"])                  # the first app's: an OAuth App, gho_
    user = fake.add_token("bob", 8, client_id="Iv1.…")            # a GitHub App's: ghu_, 8 hours
    pair = fake.issue("bob", client_id="Iv1.…")                   # Issued: ghu_ and its ghr_
    fake.flows.auto_approve = "alice"     # device codes and authorize requests approved for alice

The API is served at the root (github.com) and under `/api/v3` (GHES); the flows only at the root,
`/login/...`, which is the web URL of both (`https://github.com/login/…`, `https://HOSTNAME/login/…`).

It knows apps of GitHub's two kinds (`fake_github_apps`: an OAuth App issues `gho_` tokens with
scopes that never expire; a GitHub App `ghu_` tokens without scopes, expiring after 8 hours, with
single-use `ghr_` refresh tokens good for 6 months), a registry of the tokens they issued to users
(`fake_github_tokens`: `register_app`, `add_token`, `issue`, `refresh`, `revoke`, `lookup`, `live`;
a token an app's kind could not issue is refused with ValueError), and accounts (users and
organizations the GitHub App is installed on, with their repositories) that scoped tokens can
target. Tokens are kept by their SHA-256, like GitHub's `hashed_token`; `calls` records every call by
GitHub's operationId (the flows' by the names in `fake_github_oauth`), never a token in clear.

What GitHub does, the fake does:
- its API's rules (`fake_github_rules`): no User-Agent 403, an X-GitHub-Api-Version it does not
  serve 400; X-GitHub-Request-Id and X-GitHub-Media-Type on every answer, and the caller's
  X-RateLimit-* (an OAuth Apps API call spends the app's budget, `oauth-app`; a REST call its
  caller's): `exhaust_rate_limit` (or `rate_budget` calls in an hour) makes GitHub's 403/429;
- an unknown app or token is 404 (the operation's), a path it does not serve 404 (GitHub's generic
  one: a removed path form too), wrong credentials for a known app 401, a body that is not JSON 400,
  a missing or empty `access_token` 422 `missing_field` (no body at all reads as `{}`), one of
  another type 422 `invalid`;
- reset mints a new token with the same prefix and the old one stops working; delete revokes one
  token; delete grant revokes every token of that user for that app (other apps' stay valid);
- scoping is a GitHub App's: an OAuth App's client id is refused with 422 (GitHub does not document
  this answer; 422 is what it gives any token that cannot be scoped), and it needs a non-scoped user
  token (`ghu_`; others 422) and a target or target_id (422 without); an
  unknown target (`add_account`) is 404, a repository not the target's or a permission level other
  than read/write/admin 422 (simpler than GitHub: it does not check which permissions the app was
  granted, nor which levels each permission has). The scoped token is a new `ghu_` token of the same
  user, expiring with its parent, that checks as valid and carries its `Restriction`
  (`lookup(token).restriction`: what an upstream would let it do); without `permissions` it gets the
  installation's.
- `legacy_paths=False` is github.com / GHES >= 3.4: the deprecated path forms
  (`…/tokens/{access_token}`, `…/grants/{access_token}`) answer GitHub's 404 for a path it does not
  serve; `True` is an old GHES, where they work (and the body forms too), and whose answers have no
  `installation` (GHES 2.22's schema admits no null one) unless it is a scoped token's.

The membership API's state and Python API (add_user, add_org, add_member, add_team, add_repo,
set_role, set_app, install, authorize_sso, exhaust_rate_limit, remove_member, …) are `Directory`'s
(`fake_github_orgs`), which FakeGitHub is; its endpoints and GitHub's rules for them are in
`fake_github_rest`, its answer bodies in `fake_github_bodies`. The flows and their Python API
(`fake.flows`: auto_approve, signed_in, interval, approve_device, deny_device, pending) are
`fake_github_oauth`'s. Here: what every call goes through.

Switches for failure tests, on every endpoint: `latency` (seconds before every answer), `outage`
(answer every call with that status), `hang` (answer nothing until it is switched off or the server
stops), `exhaust_rate_limit` (GitHub's 403/429 past a spent budget; `restore_rate_limit`).
`count(*ops, target=…)` counts calls by operationId and what they asked about.

Longer than most modules here: one operation of GitHub's per method, each short, and the checks they
share (the app's credentials, the body, the token) read best beside them; the state they act on is in
`fake_github_tokens` and `fake_github_model`.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from . import fake_github_callers as callers
from .fake_github_apps import GITHUB_APP, OAUTH_APP, AppSettings, Issued, new_token
from .fake_github_callers import Caller
from .fake_github_model import (
    Call,
    FakeAccount,
    FakeToken,
    Restriction,
    authorization,
    error,
    outage,
    scope_request,
    sha256,
    validation_failed,
)
from .fake_github_oauth import DEVICE_INTERVAL, DeviceAuthorization, WebFlows
from .fake_github_orgs import GitHubApp, Installation, Member, Org, Repo, Team
from .fake_github_rest import ROUTES as REST_ROUTES
from .fake_github_rest import RestRoute
from .fake_github_rules import ANONYMOUS_BUDGET, api_rules, route_not_found
from .fake_github_tokens import Registry

__all__ = [
    "DEMO_APP",
    "DEMO_OAUTH_APP",
    "GITHUB_APP",
    "OAUTH_APP",
    "AppSettings",
    "Call",
    "DeviceAuthorization",
    "FakeAccount",
    "FakeGitHub",
    "FakeToken",
    "GitHubApp",
    "Installation",
    "Issued",
    "Member",
    "Org",
    "Repo",
    "Restriction",
    "Team",
    "WebFlows",
]

DEMO_APP = ("Iv1.demo0000000000", "demo-secret")  # a GitHub App
DEMO_OAUTH_APP = ("Ov23lidemo0000000000", "demo-oauth-secret")  # an OAuth App
_CHECKS = frozenset({"apps/check-token", "apps/check-authorization"})
_TOKEN_PREFIX = re.compile(r"github_pat_|[a-z]{2,4}_")
_PREFIXES = ("", "/api/v3")

Answer = Callable[["FakeGitHub", web.Request, str, str, str, "FakeToken", Mapping[str, object]], web.Response]


@dataclass(frozen=True, slots=True)
class _Route:
    op: str  # GitHub's operationId
    method: str
    path: str
    answer: Answer  # given the request, op, client_id, token, its entry and the JSON body, once the app is
    # authenticated and the token found live for it

    @property
    def legacy(self) -> bool:
        return "{access_token}" in self.path


class FakeGitHub(Registry):
    """GitHub in one process: the OAuth Apps API (apps, tokens, accounts) and the membership REST API
    (organisations, teams, repositories, the GitHub App: `Directory`), switches and a call log."""

    def __init__(
        self,
        apps: Mapping[str, str],
        *,
        legacy_paths: bool = False,
        clock: Callable[[], float] = time.time,
        device_interval: int = DEVICE_INTERVAL,
        auto_approve: str | None = None,
        signed_in: str | None = None,
    ) -> None:
        super().__init__(apps, clock=clock)
        self.legacy_paths = legacy_paths
        self.latency = 0.0
        self.outage: int | None = None
        self.calls: list[Call] = []
        self.web_url: str | None = None  # where `start` serves it (the API too, github.com style)
        self.flows = WebFlows(self, interval=device_interval, auto_approve=auto_approve, signed_in=signed_in)
        self._hang = False
        self._wake: asyncio.Event | None = None
        self._closing = False
        self._arrivals: list[tuple[int, asyncio.Future[None]]] = []

    def __repr__(self) -> str:
        return f"<FakeGitHub apps={list(self.apps)} tokens={len(self._tokens)} calls={len(self.calls)}>"

    # -----------------------------------------------------------------------------------------------
    # The call log and switches

    def check_calls(self, token: str | None = None) -> int:
        """How many check calls (either form) arrived, for `token` only when given."""
        digest = None if token is None else sha256(token)
        return sum(1 for c in self.calls if c.op in _CHECKS and (digest is None or c.token_sha256 == digest))

    def count(self, *ops: str, target: str | None = None) -> int:
        """How many calls of these operations (GitHub's operationIds; any when none is named) arrived,
        about `target` only when given (`acme`, `acme/sre/alice`, compared case-insensitively)."""
        return sum(
            1
            for c in self.calls
            if (not ops or c.op in ops)
            and (target is None or (c.target or "").casefold() == target.casefold())
        )

    async def wait_for_calls(self, count: int) -> None:
        """Wait until at least `count` calls have arrived (e.g. held there by `hang`)."""
        if len(self.calls) >= count:
            return
        arrived = asyncio.get_running_loop().create_future()
        self._arrivals.append((count, arrived))
        try:
            await arrived
        finally:
            self._arrivals.remove((count, arrived))

    async def enter(self, call: Call) -> web.Response | None:
        """Log a call and put it through the switches: the answer that cuts it short, or None. Every
        endpoint, the web flows' too, starts here."""
        self.calls.append(call)
        for count, arrived in self._arrivals:
            if len(self.calls) >= count and not arrived.done():
                arrived.set_result(None)
        return await self._switches(call.op)

    @property
    def hang(self) -> bool:
        """While True, calls get no answer; switching it off lets the held ones proceed."""
        return self._hang

    @hang.setter
    def hang(self, value: bool) -> None:
        if value and not self._hang:
            self._wake = asyncio.Event()
        self._hang = value
        if not value and self._wake is not None:
            self._wake.set()

    # -----------------------------------------------------------------------------------------------
    # HTTP

    def app(self) -> web.Application:
        """The aiohttp application serving the API at / and /api/v3, and the web flows at /login."""
        app = web.Application(middlewares=[api_rules, _json_errors])
        self.flows.add_routes(app)
        for prefix in _PREFIXES:
            for route in _ROUTES:
                app.router.add_route(
                    route.method, f"{prefix}/applications/{{client_id}}{route.path}", self._handler(route)
                )
            for rest_route in REST_ROUTES:
                app.router.add_route(
                    rest_route.method, prefix + rest_route.path, self._rest_handler(rest_route)
                )
        app.on_startup.append(self._open)
        app.on_shutdown.append(self._release)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> web.AppRunner:
        """Serve the fake on a real socket; sets `web_url` (the web flows, and the API github.com style;
        GHES style it is under `web_url + "/api/v3"`). The caller cleans the runner up."""
        runner = web.AppRunner(self.app(), handle_signals=False, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        bound_host, bound_port = runner.addresses[0][:2]
        self.web_url = f"http://{f'[{bound_host}]' if ':' in bound_host else bound_host}:{bound_port}"
        return runner

    async def _open(self, _app: web.Application) -> None:
        self._closing = False

    async def _release(self, _app: web.Application) -> None:
        self._closing = True  # calls held by `hang` or arriving now get a 503 and the server can stop
        if self._wake is not None:
            self._wake.set()

    def _handler(self, route: _Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._serve(request, route)

        return handle

    def _rest_handler(self, route: RestRoute) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._serve_rest(request, route)

        return handle

    async def _serve(self, request: web.Request, route: _Route) -> web.StreamResponse:
        """What every operation shares: the call log, the switches, the endpoint, app and credentials,
        the app's rate budget; then the body, the token and the operation's own answer."""
        op, cid = route.op, request.match_info["client_id"]
        body, value = await _read_body(request, route)
        token = value if isinstance(value, str) and value else None
        interrupted = await self.enter(Call(op, cid, self._clock(), None if token is None else sha256(token)))
        if interrupted is not None:
            return interrupted
        if route.legacy and not self.legacy_paths:
            return self._anonymous(request, route_not_found())  # a path this GitHub does not serve
        if cid not in self.apps:
            return self._anonymous(request, error(404, "Not Found", op))
        if not self._authenticated(request, cid):
            return self._anonymous(request, error(401, "Requires authentication", op))
        # GitHub: an OAuth Apps API call made with the app's credentials spends the app's budget
        budget, limit = self.spend(f"oauth-app:{cid}")
        if limit is not None:
            answer = callers.rate_limited(limit.status, limit.retry_after, f"app {cid}", op)
        else:
            answer = self._operate(request, route, cid, body, value)
        answer.headers.update(budget.headers())
        return answer

    def _operate(
        self, request: web.Request, route: _Route, cid: str, body: object, value: object
    ) -> web.Response:
        """An authenticated operation: GitHub's refusal of its body or token, else its answer."""
        op = route.op
        if body is None:
            return error(400, "Problems parsing JSON", op)
        if value is None or value == "" or not isinstance(body, dict):
            return validation_failed(op, field="access_token")
        if not isinstance(value, str):
            return validation_failed(op, field="access_token", code="invalid")
        entry = self.live(value, cid)
        if entry is None:  # unknown, revoked or expired, or another app's
            return error(404, "Not Found", op)
        return route.answer(self, request, op, cid, value, entry, body)

    def _anonymous(self, request: web.Request, answer: web.Response) -> web.Response:
        """An answer given before the caller is known, with the budget of the caller's address."""
        budget, _ = self.spend(f"address:{request.remote}", per_hour=ANONYMOUS_BUDGET)
        answer.headers.update(budget.headers())
        return answer

    async def _switches(self, op: str) -> web.Response | None:
        """The failure switches every call goes through: latency, hang, shutdown, outage."""
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        if self._hang and self._wake is not None:
            await self._wake.wait()
        if self._closing:
            return error(503, "Service Unavailable", op)
        if self.outage is not None:
            return outage(self.outage, op)
        return None

    async def _serve_rest(self, request: web.Request, route: RestRoute) -> web.StreamResponse:
        """What every membership operation shares: the call log, the switches, the credentials, the
        rate limit; then the operation's own answer, with the rate-limit headers."""
        caller = callers.authenticate(self, request, route.op)
        entry = caller.entry if isinstance(caller, Caller) else None
        credential = request.headers.get("Authorization", "").partition(" ")[2].strip()
        target = "/".join(request.match_info.values()) or None
        app = self.github_app
        client_id = entry.client_id if entry is not None else "" if app is None else app.client_id
        digest = sha256(credential) if credential else None
        interrupted = await self.enter(Call(route.op, client_id, self._clock(), digest, target))
        if interrupted is not None:
            return interrupted
        if not isinstance(caller, Caller):
            return self._anonymous(request, caller)
        who, named = callers.rate_key(caller, self)
        budget, limit = self.spend(who, free=not route.spends)
        if limit is not None and route.spends:
            answer = callers.rate_limited(limit.status, limit.retry_after, named, route.op)
        else:
            answer = callers.wrong_kind(caller, route.kinds, route.op) or route.answer(self, request, caller)
        answer.headers.update(budget.headers())
        if caller.oauth and entry is not None:
            answer.headers["X-OAuth-Scopes"] = ", ".join(entry.scopes)
        return answer

    def _authenticated(self, request: web.Request, cid: str) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        try:
            login, colon, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except ValueError:
            return False
        # SECURITY: constant-time comparisons, even in a fake, so the pattern is never copied wrong
        same_id = hmac.compare_digest(login.encode(), cid.encode())
        same_secret = hmac.compare_digest(password.encode(), self.apps[cid].encode())
        return scheme.lower() == "basic" and bool(colon) and same_id and same_secret

    # -----------------------------------------------------------------------------------------------
    # The operations, once the app is authenticated and the token read

    def _check(
        self,
        request: web.Request,
        op: str,
        _cid: str,
        token: str,
        entry: FakeToken,
        _body: Mapping[str, object],
    ) -> web.Response:
        return self._authorization(request, op, token, entry)

    def _reset(
        self,
        request: web.Request,
        op: str,
        _cid: str,
        token: str,
        entry: FakeToken,
        _body: Mapping[str, object],
    ) -> web.Response:
        match = _TOKEN_PREFIX.match(token)
        new = new_token(match.group(0) if match else "")
        entry.revoked = True  # the same authorization, with a new token: the old one stops working
        renewed = dataclasses.replace(entry, revoked=False, updated_at=self._clock())
        self._tokens[sha256(new)] = renewed
        return self._authorization(request, op, new, renewed)

    def _delete(
        self,
        _request: web.Request,
        op: str,
        _cid: str,
        _token: str,
        entry: FakeToken,
        _body: Mapping[str, object],
    ) -> web.Response:
        entry.revoked = True
        return web.Response(status=204)

    def _delete_grant(
        self,
        _request: web.Request,
        op: str,
        cid: str,
        token: str,
        entry: FakeToken,
        _body: Mapping[str, object],
    ) -> web.Response:
        for other in self._tokens.values():
            if other.client_id == cid and other.user_id == entry.user_id:
                other.revoked = True
        return web.Response(status=204)

    def _scope(
        self,
        request: web.Request,
        op: str,
        cid: str,
        token: str,
        entry: FakeToken,
        body: Mapping[str, object],
    ) -> web.Response:
        if self.settings[cid].kind == OAUTH_APP:
            why = "an OAuth App cannot create scoped tokens: expected a GitHub App's user access token"
            return validation_failed(op, field="access_token", code="invalid", message=why)
        if not token.startswith("ghu_") or entry.restriction is not None:
            why = "expected a GitHub App user access token that is not scoped already"
            return validation_failed(op, field="access_token", code="invalid", message=why)
        restriction = scope_request(self._accounts.values(), op, body)
        if isinstance(restriction, web.Response):
            return restriction
        scoped = FakeToken(
            id=next(self._ids),
            login=entry.login,
            user_id=entry.user_id,
            scopes=(),
            client_id=cid,
            created_at=self._clock(),
            expires_at=entry.expires_at,
            restriction=restriction,
        )
        new = new_token("ghu_")
        self._tokens[sha256(new)] = scoped
        return self._authorization(request, op, new, scoped)

    def _authorization(self, request: web.Request, op: str, token: str, entry: FakeToken) -> web.Response:
        site = f"{request.scheme}://{request.host}"
        api = site + ("/api/v3" if request.path.startswith("/api/v3/") else "")
        target = entry.restriction
        account = None if target is None else self._accounts.get(target.account.casefold())
        body = authorization(site, api, token, entry, account)
        if (self.legacy_paths or op in _LEGACY_OPS) and body["installation"] is None:
            # An old GHES (and the deprecated path forms are an old server's): its answers predate
            # scoped tokens, and its schema (GHES 2.22) admits no `installation: null` under OpenAPI
            # 3.0's nullable rules, in the body forms' answers as in the path forms'.
            del body["installation"]
        return web.json_response(body)


_ROUTES = (  # paths below /applications/{client_id}
    _Route("apps/check-token", "POST", "/token", FakeGitHub._check),
    _Route("apps/reset-token", "PATCH", "/token", FakeGitHub._reset),
    _Route("apps/delete-token", "DELETE", "/token", FakeGitHub._delete),
    _Route("apps/delete-authorization", "DELETE", "/grant", FakeGitHub._delete_grant),
    _Route("apps/scope-token", "POST", "/token/scoped", FakeGitHub._scope),
    _Route("apps/check-authorization", "GET", "/tokens/{access_token}", FakeGitHub._check),
    _Route("apps/reset-authorization", "POST", "/tokens/{access_token}", FakeGitHub._reset),
    _Route(
        "apps/revoke-authorization-for-application", "DELETE", "/tokens/{access_token}", FakeGitHub._delete
    ),
    _Route("apps/revoke-grant-for-application", "DELETE", "/grants/{access_token}", FakeGitHub._delete_grant),
)
_LEGACY_OPS = frozenset(route.op for route in _ROUTES if route.legacy)


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Unknown paths and methods get GitHub's JSON 404, as on github.com, not aiohttp's text page."""
    try:
        return await handler(request)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        return route_not_found()


async def _read_body(request: web.Request, route: _Route) -> tuple[object, object]:
    """The request's JSON body (None: not JSON; an empty body is `{}`, as GitHub reads it) and its
    `access_token` value (any type; None when absent); for a path form, the token in the path."""
    if route.legacy:
        return {}, request.match_info["access_token"]
    raw = await request.read()
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return None, None
    return body, body.get("access_token") if isinstance(body, dict) else None
