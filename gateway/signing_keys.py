"""The identity token's keys (DESIGN §11): which PEM files may sign it and with which JWS algorithm, and
their public halves as JWKs (RFC 7517) named by their RFC 7638 thumbprint.

EC P-256 signs ES256, RSA of 2048 bits or more RS256, Ed25519 EdDSA; any other key is refused with what
was expected, so `check-config` says it before a single token is signed. The JWK members come from
PyJWT's own serialisers; only the thumbprint (a SHA-256 over the required members in canonical JSON)
is computed here, as RFC 7638 §3 spells it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

MIN_RSA_BITS = 2048
_EXPECTED = "an EC P-256, RSA (2048 bits or more) or Ed25519 key"
# RFC 7638 §3.2: the members a thumbprint covers, by key type
_REQUIRED_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


class KeyProblem(ValueError):
    """A key file that cannot sign (or verify) identity tokens; the message says what was expected."""


@dataclass(frozen=True, repr=False)
class SigningKey:
    """A private key that signs identity tokens, its algorithm, and its public JWK."""

    private: PrivateKey
    algorithm: str
    jwk: dict[str, str]

    @property
    def kid(self) -> str:
        """The key's RFC 7638 thumbprint."""
        return self.jwk["kid"]

    def __repr__(self) -> str:
        return f"<SigningKey {self.algorithm} {self.kid}>"  # never the key


def load_signing_key(path: str) -> SigningKey:
    """The signing key in the PEM file at `path`; KeyProblem says what is wrong with it."""
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # cryptography: "Password was not given but private key is encrypted"
        raise KeyProblem(f"expected an unencrypted PEM private key: {path!r} is encrypted") from None
    except (ValueError, UnsupportedAlgorithm):
        if _is_public(data):
            raise KeyProblem(
                f"expected a private key: {path!r} holds a public key (previous_public_keys takes those)"
            ) from None
        raise KeyProblem(f"expected a PEM private key, {_EXPECTED}: {path!r} is not one") from None
    if not isinstance(key, PrivateKey):
        raise KeyProblem(f"expected {_EXPECTED}: {path!r} holds {_kind(key)}")
    public = key.public_key()
    algorithm = _algorithm(public, path)
    return SigningKey(key, algorithm, public_jwk(public, algorithm))


def load_public_jwk(path: str) -> dict[str, str]:
    """The public JWK of the PEM public key at `path` (a previous signing key's); KeyProblem if none."""
    data = _read(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        if b"PRIVATE KEY-----" in data:
            # SECURITY: a retired private key has no business staying on the gateway's disk
            raise KeyProblem(
                f"expected a public key: {path!r} holds a private key; publish its public half instead"
                " (openssl pkey -in OLD.pem -pubout)"
            ) from None
        raise KeyProblem(f"expected a PEM public key, {_EXPECTED}: {path!r} is not one") from None
    if not isinstance(key, PublicKey):
        raise KeyProblem(f"expected {_EXPECTED}: {path!r} holds {_kind(key)}")
    return public_jwk(key, _algorithm(key, path))


def public_jwk(key: PublicKey, algorithm: str) -> dict[str, str]:
    """The public JWK of `key`: its required members, `kid` (its thumbprint), `alg` and `use`."""
    full: dict[str, Any]
    if isinstance(key, ec.EllipticCurvePublicKey):
        full = ECAlgorithm.to_jwk(key, as_dict=True)
    elif isinstance(key, rsa.RSAPublicKey):
        full = RSAAlgorithm.to_jwk(key, as_dict=True)
    else:
        full = OKPAlgorithm.to_jwk(key, as_dict=True)
    members = {name: str(full[name]) for name in _REQUIRED_MEMBERS[full["kty"]]}
    return {**members, "kid": thumbprint(members), "alg": algorithm, "use": "sig"}


def thumbprint(members: dict[str, str]) -> str:
    """RFC 7638: base64url SHA-256 of the required members as JSON, sorted, without whitespace."""
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _algorithm(key: PublicKey, path: str) -> str:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise KeyProblem(
                f"expected an RSA key of at least {MIN_RSA_BITS} bits: {path!r} has {key.key_size}, too weak"
            )
        return "RS256"
    if not isinstance(key.curve, ec.SECP256R1):
        raise KeyProblem(f"expected an EC key on P-256 (secp256r1): {path!r} is on {key.curve.name}")
    return "ES256"


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeyProblem(
            f"expected a readable PEM {what} file; cannot read {path!r} ({exc.strerror or exc})"
        ) from None


def _is_public(data: bytes) -> bool:
    try:
        serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        return False
    return True


def _kind(key: object) -> str:
    return f"a {type(key).__name__.removeprefix('_').replace('PrivateKey', '').replace('PublicKey', '')} key"
