"""The identity cache: an in-process TTL tier, the shared Redis tier behind it when configured,
negative and stale entries, single flight.

Keys are SHA-256 digests of tokens; values are immutable `Identity` objects (or None for a token GitHub
called invalid). A positive entry is fresh for `ttl`, never past the token's own `expires_at`; with
`stale_if_error` it is kept that much longer and served only when GitHub gives no usable answer.
Concurrent lookups of one uncached token share a single check call (and a single Redis read).

The store is a plain insertion-ordered dict, not a cachetools cache: entries are dropped when found
expired and, when `max_entries` is reached, oldest first (insertion order is expiry order but for
shorter negative and expiring entries). cachetools' TLRU/TTL caches keep a second dict and a link
or heap object per entry, about 200 bytes each, which would put 100,000 identities well past the
400 bytes apiece this cache is held to (`make bench`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeGuard

from ..config import CacheConfig
from ..errors import GitHubError
from ..metrics import CACHE_LOOKUPS, TALLY
from .redis import RedisTier, SharedEntry
from .singleflight import SingleFlight
from .value import Identity, shared_scopes

_HIT, _NEGATIVE, _MISS, _STALE = (
    CACHE_LOOKUPS.labels("memory", r) for r in ("hit", "negative", "miss", "stale")
)
_SHARED_STALE = CACHE_LOOKUPS.labels("redis", "stale")
SWEEP = 64  # entries looked at past the oldest when the cache is full


class Checker(Protocol):
    """Whatever answers "whose token is this?" (the GitHub client, or a fake in tests)."""

    async def check(self, token: str) -> Identity | None: ...


# An entry is an exact tuple of plain values: (fresh_until, keep_until) for a token GitHub called
# invalid, followed by (login, user_id, scopes, expires_at, client_id) for an identity. CPython's
# collector stops tracking such tuples, so a full cache adds nothing to its pauses (and a tuple is
# smaller than two objects).
_Entry = tuple[Any, ...]
FRESH, KEEP = 0, 1


def _identity(entry: _Entry) -> Identity | None:
    return Identity(*entry[2:]) if len(entry) > 2 else None


def _fresh_shared(entry: SharedEntry | None) -> TypeGuard[SharedEntry]:
    return entry is not None and entry.fresh_for > 0


class IdentityCache:
    """Identity lookups by token digest, in front of the shared tier (if any) and a `Checker`."""

    def __init__(
        self,
        config: CacheConfig,
        checker: Checker,
        *,
        shared: RedisTier | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._checker = checker
        self._shared = shared
        self._clock = clock
        self._wall_clock = wall_clock
        self._entries: dict[bytes, _Entry] = {}
        self._flights: SingleFlight[bytes, Identity | None] = SingleFlight()

    def __len__(self) -> int:
        return len(self._entries)

    def _fresh(self, digest: bytes) -> _Entry | None:
        entry = self._entries.get(digest)
        if entry is not None and entry[FRESH] > self._clock():
            return entry
        return None

    def fresh_identity(self, digest: bytes) -> Identity | None:
        """The identity cached fresh for a digest, without asking GitHub (counted as a hit)."""
        entry = self._fresh(digest)
        if entry is None or len(entry) == 2:
            return None
        TALLY.count(_HIT)
        return _identity(entry)

    def checking(self, digest: bytes) -> bool:
        """Whether a lookup for this digest is in flight: a lookup now would share it, not add a call."""
        return digest in self._flights

    async def lookup(self, token: str, digest: bytes) -> Identity | None:
        """The identity for a token: from the cache, else from one shared check call.

        Returns None for a token GitHub does not know. Raises `GitHubError` when GitHub gives no
        usable answer and no stale identity may stand in.
        """
        entry = self._fresh(digest)
        if entry is not None:
            (_HIT if len(entry) > 2 else _NEGATIVE).inc()
            return _identity(entry)
        _MISS.inc()
        return await self._flights.run(digest, lambda: self._fill(token, digest))

    async def revoke(self, digest: bytes) -> bool:
        """Remember a token as invalid (logout): refused without asking GitHub for `negative_ttl`, here
        and, through the shared tier, on every replica. False when the shared tier could not be told."""
        self.evict(digest)
        if self._shared is None:
            return True
        return await self._shared.revoke(digest)

    def evict(self, digest: bytes) -> None:
        """Remember a token as invalid in this process (a revocation heard from another replica)."""
        self._keep(digest, None, self._config.negative_ttl, self._config.negative_ttl)

    def clear(self) -> None:
        """Forget every in-process entry (revocations may have been missed: Redis answers again)."""
        self._entries.clear()

    async def _fill(self, token: str, digest: bytes) -> Identity | None:
        shared = self._shared
        if shared is None:
            return await self._ask_github(token, digest, None)
        found = await shared.get(digest)
        claimed = False
        try:
            if not _fresh_shared(found):
                claimed = await shared.claim(digest)
                if not claimed:  # another process is asking GitHub: its answer will do
                    waited = await shared.wait_for(digest)
                    found = waited if _fresh_shared(waited) else found
            # a flight starts only when nothing fresh is cached: a fresh entry without an identity
            # found now is a logout made meanwhile, which no answer may overrule
            if self._revoked_meanwhile(digest):
                return None
            if _fresh_shared(found):
                self._keep(digest, *found)
                return found.identity
            return await self._ask_github(token, digest, found)
        finally:
            if claimed:
                await shared.release(digest)

    async def _ask_github(self, token: str, digest: bytes, shared: SharedEntry | None) -> Identity | None:
        try:
            answer = await self._checker.check(token)
        except GitHubError:
            stale = self._stale(digest, shared)
            if stale is None:
                raise
            return stale
        if self._revoked_meanwhile(digest):
            return None
        identity, fresh_for, keep_for = self._windows(answer)
        self._keep(digest, identity, fresh_for, keep_for)
        if self._shared is not None:
            await self._shared.put(digest, identity, fresh_for, keep_for)
        return identity

    def _revoked_meanwhile(self, digest: bytes) -> bool:
        entry = self._fresh(digest)
        return entry is not None and len(entry) == 2

    def _stale(self, digest: bytes, shared: SharedEntry | None) -> Identity | None:
        """An identity past fresh but within `stale_if_error`, here or in the shared tier."""
        local = self._entries.get(digest)
        if local is not None and len(local) > 2 and local[KEEP] > self._clock():
            _STALE.inc()
            return _identity(local)
        if shared is not None and shared.identity is not None and shared.keep_for > 0:
            _SHARED_STALE.inc()
            return shared.identity
        return None

    def _windows(self, identity: Identity | None) -> SharedEntry:
        """How long an answer from GitHub stays fresh, and is kept, in seconds from now."""
        fresh = self._config.ttl
        keep = fresh + self._config.stale_if_error
        if identity is not None and identity.expires_at is not None:
            left = identity.expires_at - self._wall_clock()
            fresh, keep = min(fresh, left), min(keep, left)
            if fresh <= 0:  # already expired: GitHub's clock and ours disagree; it is not valid here
                identity = None
        if identity is None:
            fresh = keep = self._config.negative_ttl
        return SharedEntry(identity, fresh, keep)

    def _keep(self, digest: bytes, identity: Identity | None, fresh_for: float, keep_for: float) -> None:
        now = self._clock()
        fresh = now + fresh_for
        entries = self._entries
        entries.pop(digest, None)  # (re)inserted last: insertion order stays age order
        if len(entries) >= self._config.max_entries:
            self._make_room(now)
        # one float object when there is no stale window: a cached identity costs less
        times = (fresh, fresh if keep_for == fresh_for else now + keep_for)
        if identity is None:
            entries[digest] = times
        else:
            i = identity
            entries[digest] = (*times, i.login, i.user_id, shared_scopes(i.scopes), i.expires_at, i.client_id)

    def _make_room(self, now: float) -> None:
        """Drop the oldest entry, and any expired ones right behind it (a bounded sweep)."""
        entries = self._entries
        oldest = iter(list(itertools.islice(entries, SWEEP)))
        entries.pop(next(oldest))
        for key in oldest:
            if entries[key][KEEP] > now:
                break
            del entries[key]
