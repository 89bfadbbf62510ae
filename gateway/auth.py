"""A request's credentials → an `Identity`, or a typed refusal (README: How tokens are checked)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from multidict import CIMultiDictProxy

from .errors import (
    BadRequest,
    GitHubError,
    GitHubMisconfigured,
    InvalidToken,
    ServiceUnavailable,
    Unauthenticated,
)
from .identity import Identity, token_digest, well_formed_token
from .identity.cache import IdentityCache
from .ratelimit import FailedAuthLimiter

log = logging.getLogger("gateway.auth")

_SCHEMES = frozenset({"bearer", "token"})


def authorization(headers: CIMultiDictProxy[str]) -> str | None:
    """The value of the one `Authorization` header, None when there is none; BadRequest for two
    (which one would an upstream read?)."""
    values = headers.getall("Authorization", ())
    if len(values) > 1:
        raise BadRequest("more than one Authorization header")
    return values[0] if values else None


def bearer_token(headers: CIMultiDictProxy[str]) -> str | None:
    """The token of the one `Authorization: Bearer|token <token>` header; None when there is none.

    Raises BadRequest for two Authorization headers and InvalidToken for anything malformed, so that
    nothing malformed ever reaches GitHub.
    """
    value = authorization(headers)
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() not in _SCHEMES or not well_formed_token(token):
        raise InvalidToken("the Authorization header is not a well-formed Bearer token")
    return token


class Caller(NamedTuple):
    """An authenticated caller: who, and the credential they came with (kept only for this request);
    `set_cookie` re-issues a session cookie whose token was refreshed (DESIGN §12)."""

    identity: Identity
    token: str
    digest: bytes
    set_cookie: str | None = None


# A request's session cookie: its GitHub token and the Set-Cookie to send back (None: unchanged), or None
CookieSource = Callable[[CIMultiDictProxy[str]], Awaitable[tuple[str, str | None] | None]]


class SignInHelp(NamedTuple):
    """What a 401 says about signing in: a sentence naming the command, and a `Link` to the
    configuration a CLI reads."""

    sentence: str
    link: str


class Authenticator:
    """Turns a token into an identity through the cache, mapping every failure to a refusal."""

    def __init__(
        self,
        cache: IdentityCache,
        limiter: FailedAuthLimiter,
        *,
        retry_after: Callable[[], int],
        cookies: CookieSource | None = None,
        help: SignInHelp | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._cookies = cookies
        self._help = help
        self._cache = cache
        self._limiter = limiter
        self._retry_after = retry_after
        self._wall_clock = wall_clock

    async def identify(self, token: str, digest: bytes | None = None) -> Identity:
        """The identity behind a token, or InvalidToken / ServiceUnavailable."""
        try:
            identity = await self._cache.lookup(token, digest or token_digest(token))
        except GitHubMisconfigured as exc:
            raise ServiceUnavailable(
                "the gateway cannot check tokens right now", retry_after=self._retry_after()
            ) from exc
        except GitHubError as exc:
            raise ServiceUnavailable(
                "GitHub is unavailable and this token is not cached", retry_after=self._retry_after()
            ) from exc
        if identity is None:
            raise self._invalid("the token is malformed, invalid, expired or revoked")
        if self._expired(identity):
            raise self._invalid("the token has expired")
        return identity

    async def authenticate(
        self, headers: CIMultiDictProxy[str], *, client: str, required: bool = True
    ) -> Caller | None:
        """The caller behind a request's credentials; None when there are none and none are required.

        A client address over its failed-authentication budget gets 429 instead of a check call,
        unless its token is already known to be valid (or being checked for another request).
        """
        try:
            token = bearer_token(headers)
        except InvalidToken:
            # a malformed token is a failure, whose judging costs no call
            self._limiter.reserve_or_refuse(client)
            raise
        set_cookie = None
        if token is None and self._cookies is not None:  # an Authorization header, when present, wins
            found = await self._cookies(headers)
            if found is not None:
                token, set_cookie = found
        if token is None:
            if required:
                raise self._unauthenticated()
            return None
        digest = token_digest(token)
        known = self._cache.fresh_identity(digest)
        if known is not None and not self._expired(known):
            return Caller(known, token, digest, set_cookie)  # the cache-hit path: nothing else to ask
        return Caller(await self._paid_identify(token, digest, client), token, digest, set_cookie)

    def _unauthenticated(self) -> Unauthenticated:
        if self._help is None:
            return Unauthenticated()
        return Unauthenticated(
            f"this route requires a GitHub token: {self._help.sentence}", link=self._help.link
        )

    def _invalid(self, what: str) -> InvalidToken:
        if self._help is None:
            return InvalidToken(what)
        return InvalidToken(f"{what}: {self._help.sentence}", link=self._help.link)

    async def _paid_identify(self, token: str, digest: bytes, client: str) -> Identity:
        """`identify`, paid for from the client address's failed-authentication budget."""
        if self._cache.checking(digest):
            # joining the check already in flight for this token adds no call, so it reserves
            # nothing; like any failed authentication it costs a unit if the token proves invalid
            try:
                return await self.identify(token, digest)
            except InvalidToken:
                self._limiter.failed(client)
                raise
        # SECURITY: a check is paid for before it is made, so a burst of junk tokens from one address
        # makes at most its budget of calls. A valid token, or no answer from GitHub, is no failed
        # authentication and is paid back; a caller that leaves mid-check is not: its call was made.
        self._limiter.reserve_or_refuse(client)
        try:
            identity = await self.identify(token, digest)
        except ServiceUnavailable:
            self._limiter.refund(client)
            raise
        self._limiter.refund(client)
        return identity

    def _expired(self, identity: Identity) -> bool:
        return identity.expires_at is not None and identity.expires_at <= self._wall_clock()
