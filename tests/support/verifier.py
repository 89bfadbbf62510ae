"""An upstream that lets a request in only with a valid identity token (DESIGN §11), verified the way an
upstream author would: with an independent JWT library (joserfc, not PyJWT, which signs them) against
the gateway's JWKS, fetched once and again when a token names a key it does not know.

And the keys the tests sign with, written to PEM files as an operator would (`write_key`).
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from joserfc import jwt
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact

ALGORITHMS = ["ES256", "RS256", "EdDSA"]
KINDS = {"ec": "ES256", "rsa": "RS256", "ed25519": "EdDSA"}


def private_key(kind: str) -> Any:
    """A new private key: ec (P-256), rsa (2048), ed25519, or the refused ec-p384, rsa-1024, ed448, dsa."""
    makers: dict[str, Callable[[], Any]] = {
        "ec": lambda: ec.generate_private_key(ec.SECP256R1()),
        "ec-p384": lambda: ec.generate_private_key(ec.SECP384R1()),
        "rsa": lambda: rsa.generate_private_key(65537, 2048),
        "rsa-1024": lambda: rsa.generate_private_key(65537, 1024),  # noqa: S505 (one to refuse)
        "ed25519": ed25519.Ed25519PrivateKey.generate,
        "ed448": ed448.Ed448PrivateKey.generate,
        "dsa": lambda: dsa.generate_private_key(2048),
    }
    return makers[kind]()


def write_key(directory: Path, name: str, kind: str = "ec") -> tuple[Path, Path, Any]:
    """A private key in `name.pem` and its public half in `name.pub.pem`; returns both paths and the key."""
    key = private_key(kind)
    private = directory / f"{name}.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public = directory / f"{name}.pub.pem"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public, key


def decode(token: str, keys: KeySet) -> jwt.Token:
    """The token verified with joserfc against `keys` (signature and algorithm only)."""
    with warnings.catch_warnings():
        # RFC 9864 deprecates the name "EdDSA" for "Ed25519"; DESIGN §11 keeps "EdDSA", the name most
        # JWT libraries (PyJWT, jose, golang-jwt) know
        warnings.simplefilter("ignore", SecurityWarning)
        return jwt.decode(token, keys, algorithms=ALGORITHMS)


def kid_of(token: str) -> str:
    """The `kid` in a token's protected header (unverified)."""
    return str(extract_compact(token.encode()).protected.get("kid", ""))


@dataclass
class VerifyingUpstream:
    """An upstream that answers 200 with the verified claims, or 401 with why the token was refused."""

    issuer: str
    audience: str
    header: str = "X-Auth-Jwt"
    jwks_url: str = ""
    keys: KeySet = field(default_factory=lambda: KeySet([]))
    accepted: list[dict[str, Any]] = field(default_factory=list)
    last_by_kid: dict[str, str] = field(default_factory=dict)  # the last token accepted, by its kid
    rejected: list[str] = field(default_factory=list)
    fetches: int = 0
    url: str = ""
    _session: aiohttp.ClientSession | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, _app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        values = request.headers.getall(self.header, [])
        try:
            if len(values) != 1:
                raise JoseError(f"{len(values)} {self.header} headers")
            claims = await self.verify(values[0])
        except JoseError as exc:
            self.rejected.append(f"{type(exc).__name__}: {exc}")
            return web.json_response({"error": type(exc).__name__}, status=401)
        self.accepted.append(claims)
        self.last_by_kid[kid_of(values[0])] = values[0]
        if request.headers.get("Upgrade", "").lower() == "websocket":
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await ws.send_str(json.dumps(claims))
            return ws
        return web.json_response({"claims": claims, "kid": kid_of(values[0])})

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims once its signature, issuer, audience and lifetime hold; JoseError if not."""
        kid = kid_of(token)
        if not any(key.kid == kid for key in self.keys):  # a key not seen yet: the JWKS again, once
            await self._fetch()
        verified = decode(token, self.keys)
        registry = jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.audience},
            sub={"essential": True},
            exp={"essential": True},
            nbf={"essential": True},
            iat={"essential": True},
            jti={"essential": True},
        )
        registry.validate(verified.claims)
        return dict(verified.claims)

    async def _fetch(self) -> None:
        async with self._lock:
            if self._session is None:
                self._session = aiohttp.ClientSession()
            async with self._session.get(self.jwks_url) as resp:
                assert resp.status == 200, resp.status
                self.keys = KeySet.import_key_set(await resp.json())
            self.fetches += 1
