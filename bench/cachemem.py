"""Bytes per cached identity: `python -m bench.cachemem N` prints `{"entries": N, "bytes_per_identity": B}`.

Fills a real `gateway.identity.cache.IdentityCache` through its insertion path (`lookup` of a new token, a
check, `_store`) with N identities, each built from a parsed JSON answer as the GitHub client builds
one (so every login and scope is a string object of its own, as in production), and divides the
memory tracemalloc sees retained (after `gc.collect()`) by N. Run in a process of its own.
"""

from __future__ import annotations

import asyncio
import gc
import json
import secrets
import sys
import tracemalloc
from collections.abc import Sequence
from datetime import datetime

from gateway.config import CacheConfig
from gateway.identity import Identity, token_digest
from gateway.identity.cache import IdentityCache

from .eventloop import new_event_loop

CLIENT_ID = "Iv1.8a61f9b3a7aba766"  # one string shared by every identity, as the config's is


def answer(n: int) -> bytes:
    """A check-token answer for the n-th user: half OAuth App tokens, half expiring GitHub App ones."""
    oauth = n % 2 == 0
    return json.dumps(
        {
            "scopes": ["repo", "read:org"] if oauth else [],
            "expires_at": None if oauth else "2030-01-01T08:00:00Z",
            "user": {"login": f"user-{n:07d}", "id": 10_000_000 + n, "type": "User"},
        }
    ).encode()


def identity_from(raw: bytes, client_id: str) -> Identity:
    """The identity in a check-token answer, built as `gateway.github` builds it."""
    body = json.loads(raw)
    expires = body["expires_at"]
    return Identity(
        login=body["user"]["login"],
        user_id=body["user"]["id"],
        scopes=tuple(body["scopes"] or ()),
        expires_at=None if expires is None else datetime.fromisoformat(expires).timestamp(),
        client_id=client_id,
    )


class _Checker:
    def __init__(self) -> None:
        self.served = 0

    async def check(self, token: str) -> Identity | None:
        self.served += 1
        return identity_from(answer(self.served), CLIENT_ID)


async def bytes_per_identity(entries: int) -> float:
    """Memory retained per identity by an `IdentityCache` holding `entries` of them."""
    cache = IdentityCache(CacheConfig(ttl=3600, max_entries=entries), _Checker())
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        for _ in range(entries):
            token = "gho_" + secrets.token_urlsafe(27)
            await cache.lookup(token, token_digest(token))
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    if len(cache) != entries:
        raise RuntimeError(f"the cache holds {len(cache)} entries, not {entries}")
    return retained / entries


def main(argv: Sequence[str] | None = None) -> None:
    """Print the measurement as one JSON line."""
    args = sys.argv[1:] if argv is None else argv
    entries = int(args[0]) if args else 100_000
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        result = runner.run(bytes_per_identity(entries))
    sys.stdout.write(json.dumps({"entries": entries, "bytes_per_identity": round(result, 1)}) + "\n")


if __name__ == "__main__":
    main()
