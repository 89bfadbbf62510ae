"""A fake GitHub: the OAuth Apps endpoints with GitHub's semantics and answer shapes, for tests, the
demo and other teams' integration tests (`gateway fake-github`).

It knows apps (client_id → secret) and a registry of tokens, each issued to a user by one app (a
grant is the set of a user's tokens for one app). Tokens are kept by their SHA-256, like GitHub's
`hashed_token`; `calls` records every call, never a token in clear. Answers follow GitHub: an unknown
app or token is 404, wrong credentials for a known app 401, a missing `access_token` 422. Paths are
served at the root (github.com) and under `/api/v3` (GHES). The deprecated path forms
(`…/tokens/{access_token}`) answer 404 unless `legacy_paths` (an old GHES).

Switches for failure tests: `latency` (seconds before every answer), `outage` (answer every call with
that status), `hang` (answer nothing until it is switched off or the server stops).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import re
import secrets
import signal
import string
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus

from aiohttp import web

__all__ = ["DEMO_APP", "Call", "FakeGitHub", "FakeToken", "add_arguments", "run"]

DEMO_APP = ("Iv1.demo0000000000", "demo-secret")
DOCS = "https://docs.github.com/rest/apps/oauth-applications"
_ANCHORS = {"check-token": "#check-a-token", "check-authorization": "#check-an-authorization"}
_CHECKS = frozenset(_ANCHORS)
_ALPHABET = string.ascii_letters + string.digits
_SCOPES = re.compile(r"[a-z0-9:_-]+(,[a-z0-9:_-]+)*")
_PREFIXES = ("", "/api/v3")


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Call:
    """One call the fake received: GitHub's operation name, the app, when, and the token's SHA-256."""

    op: str
    client_id: str
    at: float
    token_sha256: str | None


@dataclass(slots=True)
class FakeToken:
    """A token the fake issued: to whom, by which app, with which scopes, until when."""

    id: int
    login: str
    user_id: int
    scopes: tuple[str, ...]
    client_id: str
    created_at: float
    expires_at: float | None
    revoked: bool = False


class FakeGitHub:
    """GitHub's OAuth Apps API in one process: apps, a token registry, switches and a call log."""

    def __init__(
        self, apps: Mapping[str, str], *, legacy_paths: bool = False, clock: Callable[[], float] = time.time
    ) -> None:
        if not apps:
            raise ValueError("a fake GitHub needs at least one app (client_id → secret)")
        self.apps = dict(apps)
        self.legacy_paths = legacy_paths
        self.latency = 0.0
        self.outage: int | None = None
        self.calls: list[Call] = []
        self._clock = clock
        self._tokens: dict[str, FakeToken] = {}  # by SHA-256 hex of the token
        self._ids = itertools.count(1)
        self._hang = False
        self._wake: asyncio.Event | None = None
        self._closing = False
        self._arrivals: list[tuple[int, asyncio.Future[None]]] = []

    def __repr__(self) -> str:
        return f"<FakeGitHub apps={list(self.apps)} tokens={len(self._tokens)} calls={len(self.calls)}>"

    # -----------------------------------------------------------------------------------------------
    # Registry and switches

    def add_token(
        self,
        login: str,
        user_id: int,
        scopes: Sequence[str] = (),
        *,
        client_id: str | None = None,
        expires_in: float | None = None,
        prefix: str = "gho_",
        token: str | None = None,
    ) -> str:
        """Issue a token to a user by an app (default: the first); returns the token."""
        client_id = next(iter(self.apps)) if client_id is None else client_id
        if client_id not in self.apps:
            raise ValueError(f"unknown app {client_id!r}; known: {', '.join(self.apps)}")
        if user_id <= 0:
            raise ValueError("expected a positive user id")
        token = token if token is not None else prefix + "".join(secrets.choice(_ALPHABET) for _ in range(36))
        if _sha256(token) in self._tokens:
            raise ValueError("that token is already registered")
        now = self._clock()
        self._tokens[_sha256(token)] = FakeToken(
            id=next(self._ids),
            login=login,
            user_id=user_id,
            scopes=tuple(scopes),
            client_id=client_id,
            created_at=now,
            expires_at=None if expires_in is None else now + expires_in,
        )
        return token

    def revoke(self, token: str) -> bool:
        """Revoke a token; False when the fake never issued it."""
        entry = self._tokens.get(_sha256(token))
        if entry is not None:
            entry.revoked = True
        return entry is not None

    def live(self, token: str, client_id: str) -> FakeToken | None:
        """The registry entry of a token that `client_id` may see: issued by it, not revoked or expired."""
        entry = self._tokens.get(_sha256(token))
        if entry is None or entry.revoked or entry.client_id != client_id:
            return None
        if entry.expires_at is not None and entry.expires_at <= self._clock():
            return None
        return entry

    def check_calls(self, token: str | None = None) -> int:
        """How many check calls (either form) arrived, for `token` only when given."""
        digest = None if token is None else _sha256(token)
        return sum(1 for c in self.calls if c.op in _CHECKS and (digest is None or c.token_sha256 == digest))

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

    def _arrive(self, call: Call) -> None:
        self.calls.append(call)
        for count, arrived in self._arrivals:
            if len(self.calls) >= count and not arrived.done():
                arrived.set_result(None)

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
        """The aiohttp application serving the fake at / and /api/v3."""
        app = web.Application(middlewares=[_json_errors])
        for prefix in _PREFIXES:
            app.router.add_post(prefix + "/applications/{client_id}/token", self._check_token)
            app.router.add_get(prefix + "/applications/{client_id}/tokens/{access_token}", self._check_legacy)
        app.on_startup.append(self._open)
        app.on_shutdown.append(self._release)
        return app

    async def _open(self, _app: web.Application) -> None:
        self._closing = False

    async def _release(self, _app: web.Application) -> None:
        self._closing = True  # calls held by `hang` or arriving now get a 503 and the server can stop
        if self._wake is not None:
            self._wake.set()

    async def _check_token(self, request: web.Request) -> web.StreamResponse:
        op, cid = "check-token", request.match_info["client_id"]
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        token = body.get("access_token") if isinstance(body, dict) else None
        token = token if isinstance(token, str) and token else None

        async def answer() -> web.StreamResponse:
            if body is None:
                return _error(400, "Problems parsing JSON", op)
            if token is None:
                return _validation_failed(op, field="access_token")
            return self._authorization_or_404(request, op, token, cid)

        return await self._serve(request, op, cid, token, answer)

    async def _check_legacy(self, request: web.Request) -> web.StreamResponse:
        op, cid, token = (
            "check-authorization",
            request.match_info["client_id"],
            request.match_info["access_token"],
        )

        async def answer() -> web.StreamResponse:
            return self._authorization_or_404(request, op, token, cid)

        return await self._serve(request, op, cid, token, answer, exists=self.legacy_paths)

    async def _serve(
        self,
        request: web.Request,
        op: str,
        cid: str,
        token: str | None,
        answer: Callable[[], Awaitable[web.StreamResponse]],
        *,
        exists: bool = True,
    ) -> web.StreamResponse:
        """What every operation shares: the call log, the switches, the endpoint, app and credentials."""
        self._arrive(Call(op, cid, self._clock(), None if token is None else _sha256(token)))
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        if self._hang and self._wake is not None:
            await self._wake.wait()
        if self._closing:
            return _error(503, "Service Unavailable", op)
        if self.outage is not None:
            return _outage(self.outage, op)
        if not exists or cid not in self.apps:
            return _error(404, "Not Found", op)
        if not self._authenticated(request, cid):
            return _error(401, "Requires authentication", op)
        return await answer()

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

    def _authorization_or_404(self, request: web.Request, op: str, token: str, cid: str) -> web.Response:
        entry = self.live(token, cid)
        if entry is None:
            return _error(404, "Not Found", op)
        body = self._authorization(request, token, entry)
        if op == "check-authorization":
            # The deprecated path forms are an old server's: its answers predate scoped tokens, and its
            # schema (GHES 2.22) admits no `installation: null` under OpenAPI 3.0's nullable rules.
            del body["installation"]
        return web.json_response(body)

    def _authorization(self, request: web.Request, token: str, entry: FakeToken) -> dict[str, object]:
        """The `authorization` object GitHub answers with (it echoes the token back)."""
        site = f"{request.scheme}://{request.host}"
        api = site + ("/api/v3" if request.path.startswith("/api/v3/") else "")
        user_api = f"{api}/users/{entry.login}"
        node_id = base64.b64encode(f"04:User{entry.user_id}".encode()).decode()
        return {
            "id": entry.id,
            "url": f"{api}/authorizations/{entry.id}",
            "scopes": list(entry.scopes),
            "token": token,
            "token_last_eight": token[-8:],
            "hashed_token": _sha256(token),
            "app": {"client_id": entry.client_id, "name": f"Fake app {entry.client_id}", "url": site},
            "note": None,
            "note_url": None,
            "updated_at": _iso(entry.created_at),
            "created_at": _iso(entry.created_at),
            "fingerprint": None,
            "expires_at": None if entry.expires_at is None else _iso(entry.expires_at),
            "user": {
                "login": entry.login,
                "id": entry.user_id,
                "node_id": node_id,
                "avatar_url": f"{site}/avatars/u/{entry.user_id}",
                "gravatar_id": "",
                "url": user_api,
                "html_url": f"{site}/{entry.login}",
                "followers_url": f"{user_api}/followers",
                "following_url": f"{user_api}/following{{/other_user}}",
                "gists_url": f"{user_api}/gists{{/gist_id}}",
                "starred_url": f"{user_api}/starred{{/owner}}{{/repo}}",
                "subscriptions_url": f"{user_api}/subscriptions",
                "organizations_url": f"{user_api}/orgs",
                "repos_url": f"{user_api}/repos",
                "events_url": f"{user_api}/events{{/privacy}}",
                "received_events_url": f"{user_api}/received_events",
                "type": "User",
                "site_admin": False,
            },
            "installation": None,
        }


