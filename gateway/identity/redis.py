"""The shared cache tier (`cache.redis_url`): identities and membership facts in Redis for every worker
and replica, and revocations (logout) carried to all of them over a pub/sub channel.

What Redis holds is what the in-process tier holds: the identity GitHub reported (never the token,
never the raw check answer), under the token's SHA-256 digest in hex, with `fresh_until` as a Unix
time so replicas agree on its age; the key itself expires when the entry may no longer be served,
stale window included. A token GitHub called invalid is an entry without an identity.

Keys and the channel are namespaced by GitHub's URL and the configured apps: a gateway never takes
an identity that another deployment's apps vouched for.

Redis is an accelerator, never a dependency: a command that fails or takes longer than
`TIMEOUT` counts as a miss, and Redis is then left alone for a backoff that doubles up to
30 s, so an outage costs one timeout, not one per request. A replica whose subscription
drops may miss a revocation; when it subscribes again it is told to forget its in-process tier. A
logout Redis could not be told of is delivered again, in the background, once it answers.

Single flight reaches across processes: the first to ask GitHub about a token claims it in Redis,
and the others wait for its answer there instead of asking too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..backoff import START, Backoff
from ..config import CacheConfig, GitHubConfig
from ..config.models import REPOSITORY_LEVELS
from ..metrics import CACHE_LOOKUPS
from .value import Identity, checked_identity, token_id

log = logging.getLogger("gateway.redis")

TIMEOUT = 0.5  # seconds for a connection or a command (or to wait for a free connection)
MAX_CONNECTIONS = 64  # per process, the subscription's included
HEALTH_CHECK = 5  # seconds of silence on the subscription before it is pinged
POLL = 0.02  # seconds between two looks at Redis while another process asks GitHub
MAX_RETRY_WAIT = 1.0  # seconds: room for the GitHub client's backoff between retries
MAX_UNDELIVERED = 10_000  # logouts kept for redelivery while Redis is unreachable
_FAILED = object()  # what a command that failed returns

_HIT, _NEGATIVE, _MISS, _ERROR = (
    CACHE_LOOKUPS.labels("redis", r) for r in ("hit", "negative", "miss", "error")
)


class SharedEntry(NamedTuple):
    """An entry read from the shared tier: its identity (None: invalid) and, in seconds from now,
    how long it is fresh and how long it may still be served while GitHub is unusable."""

    identity: Identity | None
    fresh_for: float
    keep_for: float


def namespace(github: GitHubConfig) -> str:
    """The key prefix for gateways that trust the same GitHub and the same apps."""
    vouchers = "\n".join([str(github.api_url), *sorted(app.client_id for app in github.apps)])
    return "gateway:" + hashlib.sha256(vouchers.encode()).hexdigest()[:16]


class SharedFact(NamedTuple):
    """A membership fact as Redis holds it: GitHub's answer, and how long it stays fresh."""

    value: bool | str | None
    sso_url: str | None
    fresh_for: float


_LEVELS = frozenset(REPOSITORY_LEVELS)


def _fact(data: dict[str, Any], now: float) -> SharedFact:
    """A fact read from Redis, held to what GitHub's answers give: it decides who may pass."""
    value, sso_url, fresh_until = data["value"], data["sso_url"], data["fresh_until"]
    # SECURITY: a yes/no, a repository level or nothing; an SSO URL; a time: nothing else is believed
    if not (value is None or type(value) is bool or (isinstance(value, str) and value in _LEVELS)):
        raise ValueError("value is not a membership answer")
    if not (sso_url is None or (isinstance(sso_url, str) and sso_url.startswith(("https://", "http://")))):
        raise ValueError("sso_url is not a URL")
    if type(fresh_until) not in (int, float):
        raise ValueError("fresh_until is not a time")
    return SharedFact(value, sso_url, fresh_until - now)


def _encode(identity: Identity | None, fresh_until: float, keep_until: float) -> bytes:
    fields: dict[str, Any] = {"fresh_until": fresh_until, "keep_until": keep_until}
    if identity is not None:
        fields.update(identity.as_json())
    return json.dumps(fields, separators=(",", ":")).encode()


def _decode(raw: bytes, client_ids: frozenset[str]) -> tuple[Identity | None, float, float]:
    """An entry's identity, fresh_until and keep_until; ValueError for what this gateway did not write."""
    fields = json.loads(raw)
    if not isinstance(fields, dict):
        raise ValueError("not an object")
    fresh_until, keep_until = fields["fresh_until"], fields["keep_until"]
    if not (isinstance(fresh_until, int | float) and isinstance(keep_until, int | float)):
        raise ValueError("fresh_until and keep_until are not times")
    if "login" not in fields:
        return None, fresh_until, keep_until
    expires_at, client_id = fields["expires_at"], fields["client_id"]
    if not (expires_at is None or type(expires_at) in (int, float)):
        raise ValueError("expires_at is not a time")
    if not (isinstance(client_id, str) and client_id in client_ids):
        raise ValueError("client_id is not a configured app's")
    # SECURITY: what reaches identity headers is held to what the GitHub client accepts from GitHub
    identity = checked_identity(fields["login"], fields["id"], fields["scopes"], expires_at, client_id)
    return identity, fresh_until, keep_until


