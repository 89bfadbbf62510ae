"""The identity token (DESIGN §11): a JWT of the caller's identity that upstreams verify against
`/_gateway/jwks.json`, so that an identity header written by anything that did not pass the gateway is
worth nothing.

Signing is PyJWT's (with `cryptography`); the keys are `signing_keys`'. A token is signed once per
(caller's GitHub token, audience) and reused while more than half of its lifetime remains and what it
says (the identity, the groups) is unchanged: a cache hit costs a dictionary lookup, not a signature.
`exp` is `iat` + `ttl`, never past the GitHub token's own `expires_at`. The JWKS document is built once
per config: the current key first, then the previous public keys (rotation: README, Verifying the
identity token).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
import time
from collections.abc import Callable
from typing import NamedTuple

import jwt

from .config import IdentityTokenConfig
from .identity import Identity
from .signing_keys import load_public_jwk, load_signing_key


class Issued(NamedTuple):
    """A signed identity token, held for reuse."""

    token: str
    # its header line (`header: token` and CRLF), made and checked once per token: a head's
    # serialiser would check its every character for every request that carries it
    line: bytes
    renew_at: float
    identity: Identity
    groups: tuple[str, ...] | None


_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")  # compact serialisation, base64url


class IdentityTokens:
    """Identity tokens for one config: signed as needed, reused per (caller, audience), and the JWKS."""

    def __init__(
        self,
        config: IdentityTokenConfig,
        *,
        max_entries: int,
        signed: Callable[[str], None] = lambda route: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.header = config.header
        self._key = load_signing_key(config.signing_key_file)  # checked when the config was loaded
        keys = {self._key.kid: self._key.jwk}
        for path in config.previous_public_keys:
            jwk = load_public_jwk(path)
            keys.setdefault(jwk["kid"], jwk)  # the new key listed ahead of its use, then still listed
        self.jwks = json.dumps({"keys": list(keys.values())}, separators=(",", ":")).encode()
        self.jwks_etag = '"' + hashlib.sha256(self.jwks).hexdigest()[:32] + '"'
        self._issuer = config.issuer or "gateway"  # Config fills it in: server.public_url, else this
        self._ttl = config.ttl
        self._max_entries = max_entries
        self._signed = signed
        self._clock = clock
        self._issued: dict[tuple[bytes, str], Issued] = {}

    def __repr__(self) -> str:
        return f"<IdentityTokens {self._key!r}: {len(self._issued)} held>"

    def issued(
        self,
        identity: Identity,
        digest: bytes,
        audience: str,
        groups: tuple[str, ...] | None,
        route: str,
    ) -> Issued:
        """The identity token for a caller (`digest`: their GitHub token's) on a route's `audience`,
        and its header line; `groups` None when no organisation or team is configured (the claim is
        left out)."""
        now = self._clock()
        key = (digest, audience)
        held = self._issued.get(key)
        if held is not None and now < held.renew_at and held.identity == identity and held.groups == groups:
            return held
        token, renew_at = self._sign(identity, audience, groups, now)
        # SECURITY: the line goes into heads as it is, past the serialiser's check for CR/LF: it holds
        # base64url and dots only (the header's name was checked with the config)
        if not _JWS.fullmatch(token):
            raise ValueError("the signed identity token is not in JWS compact form")
        issued = Issued(token, f"{self.header}: {token}\r\n".encode(), renew_at, identity, groups)
        if held is None and len(self._issued) >= self._max_entries:
            del self._issued[next(iter(self._issued))]  # the oldest: past its renewal, most likely
        self._issued[key] = issued
        self._signed(route)
        return issued

    def _sign(
        self, identity: Identity, audience: str, groups: tuple[str, ...] | None, now: float
    ) -> tuple[str, float]:
        issued_at = int(now)
        expires = issued_at + self._ttl
        if identity.expires_at is not None:
            expires = min(expires, identity.expires_at)
        expires_at = math.floor(expires)
        claims: dict[str, object] = {
            "iss": self._issuer,
            "sub": str(identity.user_id),
            "aud": audience,
            "iat": issued_at,
            "nbf": issued_at,
            "exp": expires_at,
            "jti": secrets.token_urlsafe(16),
            "login": identity.login,
            "scopes": list(identity.scopes),
            "client_id": identity.client_id,
        }
        if groups is not None:
            claims["groups"] = list(groups)
        token = jwt.encode(
            claims, self._key.private, algorithm=self._key.algorithm, headers={"kid": self._key.kid}
        )
        return token, issued_at + (expires_at - issued_at) / 2
