"""The gateway's own endpoints under `control_prefix` on the main port (README: What callers get back)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from .accesslog import AccessRecord
from .auth import Authenticator, Caller
from .errors import GitHubError, MethodNotAllowed, NoRoute, ServiceUnavailable
from .github import GitHubClient
from .identity import token_id
from .identity.cache import IdentityCache
from .identity_token import IdentityTokens
from .listener import Answer, Request
from .membership import Membership
from .responses import json_answer
from .signin import SignIn
from .upstream_token import ScopedTokens

log = logging.getLogger("gateway.control")

Endpoint = Callable[[Request, Caller, AccessRecord], Awaitable[Answer]]
PublicEndpoint = Callable[[Request, AccessRecord], Awaitable[Answer]]
# how long upstreams may keep the JWKS: a key rotation keeps the old public key listed longer than this
JWKS_MAX_AGE = 300


class Control:
    """`whoami` and `logout`, which authenticate their caller, then answer JSON; and what anyone may
    ask: `jwks.json` (the identity token's public keys) and sign-in's endpoints (DESIGN §12)."""

    def __init__(
        self,
        auth: Authenticator,
        github: GitHubClient,
        cache: IdentityCache,
        scoped: ScopedTokens,
        membership: Membership,
        identity_tokens: IdentityTokens | None,
        sign_in: SignIn,
    ) -> None:
        self._sign_in = sign_in
        self._auth = auth
        self._membership = membership
        self._github = github
        self._cache = cache
        self._scoped = scoped
        self._endpoints: dict[str, tuple[str, Endpoint]] = {
            "/whoami": ("GET", self._whoami),
            "/logout": ("POST", self._logout),
        }
        self._public: dict[str, tuple[str, PublicEndpoint]] = {
            "/sign-in/config": ("GET", self._sign_in_config),
            "/sign-in": ("GET", lambda request, _: sign_in.start(request)),
            "/callback": ("GET", lambda request, record: sign_in.callback(request, record.client)),
            "/refresh": ("POST", lambda request, record: sign_in.refresh(request, record.client)),
        }
        self._identity_tokens = identity_tokens
        if identity_tokens is not None:
            self._public["/jwks.json"] = ("GET", self._jwks)

    async def handle(self, request: Request, subpath: str, record: AccessRecord) -> Answer:
        """Serve `control_prefix + subpath` (`subpath` lower-case, without a trailing slash)."""
        public = self._public.get(subpath)
        if public is not None:
            _check_method(request, public[0])
            return await public[1](request, record)
        found = self._endpoints.get(subpath)
        if found is None:
            raise NoRoute()
        method, endpoint = found
        _check_method(request, method)
        caller = await self._auth.authenticate(request.headers, client=record.client)
        assert caller is not None
        record.user, record.token_id = caller.identity.login, token_id(caller.digest)
        response = await endpoint(request, caller, record)
        if caller.set_cookie:
            response.headers.add("Set-Cookie", caller.set_cookie)
        return response

    async def _whoami(self, request: Request, caller: Caller, record: AccessRecord) -> Answer:
        shown = caller.identity.as_json()
        if self._membership.groups_known:
            shown["groups"] = list(
                await self._membership.groups(caller.identity, caller.token, record.membership)
            )
        return json_answer(shown)

    async def _sign_in_config(self, request: Request, _record: AccessRecord) -> Answer:
        return Answer(200, body=self._sign_in.config_body, content_type="application/json")

    async def _jwks(self, request: Request, _record: AccessRecord) -> Answer:
        tokens = self._identity_tokens
        assert tokens is not None  # the endpoint exists only with identity_token
        headers = {"Cache-Control": f"public, max-age={JWKS_MAX_AGE}", "ETag": tokens.jwks_etag}
        wanted = {
            tag.strip().removeprefix("W/") for tag in request.headers.get("If-None-Match", "").split(",")
        }
        if tokens.jwks_etag in wanted or "*" in wanted:
            return Answer(304, headers.items())
        return Answer(200, headers.items(), tokens.jwks, content_type="application/json")

    async def _logout(self, request: Request, caller: Caller, _record: AccessRecord) -> Answer:
        """Revoke the caller's token at GitHub with the app that issued it, then forget it here."""
        try:
            await self._github.delete(caller.token, client_id=caller.identity.client_id)
        except GitHubError as exc:
            raise ServiceUnavailable(
                "GitHub is unavailable: the token was not revoked", retry_after=self._github.retry_after()
            ) from exc
        if not await self._cache.revoke(caller.digest):
            log.warning(
                "logout: token %s revoked at GitHub and evicted here; Redis is unreachable, so the other"
                " replicas hear of it once Redis answers again (until then they may still let it through)",
                token_id(caller.digest),
            )
        await self._scoped.revoke_minted_from(caller.digest)
        response = json_answer({"revoked": True, "login": caller.identity.login})
        if self._sign_in.sealer is not None:
            response.headers.add("Set-Cookie", self._sign_in.clear_cookie())
        return response


def _check_method(request: Request, method: str) -> None:
    if request.method != method and not (method == "GET" and request.method == "HEAD"):
        raise MethodNotAllowed(method)
