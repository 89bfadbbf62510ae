"""Header names: every rule about them, in one place (README: What callers get back; SECURITY.md).

What is hop-by-hop, what the gateway sets itself, what it strips from requests (in every spelling a
CGI/WSGI-style upstream would read as the same name), and so what a config may not name as an
identity header. Config validation (`refused_as_identity_header`) and the request path (`HeaderRules`,
compiled once per config) both read these tables, so the two cannot drift apart.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from multidict import CIMultiDict, CIMultiDictProxy

from .errors import BadRequest
from .identity import Identity

if TYPE_CHECKING:
    from .config import Config
    from .listener import Request

# RFC 9110 §7.6.1 hop-by-hop fields, plus the non-standard ones proxies have been bitten by
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Set by the gateway itself; whatever a caller sends under these names is dropped.
_GATEWAY_SET = frozenset(
    {
        "host",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-real-ip",
        "x-request-id",
        "expect",
    }
)
# SECURITY: what other proxies say about the client and the URL it used; the gateway does not set
# these, and an upstream that believes them would take the caller's word for its address, scheme or
# prefix: passed on only from `server.trusted_proxies`
_FORWARDING = frozenset(
    {
        *("forwarded", "x-forwarded-port", "x-forwarded-prefix", "x-forwarded-scheme", "x-forwarded-ssl"),
        *("x-forwarded-server", "x-forwarded-protocol", "x-url-scheme", "front-end-https"),
        *("x-client-ip", "true-client-ip", "x-cluster-client-ip"),
    }
)
# SECURITY: headers some frameworks route by instead of the request line (Symfony, Zend, IIS rewrite:
# CVE-2018-14773), or run as another method (Express method-override, Rails, Laravel): the upstream
# must act on the method and path that were authorized, nothing else
_REQUEST_OVERRIDES = frozenset(
    {"x-original-url", "x-rewrite-url", "x-http-method-override", "x-http-method", "x-method-override"}
)
# SECURITY: forward-auth's inputs say which request a front proxy had authorized; passed on
# to an upstream that trusts them, they would name another path or method than the one judged here
_FORWARD_AUTH_INPUTS = frozenset(
    {"x-original-uri", "x-forwarded-uri", "x-original-method", "x-forwarded-method"}
)
# SECURITY: message framing is the gateway's own; a `Content_Length` is no framing header to aiohttp but
# reads as one to an upstream that folds `_` into `-`, so that spelling is never passed on
_FRAMING = frozenset({"content-length"})
_CREDENTIALS = frozenset({"authorization", "proxy-authorization", "cookie"})
_MESSAGE = frozenset({"content-length", "content-type", "content-encoding", "transfer-encoding"})
_DEFAULT_IDENTITY_NAMES = (
    "x-auth-user",
    "x-auth-user-id",
    "x-auth-scopes",
    "x-auth-token-expires-at",
    "x-auth-client-id",
    "x-auth-groups",
    "x-auth-jwt",
)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# a DNS name or IPv4 address, or a bracketed IPv6 one, and an optional port
_HOST = re.compile(r"(?:[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
WEBSOCKET_HANDSHAKE = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol"}
)
# What a config may not name as an identity header, and why: the gateway would strip, replace or
# misread it, or the upstream would receive it twice
_NOT_AN_IDENTITY_HEADER = (
    (HOP_BY_HOP, "a hop-by-hop header, removed at every hop"),
    (_GATEWAY_SET, "set or removed by the gateway itself"),
    (_FORWARDING, "a forwarding header, which only trusted proxies may send"),
    (_REQUEST_OVERRIDES, "it names another method or path, and is removed from every request"),
    (_FORWARD_AUTH_INPUTS, "a forward-auth input, removed from every request"),
    (_CREDENTIALS, "it carries the caller's credentials"),
    (_MESSAGE, "it describes the message body"),
    (WEBSOCKET_HANDSHAKE, "part of the WebSocket handshake"),
)
_FOLDED: dict[str, str] = {}
_MAX_FOLDED = 4096  # distinct header names remembered (per table); past that, folded each time
_NONE: frozenset[str] = frozenset()
_MAX_IDENTITIES = 4096  # identities whose headers are remembered (then forgotten all at once)
# what becomes of an inbound header upstream, by its name as sent (before the Connection header's own list)
_KEEP, _DROP, _COOKIE = 0, 1, 2  # passed on; dropped; passed on without the private cookies
_HOP: dict[str, bool] = {}  # whether a response header, by its name as sent, is hop-by-hop


def fold(name: str) -> str:
    """How CGI/WSGI-style frameworks see a header name: case and `_`/`-` do not matter."""
    folded = _FOLDED.get(name)
    if folded is None:
        folded = name.lower().replace("_", "-")
        if len(_FOLDED) < _MAX_FOLDED:
            _FOLDED[name] = folded
    return folded


def refused_as_identity_header(name: str) -> str | None:
    """Why `name`, in any case and with `_` for `-`, cannot carry an identity upstream; None if it can."""
    folded = name.lower().replace("_", "-")
    return next((why for names, why in _NOT_AN_IDENTITY_HEADER if folded in names), None)


def connection_tokens(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    """The header names a message's `Connection` header lists (hop-by-hop for this message), folded."""
    values = headers.getall("Connection", ())
    if not values:
        return _NONE
    return frozenset(fold(t.strip()) for v in values for t in v.split(",") if t.strip())