class RedisTier:
    """Identities by token digest in Redis, and the revocation channel."""

    def __init__(
        self,
        url: str,
        github: GitHubConfig,
        cache: CacheConfig,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        # no retries inside redis-py: a failure is a miss here, and the backoff below takes over.
        # A bounded pool: a flood of new tokens waits for a connection instead of opening thousands.
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=TIMEOUT,
            socket_timeout=TIMEOUT,
            socket_connect_timeout=TIMEOUT,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=HEALTH_CHECK,
        )
        self._redis = redis.Redis(connection_pool=pool)
        self._prefix = namespace(github)
        self._client_ids = frozenset(app.client_id for app in github.apps)
        # how long one check may take, retries included: a claim lasts no longer, nor does a wait
        self._claim_for = github.timeout * (github.retries + 1) * len(github.apps) + MAX_RETRY_WAIT
        self.channel = self._prefix + ":revoked"
        self._negative_ttl = cache.negative_ttl
        # a process may serve an identity this long after it was checked: a logout matters that long
        self._matters_for = cache.ttl + cache.stale_if_error
        self._wall_clock = wall_clock
        self._rest = Backoff()  # Redis is left alone this long after a command failed
        # logouts Redis missed: digest -> the wall time until which they matter
        self._undelivered: dict[bytes, float] = {}
        self._redelivery: asyncio.Task[None] | None = None

    def _key(self, digest: bytes) -> str:
        return f"{self._prefix}:identity:{digest.hex()}"

    def _claim(self, digest: bytes) -> str:
        return f"{self._prefix}:checking:{digest.hex()}"

    async def get(self, digest: bytes) -> SharedEntry | None:
        """The entry for a digest, None when there is none or Redis cannot say."""
        return self._entry(digest, await self._command(lambda r: r.get(self._key(digest))))

    async def claim(self, digest: bytes) -> bool:
        """Whether this process should be the one to ask GitHub about a token: True unless another
        process has claimed it and not yet shared the answer (True too when Redis cannot say)."""
        px = _ms(self._claim_for)
        taken = await self._command(lambda r: r.set(self._claim(digest), b"1", nx=True, px=px))
        return taken is not None  # None: the claim was someone else's

    async def release(self, digest: bytes) -> None:
        """Give up a claim: the answer is shared, or there is none to share."""
        await self._command(lambda r: r.delete(self._claim(digest)))

    async def wait_for(self, digest: bytes) -> SharedEntry | None:
        """The entry another process is asking GitHub for, once it has shared it; None when that
        process gave up (its claim is gone), Redis fails, or it takes longer than a check may."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._claim_for

        async def entry_and_claim(r: redis.Redis) -> Any:
            async with r.pipeline(transaction=False) as pipe:
                pipe.get(self._key(digest))
                pipe.exists(self._claim(digest))
                return await pipe.execute()

        while loop.time() < deadline:
            await asyncio.sleep(POLL)  # a back-off between two looks at Redis
            found = await self._command(entry_and_claim)
            if found is _FAILED:
                return None
            raw, claimed = found
            if raw is not None or not claimed:
                return self._entry(digest, raw)
        return None

    def _entry(self, digest: bytes, raw: Any) -> SharedEntry | None:
        if raw is None or raw is _FAILED:
            (_MISS if raw is None else _ERROR).inc()
            return None
        try:
            identity, fresh_until, keep_until = _decode(raw, self._client_ids)
        except (ValueError, KeyError, TypeError):
            log.warning("redis: ignoring an entry this gateway did not write (%s)", self._key(digest))
            _ERROR.inc()
            return None
        now = self._wall_clock()
        if fresh_until <= now:
            _MISS.inc()  # past fresh: only good for standing in while GitHub is unusable (counted then)
        else:
            (_HIT if identity is not None else _NEGATIVE).inc()
        return SharedEntry(identity, fresh_until - now, keep_until - now)

    async def put(self, digest: bytes, identity: Identity | None, fresh_for: float, keep_for: float) -> None:
        """Share an entry: fresh for `fresh_for` seconds, gone from Redis after `keep_for`."""
        if keep_for <= 0:
            return
        now = self._wall_clock()
        value = _encode(identity, now + fresh_for, now + keep_for)
        await self._command(lambda r: r.set(self._key(digest), value, px=_ms(keep_for)))

    def _fact_key(self, fact: tuple[int, str, str]) -> str:
        user_id, kind, target = fact
        return f"{self._prefix}:fact:{user_id}:{kind}:{target}"

    async def get_fact(self, fact: tuple[int, str, str]) -> SharedFact | None:
        """A membership fact (user id, kind, target) another process shared, while it is fresh; None
        when there is none or Redis cannot say."""
        raw = await self._command(lambda r: r.get(self._fact_key(fact)))
        if raw is None or raw is _FAILED:
            return None
        try:
            shared = _fact(json.loads(raw), self._wall_clock())
        except (ValueError, KeyError, TypeError):
            log.warning("redis: ignoring a fact this gateway did not write (%s)", self._fact_key(fact))
            return None
        return shared if shared.fresh_for > 0 else None

    async def put_fact(
        self, fact: tuple[int, str, str], value: bool | str | None, sso_url: str | None, fresh_for: float
    ) -> None:
        """Share a membership fact for `fresh_for` seconds."""
        if fresh_for <= 0:
            return
        data = {"value": value, "sso_url": sso_url, "fresh_until": self._wall_clock() + fresh_for}
        raw = json.dumps(data).encode()
        await self._command(lambda r: r.set(self._fact_key(fact), raw, px=_ms(fresh_for)))

    async def revoke(self, digest: bytes) -> bool:
        """Record a token as invalid and tell every replica to forget it. False when Redis cannot be
        told now: the logout is then delivered again, in the background, once Redis answers."""
        if await self._deliver(digest):
            return True
        if len(self._undelivered) < MAX_UNDELIVERED:
            self._undelivered[digest] = self._wall_clock() + self._matters_for
        if self._redelivery is None:
            self._redelivery = asyncio.create_task(self._redeliver())
        return False

    async def _deliver(self, digest: bytes) -> bool:
        now = self._wall_clock()
        value = _encode(None, now + self._negative_ttl, now + self._negative_ttl)
        px = _ms(self._negative_ttl)

        async def both(r: redis.Redis) -> Any:
            async with r.pipeline(transaction=True) as pipe:
                pipe.set(self._key(digest), value, px=px)  # queued: a pipeline's commands return it
                pipe.publish(self.channel, digest.hex())
                return await pipe.execute()

        return await self._command(both) is not _FAILED

    async def _redeliver(self) -> None:
        """Deliver the logouts Redis missed, as soon as it answers again, while they still matter."""
        try:
            while self._undelivered:
                await asyncio.sleep(max(self._rest.remaining(), START))  # Redis' rest, then try again
                for digest, until in list(self._undelivered.items()):
                    if until > self._wall_clock():  # else every process has forgotten the token by now
                        if not await self._deliver(digest):
                            break  # still unreachable: the next round
                        log.info("redis: a logout it missed is delivered now (token %s)", token_id(digest))
                    del self._undelivered[digest]
        finally:
            self._redelivery = None

    async def _command(self, command: Callable[[redis.Redis], Awaitable[Any]]) -> Any:
        """Run a command; `_FAILED` (and a rest from Redis) when it fails."""
        if self._rest.remaining() > 0:
            return _FAILED
        try:
            result = await command(self._redis)
        except (RedisError, OSError) as exc:
            if not self._rest.failing:
                log.warning("redis unavailable, using the in-process cache and GitHub: %s", _reason(exc))
            self._rest.failed()
            return _FAILED
        if self._rest.failing:
            log.info("redis available again")
            self._rest.succeeded()
        return result

    async def listen(self, revoked: Callable[[bytes], None], resubscribed: Callable[[], None]) -> None:
        """Follow the revocation channel until cancelled: `revoked(digest)` for each revocation,
        `resubscribed()` each time the subscription (re)starts, as revocations may have been missed."""
        rest = Backoff()
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    while True:
                        message = await pubsub.get_message(timeout=HEALTH_CHECK)
                        if message is None:
                            continue
                        if message["type"] == "subscribe":
                            resubscribed()
                            rest.succeeded()
                        elif message["type"] == "message":
                            digest = _digest(message["data"])
                            if digest is not None:
                                revoked(digest)
            except (RedisError, OSError) as exc:
                wait = rest.failed()
                log.warning(
                    "redis: the revocation channel dropped, retrying in %.0fs: %s", wait, _reason(exc)
                )
                await asyncio.sleep(wait)

    async def close(self) -> None:
        if self._redelivery is not None:
            self._redelivery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._redelivery
        await self._redis.aclose(close_connection_pool=True)


def _ms(seconds: float) -> int:
    """A key's lifetime in milliseconds (PX), at least 1."""
    return max(1, int(seconds * 1000))


def _digest(data: object) -> bytes | None:
    try:
        digest = bytes.fromhex(data.decode() if isinstance(data, bytes) else str(data))
    except ValueError:
        return None
    return digest if len(digest) == hashlib.sha256().digest_size else None


def _reason(exc: BaseException) -> str:
    # SECURITY: redis-py's messages name the host and port, never the URL's password
    return f"{type(exc).__name__}: {exc}"
