"""Routes and what they allow: longest-prefix matching on normalised paths (`paths`), GitHub's scope
hierarchy, allow-lists. Pure functions and tables built once at start-up; no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from .config import Route
from .errors import Forbidden, InsufficientScope
from .identity import Identity

# GitHub's documented scope hierarchy for OAuth apps: each scope and the scopes it grants.
# https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/scopes-for-oauth-apps
_SCOPE_CHILDREN: dict[str, tuple[str, ...]] = {
    "repo": ("repo:status", "repo_deployment", "public_repo", "repo:invite", "security_events"),
    "admin:repo_hook": ("write:repo_hook",),
    "write:repo_hook": ("read:repo_hook",),
    "admin:org": ("write:org",),
    "write:org": ("read:org",),
    "admin:public_key": ("write:public_key",),
    "write:public_key": ("read:public_key",),
    "user": ("read:user", "user:email", "user:follow"),
    "project": ("read:project",),
    "write:packages": ("read:packages",),
    "admin:gpg_key": ("write:gpg_key",),
    "write:gpg_key": ("read:gpg_key",),
    "codespace": ("codespace:secrets",),
    "admin:enterprise": ("manage_runners:enterprise", "manage_billing:enterprise", "read:enterprise"),
    "audit_log": ("read:audit_log",),
    "admin:ssh_signing_key": ("write:ssh_signing_key",),
    "write:ssh_signing_key": ("read:ssh_signing_key",),
    "write:discussion": ("read:discussion",),
}


def _closure(scope: str) -> frozenset[str]:
    granted = {scope}
    for child in _SCOPE_CHILDREN.get(scope, ()):
        granted |= _closure(child)
    return frozenset(granted)


_GRANTS: dict[str, frozenset[str]] = {scope: _closure(scope) for scope in _SCOPE_CHILDREN}


def granted_scopes(scopes: tuple[str, ...]) -> frozenset[str]:
    """Every scope a token holds, its granted scopes expanded through GitHub's hierarchy."""
    out: set[str] = set()
    for scope in scopes:
        out |= _GRANTS.get(scope, frozenset((scope,)))
    return frozenset(out)


# ---------------------------------------------------------------------------------------------------
# Routes


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    """A route with its policy tables built once."""

    route: Route
    upstream_base: str  # scheme://host[:port], no path
    upstream_path: str  # the upstream URL's path, "" for none
    scopes: frozenset[str]
    users: frozenset[str]  # lower-case: GitHub logins are case-insensitive
    user_ids: frozenset[int]
    facts: tuple[tuple[str, str], ...]  # ("org" | "team" | "repo", name): what GitHub is asked, in order
    repos: Mapping[str, str]  # repository -> the lowest level that admits
    methods: frozenset[str]
    upstream_token_key: bytes | None  # digest of the route's upstream_token spec
    audience: str  # the identity token's `aud`: the route's audience, else the upstream's origin

    @classmethod
    def build(cls, route: Route) -> CompiledRoute:
        """Compile one configured route."""
        parts = urlsplit(route.upstream)
        return cls(
            route=route,
            upstream_base=f"{parts.scheme}://{parts.netloc}",
            upstream_path=parts.path.rstrip("/"),
            scopes=frozenset(route.scopes),
            users=frozenset(u.lower() for u in route.users),
            user_ids=frozenset(route.user_ids),
            facts=(
                *(("org", org) for org in route.orgs),
                *(("team", team) for team in route.teams),
                *(("repo", repo) for repo in route.repos),
            ),
            repos=route.repos,
            methods=frozenset(route.methods),
            upstream_token_key=(
                hashlib.sha256(route.upstream_token.model_dump_json().encode()).digest()
                if route.upstream_token
                else None
            ),
            audience=route.audience or _origin(parts.scheme, parts.hostname or "", parts.port),
        )

    def upstream_target(self, path: str, query: str) -> str:
        """The path and query to request upstream for a normalised inbound path."""
        if self.route.strip_prefix and self.route.path != "/":
            path = path[len(self.route.path) :] or "/"
            if not path.startswith("/"):
                path = "/" + path
        target = self.upstream_path + path
        return f"{target}?{query}" if query else target

    def check_method(self, method: str) -> None:
        """Refuse a method the route does not allow."""
        if self.methods and method not in self.methods:
            raise Forbidden(f"method {method} is not allowed on this route")

    def authorize(self, identity: Identity) -> bool:
        """Refuse a token without the route's scopes; then whether the route admits the identity by
        itself (True: no one is named, or its login or id is), or only GitHub's facts of its `orgs`,
        `teams` and `repos` can (False). Forbidden when nothing can."""
        if self.scopes:
            missing = self.scopes - granted_scopes(identity.scopes)
            if missing:
                raise InsufficientScope(sorted(missing))
        if identity.login.lower() in self.users or identity.user_id in self.user_ids:
            return True
        if self.facts:
            return False
        if self.users or self.user_ids:
            raise Forbidden("this user is not allowed on this route")
        return True


class RouteTable:
    """Longest matching prefix on whole path segments, case-insensitively."""

    def __init__(self, routes: tuple[Route, ...]) -> None:
        self._by_prefix = {r.path.lower(): CompiledRoute.build(r) for r in routes}

    def match(self, path: str) -> CompiledRoute | None:
        """The route for a normalised path, or None."""
        key = path.lower().rstrip("/") or "/"
        while True:
            route = self._by_prefix.get(key)
            if route is not None or key == "/":
                return route
            key = key[: key.rindex("/")] or "/"


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(scheme: str, host: str, port: int | None) -> str:
    """RFC 6454's serialisation of an origin: scheme://host, and :port unless the scheme's default."""
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}" if port in (None, _DEFAULT_PORTS[scheme]) else f"{scheme}://{shown}:{port}"