class HeaderRules:
    """Which inbound headers go upstream, and which the gateway sets; compiled once per config."""

    def __init__(self, config: Config) -> None:
        names = config.identity_headers
        # SECURITY: every spelling of an identity header a caller sends is dropped, configured or default
        configured = {fold(n) for n in names.model_dump().values() if n}
        if config.identity_token is not None:
            configured.add(fold(config.identity_token.header))
        always = (
            HOP_BY_HOP
            | _GATEWAY_SET
            | _REQUEST_OVERRIDES
            | _FORWARD_AUTH_INPUTS
            | configured
            | set(_DEFAULT_IDENTITY_NAMES)
        )
        # SECURITY: credentials the gateway did not validate are never passed on
        validated = always if config.pass_authorization else always | {"authorization"}
        unvalidated = always | {"authorization"}
        # what is dropped, by (credentials validated, peer a trusted proxy)
        self._drop: dict[tuple[bool, bool], frozenset[str]] = {
            (True, True): validated,
            (True, False): validated | _FORWARDING,
            (False, True): unvalidated,
            (False, False): unvalidated | _FORWARDING,
        }
        # each name's fate as sent, decided from `_drop` once and remembered: one lookup per header
        self._verdicts: dict[tuple[bool, bool], dict[str, int]] = {key: {} for key in self._drop}
        self._identity: list[tuple[str, Callable[[Identity], str | None]]] = [
            (name, getter)
            for name, getter in (
                (names.user, lambda i: i.login),
                (names.user_id, lambda i: str(i.user_id)),
                (names.scopes, lambda i: ",".join(i.scopes)),
                (names.expires_at, _expires_at),
                (names.client_id, lambda i: i.client_id),
            )
            if name
        ]
        self._identities: dict[Identity, tuple[tuple[str, str], ...]] = {}
        self._trusted = config.server.trusted_proxies
        # SECURITY: the session cookie (and the sign-in cookie) hold the caller's GitHub token: never
        # passed on (DESIGN §4); names compared case-insensitively, as some frameworks read them
        sessions = config.sessions
        self._private_cookies = (
            frozenset({sessions.cookie_name.lower(), sessions.cookie_name.lower() + "_signin"})
            if sessions is not None
            else _NONE
        )

    def client_address(self, request: Request) -> str:
        """The caller's address: the peer, or what trusted proxies say in X-Forwarded-For."""
        peer = request.remote or ""
        if not self._trusted_peer(peer):
            return peer
        chain = [a.strip() for v in request.headers.getall("X-Forwarded-For", ()) for a in v.split(",")]
        for addr in reversed(chain):
            if not self._trusted_peer(addr):
                return addr
        return chain[0] if chain and chain[0] else peer

    def _trusted_peer(self, addr: str) -> bool:
        if not self._trusted:
            return False
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in net for net in self._trusted)

    def upstream_request_headers(
        self,
        request: Request,
        identity: Identity | None,
        request_id: str,
        client: str,
    ) -> CIMultiDict[str]:
        """The headers to send upstream for a request; `client` is the caller's address."""
        inbound = request.headers
        peer = request.remote or ""
        trusted = self._trusted_peer(peer)
        key = (identity is not None, trusted)
        verdicts = self._verdicts[key]
        named = connection_tokens(inbound)
        out: CIMultiDict[str] = CIMultiDict()
        for name, value in inbound.items():
            verdict = verdicts.get(name)
            if verdict is None:
                verdict = self._verdict(name, key)
            if verdict == _DROP or (named and fold(name) in named):
                continue
            if verdict == _COOKIE:
                value = without_cookies(value, self._private_cookies)
                if not value:
                    continue
            out.add(name, value)
        prior = ", ".join(inbound.getall("X-Forwarded-For", ())) if trusted else ""
        out["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
        out["X-Forwarded-Proto"] = request.scheme
        host = inbound.get("Host")
        if host:
            # SECURITY: one well-formed host[:port], or 400: a list, a path or a user part would be
            # read upstream as another host than the one the caller asked for
            if not _HOST.fullmatch(host):
                raise BadRequest("the Host header is not a well-formed host[:port]")
            out["X-Forwarded-Host"] = host
        out["X-Request-Id"] = request_id
        out["X-Real-IP"] = client
        if identity is not None:  # identity headers last
            out.extend(self.identity_headers(identity))
        return out

    def _verdict(self, name: str, key: tuple[bool, bool]) -> int:
        """What becomes of an inbound header called `name` upstream, for requests of `key`; remembered."""
        folded = fold(name)
        if folded in self._drop[key] or (folded in _FRAMING and "_" in name):
            verdict = _DROP
        elif folded == "cookie" and self._private_cookies:
            verdict = _COOKIE
        else:
            verdict = _KEEP
        verdicts = self._verdicts[key]
        if len(verdicts) < _MAX_FOLDED:
            verdicts[name] = verdict
        return verdict

    def identity_headers(self, identity: Identity) -> tuple[tuple[str, str], ...]:
        """The configured identity headers for an identity (null names and null values left out);
        made once per identity while it is among the last `_MAX_IDENTITIES` seen."""
        made = self._identities.get(identity)
        if made is None:
            made = tuple(
                (name, value) for name, getter in self._identity if (value := getter(identity)) is not None
            )
            if len(self._identities) >= _MAX_IDENTITIES:
                self._identities.clear()
            self._identities[identity] = made
        return made


def without_cookies(header: str, names: frozenset[str]) -> str:
    """A Cookie header's value without the cookies `names` lists (lower-case)."""
    kept = [pair.strip() for pair in header.split(";")]
    return "; ".join(p for p in kept if p and p.partition("=")[0].strip().lower() not in names)


def _expires_at(identity: Identity) -> str | None:
    if identity.expires_at is None:
        return None
    return datetime.fromtimestamp(identity.expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_ID_PREFIX = secrets.token_hex(8)  # per process: ids stay unique across workers and restarts
_ID_COUNTER = itertools.count()


def request_id(headers: CIMultiDictProxy[str]) -> str:
    """The inbound X-Request-Id when well-formed, else a new one (32 hex characters)."""
    given = headers.get("X-Request-Id", "")
    if _REQUEST_ID.fullmatch(given):
        return given
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def response_headers(upstream: CIMultiDictProxy[str]) -> list[tuple[str, str]]:
    """The upstream's response headers without hop-by-hop ones (pairs: the response copies them into
    its own multidict anyway)."""
    named = connection_tokens(upstream)
    if named:
        return [(k, v) for k, v in upstream.items() if (f := fold(k)) not in HOP_BY_HOP and f not in named]
    kept = []
    for name, value in upstream.items():
        hop = _HOP.get(name)
        if hop is None:
            hop = fold(name) in HOP_BY_HOP
            if len(_HOP) < _MAX_FOLDED:
                _HOP[name] = hop
        if not hop:
            kept.append((name, value))
    return kept
