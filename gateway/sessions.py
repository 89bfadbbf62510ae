"""Browser sessions (DESIGN §12): what the session cookie and the sign-in cookie hold, sealed.

A cookie's value is `v1.` + base64url(nonce ‖ AES-256-GCM ciphertext and tag), keyed by HKDF-SHA256
from `sessions.cookie_secret`, with the cookie's name and purpose as associated data: a value made
for one cookie never opens as the other, and one changed by a single bit opens as nothing (a tampered
or undecryptable cookie is no credentials at all). `previous_cookie_secrets` still open cookies sealed
before a rotation; new ones are always sealed with the current secret. What a cookie holds also says
until when it is good, so a browser that keeps it past `Max-Age` gains nothing.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeGuard

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .config import SessionsConfig

_VERSION = "v1."
_NONCE = 12
_INFO = b"gateway session cookie v1"
MAX_COOKIE_VALUE = 3800  # browsers keep 4096 bytes per cookie, name and attributes included


def _key(secret: str) -> AESGCM:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret.encode())
    return AESGCM(derived)


@dataclass(frozen=True, repr=False)
class Session:
    """A signed-in browser: its GitHub token (and refresh token) and until when each is good."""

    token: str
    refresh_token: str | None
    expires_at: float | None  # the access token's, None when it does not expire
    refresh_expires_at: float | None
    ends_at: float  # the session's own end: sign-in + sessions.max_age

    def __repr__(self) -> str:
        return f"<Session until {self.ends_at:.0f}>"  # never a token


class Sealer:
    """Seals and opens the gateway's cookies with the current and previous cookie secrets."""

    def __init__(self, config: SessionsConfig, *, clock: Callable[[], float] = time.time) -> None:
        self._current = _key(config.cookie_secret.get_secret_value())
        self._keys = (self._current, *(_key(s.get_secret_value()) for s in config.previous_cookie_secrets))
        self.cookie_name = config.cookie_name
        self.max_age = config.max_age
        self._clock = clock

    def __repr__(self) -> str:
        return f"<Sealer {self.cookie_name}: {len(self._keys)} keys>"

    def seal(self, purpose: str, payload: dict[str, object]) -> str:
        """A cookie value holding `payload`, for the cookie `purpose` names."""
        nonce = os.urandom(_NONCE)
        plain = json.dumps(payload, separators=(",", ":")).encode()
        sealed = self._current.encrypt(nonce, plain, self._aad(purpose))
        return _VERSION + base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()

    def open(self, purpose: str, value: str) -> dict[str, object] | None:
        """What a cookie value holds, if a current or previous secret sealed it for `purpose` and it is
        still good (its `until`); None for anything else."""
        if not value.startswith(_VERSION) or len(value) > MAX_COOKIE_VALUE:
            return None
        try:
            raw = base64.urlsafe_b64decode(value[len(_VERSION) :] + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            return None
        nonce, sealed = raw[:_NONCE], raw[_NONCE:]
        for key in self._keys:
            try:
                plain = key.decrypt(nonce, sealed, self._aad(purpose))
            except (InvalidTag, ValueError):
                continue
            payload = json.loads(plain)
            if not isinstance(payload, dict) or not _number(payload.get("until")):
                return None
            return payload if float(payload["until"]) > self._clock() else None
        return None

    def session(self, values: Iterable[str]) -> Session | None:
        """The session in the first of a request's session-cookie values that opens."""
        for value in values:
            payload = self.open("session", value)
            if payload is not None and (session := _session(payload)) is not None:
                return session
        return None

    def seal_session(self, session: Session) -> str:
        """The session cookie's value for `session`."""
        return self.seal(
            "session",
            {
                "t": session.token,
                "r": session.refresh_token,
                "e": session.expires_at,
                "re": session.refresh_expires_at,
                "until": session.ends_at,
            },
        )

    def _aad(self, purpose: str) -> bytes:
        return f"{self.cookie_name}/{purpose}".encode()


def _session(payload: dict[str, object]) -> Session | None:
    token, refresh, until = payload.get("t"), payload.get("r"), payload.get("until")
    expires, refresh_expires = payload.get("e"), payload.get("re")
    if not isinstance(token, str) or not (refresh is None or isinstance(refresh, str)) or not _number(until):
        return None
    if not (_optional_number(expires) and _optional_number(refresh_expires)):
        return None
    return Session(token, refresh, expires, refresh_expires, until)


def _number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _optional_number(value: object) -> TypeGuard[float | None]:
    return value is None or _number(value)
