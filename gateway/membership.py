"""Who may pass (README: Who may pass): organisation, team and repository facts about a caller, asked
of GitHub with the caller's own token (`github.membership.as: user`), and the decision they make.

A route's `users`, `user_ids`, `orgs`, `teams` and `repos` together name who may pass: any entry of
any of them admits. The facts are GitHub's answers to
    organisation  GET /user/memberships/orgs/{org}                       `state: active` (pending is not)
    team          GET /orgs/{org}/teams/{team_slug}/memberships/{login}  `state: active` (child teams count)
    repository    GET /repos/{owner}/{repo}                              `permissions`: the highest true
and are cached by (user id, fact), never by login (it can change) and never with the token, in process
and in Redis when configured: a "yes" for `membership.ttl`, a "no" for `membership.negative_ttl`, so
someone removed from an organisation is
refused within `membership.ttl` although their token is still cached as valid. Concurrent requests
needing one fact make one call. A 403 with `X-GitHub-SSO: required; url=…` is a member whose token is
not authorized for the organisation's SAML SSO: 403 `sso_required` with that URL. Any other 401/403
(the token lacks `read:org`, or the app is not installed there) is a "no", logged once per target.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

from .config import Config, MembershipConfig
from .config.models import REPOSITORY_LEVELS
from .errors import Forbidden, GitHubError, GitHubUnavailable, ServiceUnavailable, SSORequired
from .github import GitHubClient
from .github.answers import Reply
from .github.installations import Installations
from .identity import Identity
from .identity.redis import RedisTier
from .identity.singleflight import SingleFlight
from .metrics import GITHUB_RATE_LIMIT_REMAINING, MEMBERSHIP_LOOKUPS, TALLY
from .policy import CompiledRoute

log = logging.getLogger("gateway.membership")

_RANK = {level: rank for rank, level in enumerate(REPOSITORY_LEVELS)}
# GitHub's `permissions` booleans of a repository, highest first, and the level each one means
_PERMISSIONS = (
    *(("admin", "admin"), ("maintain", "maintain"), ("push", "write")),
    *(("triage", "triage"), ("pull", "read")),
)


# each lookup's metric child and access-log word, by (kind, result): bound once
_LOOKUPS = {
    (kind, result): (MEMBERSHIP_LOOKUPS.labels(kind, result), f"{kind}:{result}")
    for kind in ("org", "team", "repo")
    for result in ("cached", "yes", "no", "sso_required", "stale", "unavailable")
}
MAX_REST = 3600.0  # GitHub's rate-limit windows are an hour: a reset further off is not believed


class _RateLimited(GitHubUnavailable):
    """GitHub's rate limit for the caller is spent: nothing is asked for them for `wait` seconds."""

    def __init__(self, message: str, wait: float) -> None:
        super().__init__(message, status=429)
        self.wait = wait


def _until_reset(headers: Mapping[str, str], now: float) -> float:
    """Seconds until GitHub's rate limit resets: Retry-After, else X-RateLimit-Reset (a Unix time)."""
    retry_after, reset = headers.get("Retry-After", ""), headers.get("X-RateLimit-Reset", "")
    if retry_after.isdigit():
        wait = float(retry_after)
    elif reset.isdigit():
        wait = float(reset) - now
    else:
        wait = 60.0
    return min(MAX_REST, max(1.0, wait))


# what GitHub needs to answer, by (kind, asked as the app)
_MEMBERS = "the Members permission"
# what is asked, by (kind, asked as the app): GitHub's operationId, the path, and what it needs to answer
_ASKS = {
    ("org", False): (
        "orgs/get-membership-for-authenticated-user",
        "/user/memberships/orgs/{owner}",
        f"read:org (or, for a GitHub App user token, the app's {_MEMBERS} there)",
    ),
    ("org", True): (
        "orgs/check-membership-for-user",
        "/orgs/{owner}/members/{user}",
        f"the app installed there with {_MEMBERS}",
    ),
    **{
        ("team", as_app): (
            "teams/get-membership-for-user-in-org",
            "/orgs/{owner}/teams/{name}/memberships/{user}",
            f"the app installed there with {_MEMBERS}"
            if as_app
            else f"read:org (or, for a GitHub App user token, the app's {_MEMBERS} there)",
        )
        for as_app in (False, True)
    },
    ("repo", False): (
        "repos/get",
        "/repos/{owner}/{name}",
        "repo for a private repository (or, for a GitHub App user token, Metadata)",
    ),
    ("repo", True): (
        "repos/get-collaborator-permission-level",
        "/repos/{owner}/{name}/collaborators/{user}/permission",
        "the app installed on the repository with the Metadata permission",
    ),
}
_KINDS = {"org": "organisation", "team": "team", "repo": "repository"}


def _looked_up(kind: str, result: str, seen: list[str]) -> None:
    child, word = _LOOKUPS[kind, result]
    TALLY.count(child)
    seen.append(word)


