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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

from .config import Config, MembershipConfig
from .config.models import REPOSITORY_LEVELS
from .errors import Forbidden, GitHubError, GitHubUnavailable, ServiceUnavailable, SSORequired
from .github import GitHubClient
from .github.answers import Reply
from .identity import Identity
from .identity.redis import RedisTier
from .identity.singleflight import SingleFlight
from .metrics import MEMBERSHIP_LOOKUPS, TALLY
from .policy import CompiledRoute

log = logging.getLogger("gateway.membership")

_RANK = {level: rank for rank, level in enumerate(REPOSITORY_LEVELS)}
# GitHub's `permissions` booleans of a repository, highest first, and the level each one means
_PERMISSIONS = (
    *(("admin", "admin"), ("maintain", "maintain"), ("push", "write")),
    *(("triage", "triage"), ("pull", "read")),
)


_LOOKUPS = {
    (kind, result): MEMBERSHIP_LOOKUPS.labels(kind, result)
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
        self._clock = clock
        self._yes_for, self._no_for = settings.ttl, settings.negative_ttl
        self._stale_for = config.cache.stale_if_error
        self._max_entries = config.cache.max_entries
        self._facts: dict[tuple[int, str, str], tuple[_Fact, float]] = {}  # -> (fact, fresh until)
        self._flights: SingleFlight[tuple[int, str, str], _Fact] = SingleFlight()
        self._refused_once: set[str] = set()
        self._resting: dict[int, float] = {}  # user id -> when GitHub's rate limit for them resets
        self._wall_clock = wall_clock
        # every organisation and team any route names: what `groups` reports, in a stable order
        self.groups_known = tuple(
            dict.fromkeys(name for route in config.routes for name in (*route.orgs, *route.teams))
        )

    async def admit(self, route: CompiledRoute, identity: Identity, token: str) -> None:
        """Let the caller pass if any of the route's organisations, teams or repositories admits them;
        else Forbidden, or SSORequired when only an organisation's SSO stood in the way."""
        sso: str | None = None
        for kind, target in route.facts:
            fact = await self._fact(identity, token, kind, target)
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

    async def groups(self, identity: Identity, token: str) -> tuple[str, ...]:
        """The configured organisations and teams the caller is an active member of."""
        found = []
        for name in self.groups_known:
            kind = "team" if "/" in name else "org"
            if (await self._fact(identity, token, kind, name)).yes:
                found.append(name)
        return tuple(found)

    async def _fact(self, identity: Identity, token: str, kind: str, target: str) -> _Fact:
        key = (identity.user_id, kind, target)
        now = self._clock()
        cached = self._facts.get(key)
        if cached is not None and cached[1] > now:
            TALLY.count(_LOOKUPS[kind, "cached"])
            return cached[0]
        try:
            if (rest := self._resting.get(identity.user_id, 0.0) - now) > 0:
                raise _RateLimited(
                    f"GitHub's rate limit for this caller is spent for {math.ceil(rest)}s", rest
                )
            fact = await self._flights.run(key, lambda: self._ask(key, identity, token, kind, target))
        except GitHubError as exc:
            if isinstance(exc, _RateLimited):
                self._rest(identity.user_id, exc.wait)
            # SECURITY: only an answer GitHub gave, and within stale_if_error of its expiry, stands in
            if cached is not None and cached[1] + self._stale_for > now:
                TALLY.count(_LOOKUPS[kind, "stale"])
                return cached[0]
            TALLY.count(_LOOKUPS[kind, "unavailable"])
            wait = exc.wait if isinstance(exc, _RateLimited) else self._github.retry_after()
            raise ServiceUnavailable(
                "GitHub is unavailable and who this caller is in GitHub is not known",
                retry_after=math.ceil(wait),
            ) from exc
        TALLY.count(_LOOKUPS[kind, "sso_required" if fact.sso_url else ("yes" if fact.yes else "no")])
        return fact

    def _rest(self, user_id: int, wait: float) -> None:
        """Ask nothing more for this user until GitHub's rate limit resets (their budget, in user mode)."""
        if len(self._resting) >= self._max_entries:
            del self._resting[next(iter(self._resting))]
        self._resting[user_id] = self._clock() + wait

    async def _ask(
        self, key: tuple[int, str, str], identity: Identity, token: str, kind: str, target: str
    ) -> _Fact:
        """The fact from another replica (Redis), else from GitHub (then shared); kept here either way."""
        shared = await self._shared.get_fact(key) if self._shared is not None else None
        if shared is not None:
            fact, fresh_for = _Fact(shared.value, shared.sso_url), shared.fresh_for
        else:
            asking: dict[str, Callable[[], Awaitable[_Fact]]] = {
                "org": lambda: self._organisation(token, target),
                "team": lambda: self._team(token, target, identity.login),
                "repo": lambda: self._repository(token, target),
            }
            fact = await asking[kind]()
            fresh_for = self._yes_for if fact.yes else self._no_for
            if self._shared is not None:
                await self._shared.put_fact(key, fact.value, fact.sso_url, fresh_for)
        if len(self._facts) >= self._max_entries:
            del self._facts[next(iter(self._facts))]  # the oldest first: memory stays bounded
        self._facts.pop(key, None)
        self._facts[key] = (fact, self._clock() + fresh_for)
        return fact

    async def _organisation(self, token: str, org: str) -> _Fact:
        path = f"/user/memberships/orgs/{quote(org, safe='')}"
        reply = await self._github.fetch("orgs/get-membership-for-authenticated-user", path, token=token)
        return self._membership(reply, f"organisation {org}", "read:org (or the app's Members permission)")

    async def _team(self, token: str, team: str, login: str) -> _Fact:
        org, _, slug = team.partition("/")
        path = f"/orgs/{quote(org, safe='')}/teams/{quote(slug, safe='')}/memberships/{quote(login, safe='')}"
        reply = await self._github.fetch("teams/get-membership-for-user-in-org", path, token=token)
        return self._membership(reply, f"team {team}", "read:org (or the app's Members permission)")

    async def _repository(self, token: str, repo: str) -> _Fact:
        owner, _, name = repo.partition("/")
        path = f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}"
        reply = await self._github.fetch("repos/get", path, token=token)
        if reply.status == 200 and isinstance(reply.body, dict):
            granted = reply.body.get("permissions")
            if isinstance(granted, dict):
                level = next((lvl for name, lvl in _PERMISSIONS if granted.get(name) is True), None)
                return _Fact(level)
            return _Fact(None)  # no permissions in the answer: the token may not see its own
        return self._refused(reply, f"repository {repo}", "repo for a private repository (or Metadata)")

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