def _error(status: int, message: str, op: str | None = None) -> web.Response:
    """GitHub's basic-error body."""
    doc = DOCS + _ANCHORS.get(op or "", "")
    return web.json_response({"message": message, "documentation_url": doc}, status=status)


def _validation_failed(op: str | None, *, field: str | None = None) -> web.Response:
    """GitHub's validation-error body (422)."""
    body: dict[str, object] = {
        "message": "Validation Failed",
        "documentation_url": DOCS + _ANCHORS.get(op or "", ""),
    }
    if field is not None:
        body["errors"] = [{"resource": "OauthAccess", "field": field, "code": "missing_field"}]
    return web.json_response(body, status=422)


def _outage(status: int, op: str) -> web.Response:
    if status == 422:
        return _validation_failed(op)
    if status == 500:
        return web.json_response({"message": "Server Error"}, status=500)
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return (
        _error(status, phrase, op) if status < 500 else web.json_response({"message": phrase}, status=status)
    )


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Unknown paths and methods get GitHub's JSON 404, as on github.com, not aiohttp's text page."""
    try:
        return await handler(request)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        return _error(404, "Not Found")


# ---------------------------------------------------------------------------------------------------
# `gateway fake-github`


def _app_arg(value: str) -> tuple[str, str]:
    client_id, _, secret = value.partition(":")
    if not client_id or not secret:
        raise argparse.ArgumentTypeError(f"expected CLIENT_ID:SECRET, got {value!r}")
    return client_id, secret


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `gateway fake-github`."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=9100, help="port to listen on (default: %(default)s)")
    parser.add_argument(
        "--app",
        dest="apps",
        action="append",
        type=_app_arg,
        metavar="CLIENT_ID:SECRET",
        help=f"an app the fake knows (repeatable; default: {':'.join(DEMO_APP)})",
    )
    parser.add_argument(
        "--token",
        dest="tokens",
        action="append",
        metavar="LOGIN:ID:SCOPES[:CLIENT_ID]",
        help="issue a token and print it (repeatable); SCOPES comma-separated, may be empty",
    )
    parser.add_argument(
        "--legacy-paths", action="store_true", help="serve the deprecated …/tokens/{token} paths"
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, metavar="SECONDS", help="delay before each answer"
    )


def _issue(fake: FakeGitHub, spec: str) -> tuple[str, str]:
    """Issue the token a --token spec describes; returns (description, token)."""
    parts = spec.split(":", 2)
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit():
        raise ValueError(f"--token: expected LOGIN:ID:SCOPES[:CLIENT_ID], got {spec!r}")
    login, uid, scopes = parts
    client_id = next(iter(fake.apps))
    head, _, tail = scopes.rpartition(":")
    if tail in fake.apps:  # scopes contain ':' too (read:org): a trailing known client_id is the app
        scopes, client_id = head, tail
    if scopes and not _SCOPES.fullmatch(scopes):
        raise ValueError(f"--token: expected comma-separated scopes and a known CLIENT_ID, got {spec!r}")
    token = fake.add_token(login, int(uid), scopes.split(",") if scopes else (), client_id=client_id)
    return f"{login} (id {uid}, app {client_id}, scopes: {scopes or '-'})", token


def run(args: argparse.Namespace) -> int:
    """Serve a fake GitHub until SIGINT or SIGTERM; returns the exit status."""
    fake = FakeGitHub(dict(args.apps or [DEMO_APP]), legacy_paths=args.legacy_paths)
    fake.latency = args.latency
    try:
        issued = [_issue(fake, spec) for spec in args.tokens or ()]
    except ValueError as exc:
        print(f"gateway fake-github: {exc}", file=sys.stderr)
        return 2
    asyncio.run(_serve_until_signal(fake, args.host, args.port, issued))
    return 0


async def _serve_until_signal(fake: FakeGitHub, host: str, port: int, issued: list[tuple[str, str]]) -> None:
    runner = web.AppRunner(fake.app(), handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C still raises KeyboardInterrupt
                loop.add_signal_handler(sig, stop.set)
        bound = runner.addresses[0]
        url = f"http://{f'[{bound[0]}]' if ':' in bound[0] else bound[0]}:{bound[1]}"
        lines = [f"fake GitHub serving on {url} (GHES style under {url}/api/v3)"]
        lines += [f"  app {cid}" for cid in fake.apps]
        lines += [f"  token for {who}: {token}" for who, token in issued]
        lines.append(f"  deprecated …/tokens/{{access_token}} paths: {'on' if fake.legacy_paths else 'off'}")
        lines.append("stop it with Ctrl-C or SIGTERM")
        print("\n".join(lines), flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
