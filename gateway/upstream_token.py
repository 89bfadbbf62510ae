"""Least-privilege upstream tokens: a caller's GitHub App user token exchanged once for a scoped token
(POST /applications/{client_id}/token/scoped), cached and sent upstream in its place.

Entries are keyed by SHA-256(caller token digest + the route's spec), live at most `cache.ttl` and
never past the scoped token's own expiry (less a margin, so an upstream never receives a token that
expires in flight). A caller whose token cannot be scoped (an OAuth App token, a target the app is
not installed on) is remembered for `negative_ttl`, so a route never makes GitHub mint per request.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

from cachetools import TLRUCache

from .config import CacheConfig, UpstreamTokenConfig
from .errors import (
    Forbidden,
    GitHubError,
    GitHubValidationFailed,
    InvalidToken,
    ServiceUnavailable,
    TargetNotFound,
)
from .github import IssuedToken
from .identity import Identity
from .identity.singleflight import SingleFlight

log = logging.getLogger("gateway.upstream_token")
EXPIRY_MARGIN = 60.0  # seconds before its expiry that a scoped token is no longer handed out


class Minter(Protocol):
    """What mints and revokes scoped tokens (the GitHub client)."""

    async def scoped(
        self, token: str, spec: UpstreamTokenConfig, *, client_id: str | None = None
    ) -> IssuedToken | None: ...

    async def delete(self, token: str, *, client_id: str | None = None) -> bool: ...


class _Minted:
    __slots__ = ("client_id", "owner", "token", "until")

    def __init__(self, owner: bytes, token: str | None, client_id: str, until: float) -> None:
        self.owner = owner  # the caller's token digest, so logout finds what was minted from it
        self.token = token  # None: GitHub would not scope this caller's token
        self.client_id = client_id
        self.until = until


class ScopedTokens:
    """Scoped tokens by (caller token, spec), minted once per pair with single flight."""

    def __init__(
        self,
        minter: Minter,
        config: CacheConfig,
        *,
        retry_after: Callable[[], int],
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._minter = minter
        self._config = config
        self._retry_after = retry_after
        self._clock = clock
        self._wall_clock = wall_clock
        self._entries: TLRUCache[bytes, _Minted] = TLRUCache(
            config.max_entries, lambda _k, v, _now: v.until, clock
        )
        self._flights: SingleFlight[bytes, _Minted] = SingleFlight()

    async def token_for(
        self, token: str, digest: bytes, identity: Identity, spec: UpstreamTokenConfig, key: bytes
    ) -> str:
        """The scoped token to send upstream for this caller on a route with `spec` (digest `key`)."""
        entry_key = hashlib.sha256(digest + key).digest()
        entry = self._entries.get(entry_key)
        if entry is None:
            entry = await self._flights.run(
                entry_key, lambda: self._mint(token, digest, identity, spec, entry_key)
            )
        if entry.token is None:
            raise Forbidden("this route sends upstream a scoped token, and GitHub would not scope this token")
        return entry.token

    async def _mint(
        self, token: str, digest: bytes, identity: Identity, spec: UpstreamTokenConfig, entry_key: bytes
    ) -> _Minted:
        now = self._clock()
        try:
            issued = await self._minter.scoped(token, spec, client_id=identity.client_id)
        except GitHubValidationFailed:
            issued = None  # not a GitHub App user token, or the spec does not fit it
        except TargetNotFound as exc:
            log.error("upstream_token: %s: check the route's upstream_token target", exc)
            issued = None  # the route's config, not the caller: every caller of this app is refused
        except GitHubError as exc:
            raise ServiceUnavailable(
                "GitHub is unavailable and no scoped token is cached", retry_after=self._retry_after()
            ) from exc
        if issued is None:
            entry = _Minted(digest, None, identity.client_id, now + self._config.negative_ttl)
        else:
            until = now + self._config.ttl
            expires_at = issued.identity.expires_at
            if expires_at is not None:
                until = min(until, now + (expires_at - self._wall_clock()) - EXPIRY_MARGIN)
            if until <= now:
                raise InvalidToken("GitHub minted a scoped token that has already expired")
            entry = _Minted(digest, issued.token, identity.client_id, until)
        self._entries[entry_key] = entry
        return entry

    async def revoke_minted_from(self, digest: bytes) -> None:
        """Forget, and revoke at GitHub, every scoped token minted from one caller token (logout)."""
        owned = [(k, v) for k, v in self._entries.items() if v.owner == digest]
        for key, entry in owned:
            self._entries.pop(key, None)
            if entry.token is not None:
                # best effort: it expires by itself within hours; the caller's own token is what matters
                with contextlib.suppress(GitHubError):
                    await self._minter.delete(entry.token, client_id=entry.client_id)