@dataclass(frozen=True, slots=True)
class _Fact:
    """What GitHub said of one (user, target): a yes/no or a repository level, or that the target
    enforces SSO this token is not authorized for (with GitHub's URL to authorize it)."""

    value: bool | str | None
    sso_url: str | None = None

    @property
    def yes(self) -> bool:
        return bool(self.value)


class Membership:
    """The facts of every route's `orgs`, `teams` and `repos`, asked, cached and judged."""

    def __init__(
        self,
        config: Config,
        github: GitHubClient,
        *,
        shared: RedisTier | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        settings: MembershipConfig = config.github.membership
        self._github = github
        self._shared = shared
        self._installations = (
            None
            if settings.as_ == "user" or settings.app_id is None or settings.private_key_file is None
            else Installations(
                github,
                app_id=settings.app_id,
                private_key_file=settings.private_key_file,
                wall_clock=wall_clock,
            )
        )
        self._clock = clock
        self._yes_for, self._no_for = settings.ttl, settings.negative_ttl
        self._stale_for = config.cache.stale_if_error
        self._max_entries = config.cache.max_entries
        self._facts: dict[tuple[int, str, str], tuple[_Fact, float]] = {}  # -> (fact, fresh until)
        self._flights: SingleFlight[tuple[int, str, str], _Fact] = SingleFlight()
        self._refused_once: set[str] = set()
        self._resting: dict[int | str, float] = {}  # a user id or an account -> when its rate limit resets
        self._wall_clock = wall_clock
        # every organisation and team any route names: what `groups` reports, in a stable order
        self.groups_known = tuple(
            dict.fromkeys(name for route in config.routes for name in (*route.orgs, *route.teams))
        )

    async def admit(self, route: CompiledRoute, identity: Identity, token: str, seen: list[str]) -> None:
        """Let the caller pass if any of the route's organisations, teams or repositories admits them;
        else Forbidden, or SSORequired when only an organisation's SSO stood in the way. Each lookup's
        kind and result go to `seen` (the access log's)."""
        sso: str | None = None
        for kind, target in route.facts:
            fact = self._known(identity, kind, target, seen) or await self._fact(
                identity, token, kind, target, seen
            )
            if kind == "repo":
                level = fact.value
                if isinstance(level, str) and _RANK[level] >= _RANK[route.repos[target]]:
                    return
            elif fact.yes:
                return
            sso = sso or fact.sso_url
        if sso is not None:
            raise SSORequired(sso)
        raise Forbidden("this user is not a member of the organisations or teams this route requires")

    async def groups(self, identity: Identity, token: str, seen: list[str]) -> tuple[str, ...]:
        """The configured organisations and teams the caller is an active member of."""
        found = []
        for name in self.groups_known:
            kind = "team" if "/" in name else "org"
            fact = self._known(identity, kind, name, seen) or await self._fact(
                identity, token, kind, name, seen
            )
            if fact.yes:
                found.append(name)
        return tuple(found)

    def _known(self, identity: Identity, kind: str, target: str, seen: list[str]) -> _Fact | None:
        """The fact while it is cached and fresh, else None: a cache hit without a coroutine."""
        cached = self._facts.get((identity.user_id, kind, target))
        if cached is not None and cached[1] > self._clock():
            _looked_up(kind, "cached", seen)
            return cached[0]
        return None

    async def _fact(self, identity: Identity, token: str, kind: str, target: str, seen: list[str]) -> _Fact:
        """Ask GitHub (once for all who ask at the same time) what `_known` does not know."""
        key = (identity.user_id, kind, target)
        now = self._clock()
        cached = self._facts.get(key)  # expired, if there: it may stand in when GitHub cannot answer
        try:
            budget = self._budget(identity, target)
            if (rest := self._resting.get(budget, 0.0) - now) > 0:
                raise _RateLimited(
                    f"GitHub's rate limit for this caller is spent for {math.ceil(rest)}s", rest
                )
            fact = await self._flights.run(key, lambda: self._ask(key, identity, token, kind, target))
        except GitHubError as exc:
            if isinstance(exc, _RateLimited):
                self._rest(self._budget(identity, target), exc.wait)
            # SECURITY: only an answer GitHub gave, and within stale_if_error of its expiry, stands in
            if cached is not None and cached[1] + self._stale_for > now:
                _looked_up(kind, "stale", seen)
                return cached[0]
            _looked_up(kind, "unavailable", seen)
            wait = exc.wait if isinstance(exc, _RateLimited) else self._github.retry_after()
            raise ServiceUnavailable(
                "GitHub is unavailable and who this caller is in GitHub is not known",
                retry_after=math.ceil(wait),
            ) from exc
        _looked_up(kind, "sso_required" if fact.sso_url else ("yes" if fact.yes else "no"), seen)
        return fact

    def _budget(self, identity: Identity, target: str) -> int | str:
        """Whose rate limit a question spends: the caller's (as: user), or the app's installation on the
        target's account (as: app)."""
        return identity.user_id if self._installations is None else target.partition("/")[0]

    def _rest(self, budget: int | str, wait: float) -> None:
        """Ask nothing more on this budget until GitHub's rate limit for it resets."""
        if len(self._resting) >= self._max_entries:
            del self._resting[next(iter(self._resting))]
        self._resting[budget] = self._clock() + wait

    async def _ask(
        self, key: tuple[int, str, str], identity: Identity, token: str, kind: str, target: str
    ) -> _Fact:
        """The fact from another replica (Redis), else from GitHub (then shared); kept here either way."""
        shared = await self._shared.get_fact(key) if self._shared is not None else None
        if shared is not None:
            fact, fresh_for = _Fact(shared.value, shared.sso_url), shared.fresh_for
        else:
            fact = await self._from_github(identity, token, kind, target)
            fresh_for = self._yes_for if fact.yes else self._no_for
            if self._shared is not None:
                await self._shared.put_fact(key, fact.value, fact.sso_url, fresh_for)
        if len(self._facts) >= self._max_entries:
            del self._facts[next(iter(self._facts))]  # the oldest first: memory stays bounded
        self._facts.pop(key, None)
        self._facts[key] = (fact, self._clock() + fresh_for)
        return fact

    async def _from_github(self, identity: Identity, token: str, kind: str, target: str) -> _Fact:
        """Ask GitHub: with the caller's token, or as the GitHub App's installation on the target."""
        if self._installations is None:
            fact = await self._asked(f"token {token}", identity.login, kind, target, as_app=False)
            assert fact is not None  # None is only for the app's installation tokens
            return fact
        account, _, repo = target.partition("/")
        for _ in range(2):  # a token GitHub refuses (revoked, expired early) is replaced once
            installation = await self._installations.token(account, repo if kind == "repo" else None)
            if installation is None:  # not installed there: nobody there can be admitted
                return _Fact(None if kind == "repo" else False)
            fact = await self._asked(f"token {installation}", identity.login, kind, target, as_app=True)
            if fact is not None:
                return fact
            self._installations.forget(account)
        raise GitHubUnavailable(f"GitHub refused the app's new installation token on {account}", status=401)

    async def _asked(
        self, credential: str, login: str, kind: str, target: str, *, as_app: bool
    ) -> _Fact | None:
        """GitHub's answer about one target (None: a 401 to the app's installation token)."""
        owner, _, name = (quote(part, safe="") for part in target.partition("/"))
        user = quote(login, safe="")
        op, template, needs = _ASKS[kind, as_app]
        path = template.format(owner=owner, name=name, user=user)
        reply = await self._github.fetch(op, path, credential=credential)
        if as_app:
            if reply.status == 401:
                return None
            if (remaining := reply.headers.get("X-RateLimit-Remaining", "")).isdigit():
                GITHUB_RATE_LIMIT_REMAINING.labels(target.partition("/")[0]).set(int(remaining))
        what = f"{_KINDS[kind]} {target}"
        if kind == "repo":
            return self._level(reply, what, needs, as_app=as_app)
        if as_app and kind == "org":
            return _Fact(True) if reply.status == 204 else self._refused(reply, what, needs)
        return self._membership(reply, what, needs)

    def _level(self, reply: Reply, what: str, needs: str, *, as_app: bool) -> _Fact:
        if reply.status != 200 or not isinstance(reply.body, dict):
            return self._refused(reply, what, needs)
        if as_app:  # GET …/collaborators/{login}/permission: a role, or for a custom one its base
            role, permission = reply.body.get("role_name"), reply.body.get("permission")
            level = (
                role
                if role in _RANK
                else {"admin": "admin", "write": "write", "read": "read"}.get(str(permission))
            )
            return _Fact(level)
        granted = reply.body.get("permissions")
        if isinstance(granted, dict):
            return _Fact(next((lvl for name, lvl in _PERMISSIONS if granted.get(name) is True), None))
        return _Fact(None)  # no permissions in the answer: the token may not see its own

    def _membership(self, reply: Reply, what: str, needs: str) -> _Fact:
        if reply.status == 200 and isinstance(reply.body, dict):
            return _Fact(reply.body.get("state") == "active")
        return self._refused(reply, what, needs)

    def _refused(self, reply: Reply, what: str, needs: str) -> _Fact:
        """GitHub's answer when it is not a plain yes: no, SSO, a missing permission, or an outage."""
        if reply.status == 404:
            return _Fact(False)
        if reply.status in (403, 429) and (
            reply.headers.get("X-RateLimit-Remaining") == "0" or "Retry-After" in reply.headers
        ):
            wait = _until_reset(reply.headers, self._wall_clock())
            raise _RateLimited(f"GitHub's rate limit for this caller is spent ({what})", wait)
        sso = reply.headers.get("X-GitHub-SSO", "")
        if reply.status == 403 and sso.startswith("required") and "url=" in sso:
            return _Fact(False, sso.partition("url=")[2].strip())
        if reply.status in (401, 403):
            if what not in self._refused_once:  # one clear line per target, not one per request
                self._refused_once.add(what)
                log.warning(
                    "GitHub refused to say who belongs to %s (%d): tokens need %s", what, reply.status, needs
                )
            return _Fact(False)
        raise GitHubUnavailable(f"GitHub answered {reply.status} about {what}", status=reply.status)
