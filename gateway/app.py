"""One config's request path, end to end, and its wiring (docs/architecture.md: The request path)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import NamedTuple

import aiohttp
from multidict import CIMultiDictProxy

from . import metrics
from .accesslog import AccessLog, AccessRecord
from .auth import Authenticator, Caller, SignInHelp, authorization
from .config import Config
from .control import Control
from .errors import (
    BadRequest,
    ClientClosedRequest,
    InternalError,
    InvalidToken,
    NoRoute,
    Redirect,
    Refusal,
    Unauthenticated,
)
from .github import GitHubClient
from .headers import HeaderRules, request_id
from .identity import token_id
from .identity.cache import IdentityCache
from .identity.redis import RedisTier
from .identity_token import IdentityTokens
from .listener import Answer, ClientGone, Request, Response
from .membership import Membership
from .paths import split_target
from .policy import CompiledRoute, RouteTable
from .ratelimit import FailedAuthLimiter
from .responses import refusal_response
from .signin import SignIn
from .upstream.forwarding import ANSWER_BUFSIZE, Forwarder
from .upstream.pool import UpstreamPool
from .upstream_token import ScopedTokens

log = logging.getLogger("gateway")


class Gateway:
    """Everything one config needs at request time, built once; `handle` serves one request."""

    def __init__(
        self,
        config: Config,
        *,
        pool: UpstreamPool,
        github: aiohttp.ClientSession,
        access_log: AccessLog,
        shared: RedisTier | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.routes = RouteTable(config.routes)
        self.rules = HeaderRules(config)
        self.github = GitHubClient(
            config.github,
            github,
            clock=clock,
            observer=metrics.github_observer,
            answered=metrics.github_answered,
        )
        self.cache = IdentityCache(config.cache, self.github, shared=shared, clock=clock)
        limiter = FailedAuthLimiter(config.rate_limit.failed_auth_per_minute, clock=clock)
        self.sign_in = SignIn(config, github, limiter)
        self.auth = Authenticator(
            self.cache,
            limiter,
            retry_after=self.github.retry_after,
            cookies=self.sign_in.credentials if config.sessions is not None else None,
            help=sign_in_help(config),
        )
        self.scoped = ScopedTokens(
            self.github, config.cache, retry_after=self.github.retry_after, clock=clock
        )
        self.forwarder = Forwarder(
            pool,
            self.rules,
            max_body_size=config.server.max_body_size,
            body_timeout=config.server.body_timeout,
        )
        self.membership = Membership(config, self.github, shared=shared, clock=clock)
        self.identity_tokens = (
            IdentityTokens(
                config.identity_token,
                max_entries=config.cache.max_entries,
                signed=metrics.identity_token_signed,
            )
            if config.identity_token is not None
            else None
        )
        self._groups_header = config.identity_headers.groups if self.membership.groups_known else None
        # the groups are looked up for the groups header, the identity token's claim, or both
        self._groups_wanted = bool(self.membership.groups_known) and (
            self._groups_header is not None or self.identity_tokens is not None
        )
        # nothing to add after the identity headers: the cache-hit path skips the call altogether
        self._extras_wanted = self._groups_wanted or self.identity_tokens is not None
        self.control = Control(
            self.auth,
            self.github,
            self.cache,
            self.scoped,
            self.membership,
            self.identity_tokens,
            self.sign_in,
        )
        self.access_log = access_log
        self._background: set[asyncio.Task[None]] = set()
        self._control_prefix = config.server.control_prefix.lower()
        self._forward_auth_family = FORWARD_AUTH_FAMILIES[config.server.forward_auth_headers]

    def revoked_elsewhere(self, digest: bytes) -> None:
        """A logout on another replica (the shared tier's channel): forget the token here at once, and
        revoke the scoped tokens minted from it here in the background (GitHub may be slow)."""
        self.cache.evict(digest)
        task = asyncio.create_task(self.scoped.revoke_minted_from(digest))
        self._background.add(task)  # a reference, until done
        task.add_done_callback(self._background.discard)

    async def handle(self, request: Request) -> Response:
        """Serve one request; every refusal becomes its response (README: What callers get back), every
        other failure a JSON 500; one access-log line."""
        started = time.perf_counter()
        record = AccessRecord(
            request_id=request_id(request.headers),
            client=self.rules.client_address(request),
            method=request.method,
        )
        refused: str | None = None
        try:
            response = await self._dispatch(request, record)
        except Exception as exc:  # every one, so that every request gets its answer and its log line
            if isinstance(exc, Refusal):
                refusal = exc
            elif isinstance(exc, ClientGone):  # the client left while its answer was being begun
                refusal = ClientClosedRequest("the client closed the connection", close=True)
            else:
                refusal = _internal_error(exc, request, record)
            refused = refusal.code
            response = refusal_response(refusal)
            response.headers["X-Request-Id"] = record.request_id
        finally:
            seconds = time.perf_counter() - started
            record.duration_ms = round(seconds * 1000, 3)
        record.status = response.status
        if isinstance(response, Answer) and request.method != "HEAD":
            # the listener writes it once this returns; a streamed answer has counted what it wrote
            record.bytes = len(response.body)
        self.access_log.write(record)
        metrics.observe_request(
            record.route, response.status, seconds, record.user is not None, refused, record.error
        )
        return response

    async def _dispatch(self, request: Request, record: AccessRecord) -> Response:
        if request.version < aiohttp.HttpVersion11 and "Transfer-Encoding" in request.headers:
            # SECURITY: RFC 9112 §6.1: HTTP/1.0 has no Transfer-Encoding, so its framing is faulty:
            # hops may read the body, and the request hidden after it, differently
            raise BadRequest("Transfer-Encoding in an HTTP/1.0 request: its framing is faulty", close=True)
        path, query = split_target(request.raw_path)
        record.path = path
        lowered = path.lower()
        if lowered == self._control_prefix or lowered.startswith(self._control_prefix + "/"):
            subpath = lowered[len(self._control_prefix) :].rstrip("/")
            if subpath == "/auth":
                return await self._forward_auth(request, record)
            if subpath.startswith("/auth/"):  # Envoy ext_authz's form: the original path follows
                return await self._forward_auth(request, record, path[len(self._control_prefix) + 5 :])
            return await self.control.handle(request, subpath, record)
        route = self._route(path, record)
        caller = await self._admit(request, request.method, route, record, request.raw_path)
        headers = self.rules.upstream_request_headers(
            request, caller.identity if caller else None, record.request_id, record.client
        )
        signed = b""
        if caller is not None:
            if self._extras_wanted:
                extras, signed = await self._identity_extras(caller, route, record)
                headers.extend(extras)
            if route.upstream_token_key is not None:
                headers["Authorization"] = await self._scoped_authorization(caller, route)
        target = route.upstream_target(path, query)
        also = _set_cookie(caller)
        if _is_websocket(request):
            return await self.forwarder.websocket(request, route, target, headers, signed, also)
        response = await self.forwarder.forward(request, route, target, headers, signed, record, also)
        record.upstream_status = response.status
        return response

    async def _forward_auth(
        self, request: Request, record: AccessRecord, original: str | None = None
    ) -> Response:
        """The decision for a request a front proxy (nginx auth_request, Traefik ForwardAuth, Caddy
        forward_auth, Envoy ext_authz) is about to forward: 200 with identity headers, or a refusal.

        The original request is named by the one header family of `server.forward_auth_headers`
        (`X-Original-URI`/`-Method`, or `X-Forwarded-Uri`/`-Method`), or, as Envoy's ext_authz HTTP
        service sends it, by this request itself: its method, and its path after the endpoint's
        (`original`, normalised with the rest), which then wins.
        """
        if original is not None:
            path, method, back_to = original, request.method, original + _query(request.raw_path)
        else:
            path, method = self._forward_auth_family.original(request.headers)
            back_to = request.headers[self._forward_auth_family.uri]
        record.path = path
        route = self._route(path, record)
        caller = await self._admit(request, method, route, record, back_to)
        if caller is None:
            return Answer(200)
        headers = _set_cookie(caller)
        headers.extend(self.rules.identity_headers(caller.identity))
        signed = b""
        if self._extras_wanted:
            extras, signed = await self._identity_extras(caller, route, record)
            headers.extend(extras)
        if route.upstream_token_key is not None:
            headers.append(("Authorization", await self._scoped_authorization(caller, route)))
        return Answer(200, headers, lines=signed)

    def _route(self, path: str, record: AccessRecord) -> CompiledRoute:
        route = self.routes.match(path)
        if route is None:
            raise NoRoute()
        record.route = route.route.path
        return route

    async def _identity_extras(
        self, caller: Caller, route: CompiledRoute, record: AccessRecord
    ) -> tuple[list[tuple[str, str]], bytes]:
        """What follows the identity headers: `identity_headers.groups` (the configured organisations
        and teams the caller belongs to), and the identity token's header line (DESIGN §11), checked
        when it was signed, or b"" without one."""
        groups = None
        if self._groups_wanted:
            groups = await self.membership.groups(caller.identity, caller.token, record.membership)
        extras = []
        if groups and self._groups_header is not None:
            extras.append((self._groups_header, ",".join(groups)))
        signed = b""
        if self.identity_tokens is not None:
            signed = self.identity_tokens.issued(
                caller.identity, caller.digest, route.audience, groups, route.route.path
            ).line
        return extras, signed

    async def _scoped_authorization(self, caller: Caller, route: CompiledRoute) -> str:
        spec, key = route.route.upstream_token, route.upstream_token_key
        assert spec is not None and key is not None
        scoped = await self.scoped.token_for(caller.token, caller.digest, caller.identity, spec, key)
        return f"Bearer {scoped}"

    async def _admit(
        self,
        request: Request,
        method: str,
        route: CompiledRoute,
        record: AccessRecord,
        back_to: str,
    ) -> Caller | None:
        """The route's policy for `method`: authenticate as its auth mode says, then method, scopes,
        and who may pass (users and ids here, organisations, teams and repositories asked of GitHub).
        A browser without usable credentials on a `browser_login` route is sent to sign in, to come
        back to `back_to` (the original path and query)."""
        mode = route.route.auth
        if mode == "none" or (route.route.skip_auth_preflight and _is_preflight(request, method)):
            authorization(request.headers)  # not read, but two of them are refused all the same
            route.check_method(method)
            return None
        try:
            caller = await self.auth.authenticate(
                request.headers, client=record.client, required=mode == "required"
            )
        except (Unauthenticated, InvalidToken):
            if (
                route.route.browser_login
                and _is_browser(request, method)
                and "Authorization" not in request.headers
            ):
                raise Redirect(
                    self.sign_in.sign_in_location(back_to), "sign in with GitHub to continue"
                ) from None
            raise
        route.check_method(method)
        if caller is not None:
            record.user, record.token_id = caller.identity.login, token_id(caller.digest)
            if not route.authorize(caller.identity):
                await self.membership.admit(route, caller.identity, caller.token, record.membership)
        return caller


class ForwardAuthFamily(NamedTuple):
    """The headers that name the original request at the forward-auth endpoint, and the other family's,
    which a request there must not carry."""

    uri: str
    method: str
    other: tuple[str, str]

    def original(self, headers: CIMultiDictProxy[str]) -> tuple[str, str]:
        """The original request's normalised path and method."""
        # SECURITY: Caddy's forward_auth (and Traefik's ForwardAuth without authRequestHeaders) pass
        # the caller's own headers on beside their own: were the other family read too, a caller's
        # X-Original-URI: /public would choose the policy for a request to a protected path
        if self.other[0] in headers or self.other[1] in headers:
            raise BadRequest(
                f"forward-auth reads the original request from {self.uri}/{self.method} only"
                f" (server.forward_auth_headers); this request also carries {' or '.join(self.other)}"
            )
        uri = headers.get(self.uri)
        if not uri:
            raise BadRequest(f"forward-auth needs the original request in {self.uri}")
        path, _ = split_target(uri)
        return path, headers.get(self.method, "GET").upper()


FORWARD_AUTH_FAMILIES = {
    "original": ForwardAuthFamily(
        "X-Original-URI", "X-Original-Method", ("X-Forwarded-Uri", "X-Forwarded-Method")
    ),
    "forwarded": ForwardAuthFamily(
        "X-Forwarded-Uri", "X-Forwarded-Method", ("X-Original-URI", "X-Original-Method")
    ),
}


def sign_in_help(config: Config) -> SignInHelp:
    """What a 401 says about getting a token of this gateway's app (DESIGN §12)."""
    prefix = config.server.control_prefix
    gateway = config.server.public_url or "<this gateway's URL>"
    return SignInHelp(
        f"get one with `gateway auth login --gateway {gateway}`", f'<{prefix}/sign-in/config>; rel="help"'
    )


def _internal_error(exc: Exception, request: Request, record: AccessRecord) -> InternalError:
    """A bug of the gateway's own, logged; what its caller is told (a JSON 500)."""
    # SECURITY: the exception's text may quote what the request carried: its type and where it was
    # raised are logged, never its message (nor the query string, nor a header)
    where = "".join(traceback.format_tb(exc.__traceback__))
    log.error(
        "unhandled %s serving %s %s (request %s)\n%s",
        type(exc).__name__,
        record.method,
        record.path,
        record.request_id,
        where,
    )
    if request.started and request.transport is not None:
        request.transport.close()  # the answer had begun: a cut connection is all that can be said
    return InternalError("the gateway failed to handle this request", close=True)


def _set_cookie(caller: Caller | None) -> list[tuple[str, str]]:
    """The Set-Cookie of a session cookie whose token was refreshed on the way in, if any."""
    return [("Set-Cookie", caller.set_cookie)] if caller is not None and caller.set_cookie else []


def _query(target: str) -> str:
    _, sep, query = target.partition("?")
    return sep + query


def _is_browser(request: Request, method: str) -> bool:
    """A browser navigating (DESIGN §4: Accept: text/html): it can follow a redirect to sign in."""
    return method in ("GET", "HEAD") and "text/html" in request.headers.get("Accept", "")


def _is_websocket(request: Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket" and request.method == "GET"


def _is_preflight(request: Request, method: str) -> bool:
    headers = request.headers
    return method == "OPTIONS" and "Origin" in headers and "Access-Control-Request-Method" in headers


@asynccontextmanager
async def open_gateway(
    config: Config,
    *,
    access_log: AccessLog | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[Gateway]:
    """A Gateway serving `config`, with its HTTP sessions open for as long as the context lasts."""
    async with contextlib.AsyncExitStack() as stack:
        pool = UpstreamPool(read_bufsize=ANSWER_BUFSIZE)
        stack.callback(pool.close)
        # trust_env: GitHub may only be reachable through the HTTPS_PROXY of a corporate network
        github = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), trust_env=True)
        stack.push_async_callback(github.close)
        shared = None
        if config.cache.redis_url is not None:
            shared = RedisTier(config.cache.redis_url, config.github, config.cache)
            stack.push_async_callback(shared.close)
        log = access_log or AccessLog()
        stack.callback(log.flush)
        stack.callback(metrics.TALLY.flush)
        gateway = Gateway(config, pool=pool, github=github, access_log=log, shared=shared, clock=clock)
        if shared is not None:
            listener = asyncio.create_task(shared.listen(gateway.revoked_elsewhere, gateway.cache.clear))
            stack.push_async_callback(_cancel, listener)
        yield gateway


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
