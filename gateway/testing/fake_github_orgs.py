"""The fake GitHub's organisations, teams, repositories, GitHub App, installations, SSO and rate limit:
the state the membership endpoints (`fake_github_rest`) answer from, and the Python API tests use to
shape it, change it while a test runs, and flip its switches.

People are named by login (case-insensitive, as on GitHub) and must be known first: `add_token`
registers its user, `add_user` registers one without a token or renames one. What they belong to is
kept by user id, as GitHub keeps it: a renamed user keeps their memberships and roles.
"""

from __future__ import annotations

import itertools
import math
import secrets
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from .fake_github_model import sha256

__all__ = [
    "BUDGETS",
    "REPO_ROLES",
    "Directory",
    "GitHubApp",
    "Installation",
    "Member",
    "Org",
    "RateLimited",
    "Repo",
    "Team",
]

REPO_ROLES = ("read", "triage", "write", "maintain", "admin")  # GitHub's repository roles, lowest first
_ROLE_NAMES = {"pull": "read", "push": "write"}  # the older names of two of them
_INSTALLATION_PERMISSIONS = MappingProxyType({"members": "read", "metadata": "read"})
RATE_BUDGET = 5000  # GitHub's hourly primary limit for a user, an installation or an OAuth app
BUDGETS = ("oauth-app", "user", "installation", "app")  # whose budget a call spends, by kind


@dataclass(slots=True)
class Member:
    """A person's membership of an organisation (role member or admin) or a team (member or
    maintainer); `pending` is an invitation not yet accepted."""

    state: str = "active"
    role: str = "member"


@dataclass(slots=True)
class Org:
    login: str
    id: int
    sso: bool = False  # enforces SAML single sign-on: user tokens must be authorized for it
    members: dict[int, Member] = field(default_factory=dict)  # by user id


@dataclass(slots=True)
class Team:
    org: str  # the organisation's login
    slug: str
    name: str
    id: int
    parent: Team | None = None
    members: dict[int, Member] = field(default_factory=dict)  # by user id


@dataclass(slots=True)
class Repo:
    owner: str
    name: str
    id: int
    private: bool = True
    roles: dict[int, str] = field(default_factory=dict)  # user id → one of REPO_ROLES

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass(frozen=True, slots=True)
class GitHubApp:
    """The GitHub App whose RS256 JWTs the fake accepts (`iss`: its id or client id)."""

    id: int
    public_key_pem: str
    client_id: str  # its user tokens (ghu_) are issued by this client id
    slug: str


@dataclass(slots=True)
class Installation:
    """The GitHub App installed on an account: every repository of it (`repositories` None) or these."""

    id: int
    account: str
    repositories: tuple[str, ...] | None
    permissions: Mapping[str, str]
    created_at: float

    def covers(self, repo: Repo) -> bool:
        return self.account.casefold() == repo.owner.casefold() and (
            self.repositories is None or repo.name.casefold() in {r.casefold() for r in self.repositories}
        )


@dataclass(frozen=True, slots=True)
class Budget:
    """A caller's primary rate limit, as GitHub reports it: per hour, spent, and when it resets."""

    limit: int
    used: int
    reset: int  # epoch seconds

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    def headers(self) -> dict[str, str]:
        """The X-RateLimit headers GitHub sends with every answer."""
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
            "X-RateLimit-Used": str(self.used),
            "X-RateLimit-Resource": "core",
        }


@dataclass(slots=True)
class InstallationToken:
    installation_id: int
    expires_at: float


@dataclass(frozen=True, slots=True)
class RateLimited:
    """The exhausted-budget switch: calls are refused with `status` until `until` (the fake's clock);
    with `retry_after`, as a secondary limit."""

    until: float
    status: int
    retry_after: int | None
    budgets: frozenset[str] | None = None  # the kinds of budget it applies to; None: every one

    def applies(self, who: str) -> bool:
        return self.budgets is None or who.partition(":")[0] in self.budgets


class Directory:
    """Who belongs where on the fake GitHub, and the switches of its REST API."""

    def __init__(self, *, clock: Callable[[], float] = time.time, app_client_id: str) -> None:
        self._clock = clock
        self._app_client_id = app_client_id  # whose ghu_ tokens are the GitHub App's, unless set_app says
        self.orgs: dict[str, Org] = {}  # by casefolded login
        self.teams: dict[tuple[str, str], Team] = {}  # by casefolded (org, slug)
        self.repos: dict[str, Repo] = {}  # by casefolded owner/name
        self.users: dict[str, int] = {}  # casefolded login → user id
        self.logins: dict[int, str] = {}  # user id → login
        self.github_app: GitHubApp | None = None
        self.installations: dict[int, Installation] = {}
        self.installation_token_ttl = 3600.0  # GitHub: an hour
        self.rate_budget = RATE_BUDGET
        self._installation_tokens: dict[str, InstallationToken] = {}  # by SHA-256 of the token
        self._sso_authorized: set[tuple[str, str]] = set()  # (SHA-256 of the token, casefolded org)
        self._sso_requests: dict[tuple[str, str], str] = {}
        self._used: dict[str, int] = {}  # rate budget spent this window, by who is calling
        self._window_ends = clock() + 3600
        self._limit: RateLimited | None = None
        self._org_ids = itertools.count(9000)
        self._other_ids = itertools.count(70_000)  # teams, repositories, installations

    # -----------------------------------------------------------------------------------------------
    # People, organisations, teams, repositories

    def add_user(self, login: str, user_id: int) -> None:
        """Make a person known by login and id (add_token does it for the token's user); a known id
        with a new login is a rename, a known login with a new id someone else taking it over."""
        if user_id <= 0:
            raise ValueError("expected a positive user id")
        old = self.logins.get(user_id)
        if old is not None:
            self.users.pop(old.casefold(), None)
        self.users[login.casefold()] = user_id
        self.logins[user_id] = login

    def user(self, login: str) -> tuple[str, int] | None:
        """A known user's login (as registered) and id."""
        user_id = self.users.get(login.casefold())
        return None if user_id is None else (self.logins[user_id], user_id)

    def add_org(self, login: str, org_id: int | None = None, *, sso: bool = False) -> Org:
        """An organisation; `sso=True` enforces SAML single sign-on (see authorize_sso)."""
        if login.casefold() in self.orgs:
            raise ValueError(f"an organisation {login!r} is already registered")
        org = Org(login, next(self._org_ids) if org_id is None else org_id, sso)
        self.orgs[login.casefold()] = org
        return org

    def add_member(self, org: str, login: str, *, state: str = "active", role: str = "member") -> None:
        """Make a known user a member (active or pending; role member or admin, an owner) of an org."""
        _check(state, ("active", "pending"), "state")
        _check(role, ("member", "admin"), "organisation role")
        self._org(org).members[self._person(login)] = Member(state, role)

    def remove_member(self, org: str, login: str) -> None:
        """Remove someone from an organisation, and so from its teams, as GitHub does."""
        key = self._person(login)
        self._org(org).members.pop(key, None)
        for team in self.teams.values():
            if team.org.casefold() == org.casefold():
                team.members.pop(key, None)

    def add_team(self, org: str, slug: str, name: str | None = None, *, parent: str | None = None) -> Team:
        """A team of an organisation: its slug, display name (default: the slug) and parent team's slug."""
        owner = self._org(org)
        if (owner.login.casefold(), slug.casefold()) in self.teams:
            raise ValueError(f"a team {org}/{slug} is already registered")
        above = None if parent is None else self._team(org, parent)
        team = Team(owner.login, slug, name or slug, next(self._other_ids), above)
        self.teams[owner.login.casefold(), slug.casefold()] = team
        return team

    def add_team_member(
        self, org: str, slug: str, login: str, *, state: str = "active", role: str = "member"
    ) -> None:
        """Make a known user a member (active or pending; role member or maintainer) of a team."""
        _check(state, ("active", "pending"), "state")
        _check(role, ("member", "maintainer"), "team role")
        self._team(org, slug).members[self._person(login)] = Member(state, role)

    def remove_team_member(self, org: str, slug: str, login: str) -> None:
        self._team(org, slug).members.pop(self._person(login), None)

    def add_repo(self, full_name: str, *, private: bool = True) -> Repo:
        """A repository `owner/name` (the owner an organisation or a user)."""
        owner, slash, name = full_name.partition("/")
        if not owner or not slash or not name or "/" in name:
            raise ValueError(f"expected owner/name, got {full_name!r}")
        if full_name.casefold() in self.repos:
            raise ValueError(f"a repository {full_name!r} is already registered")
        repo = Repo(owner, name, next(self._other_ids), private)
        self.repos[full_name.casefold()] = repo
        return repo

    def set_role(self, full_name: str, login: str, role: str | None) -> None:
        """Give a known user a role on a repository (read/pull, triage, write/push, maintain, admin),
        or take it away (None)."""
        repo = self.repos.get(full_name.casefold())
        if repo is None:
            raise ValueError(f"unknown repository {full_name!r}")
        if role is None:
            repo.roles.pop(self._person(login), None)
            return
        role = _ROLE_NAMES.get(role, role)
        _check(role, REPO_ROLES, "repository role")
        repo.roles[self._person(login)] = role

    def authorize_sso(self, token: str, org: str) -> None:
        """The user authorized this token for the organisation's SAML single sign-on."""
        self._sso_authorized.add((sha256(token), self._org(org).login.casefold()))

    # -----------------------------------------------------------------------------------------------
    # The GitHub App

    def set_app(
        self, app_id: int, public_key_pem: str | bytes, *, client_id: str | None = None, slug: str = "gateway"
    ) -> GitHubApp:
        """The GitHub App whose JWTs the fake verifies with this RSA public key (PEM); its user tokens
        (ghu_) are those of `client_id` (default: the fake's first app)."""
        pem = public_key_pem.decode() if isinstance(public_key_pem, bytes) else public_key_pem
        self.github_app = GitHubApp(app_id, pem, client_id or self._app_client_id, slug)
        return self.github_app

    def install(
        self,
        account: str,
        *,
        repositories: Sequence[str] | None = None,
        permissions: Mapping[str, str] | None = None,
    ) -> Installation:
        """Install the GitHub App on an organisation (or user): all its repositories or these names,
        with these permissions (default: Members and Metadata, read). Installing again on the same
        account changes that installation (its id stays), as editing it on GitHub does."""
        if isinstance(repositories, str):
            raise ValueError("expected repository names, not one string")
        chosen = MappingProxyType(dict(permissions)) if permissions is not None else _INSTALLATION_PERMISSIONS
        names = None if repositories is None else tuple(repositories)
        installation = self.installation_for(account)
        if installation is not None:
            installation.repositories, installation.permissions = names, chosen
            return installation
        login = self.orgs[account.casefold()].login if account.casefold() in self.orgs else account
        installation = Installation(next(self._other_ids), login, names, chosen, self._clock())
        self.installations[installation.id] = installation
        return installation

    def installation_for(self, account: str) -> Installation | None:
        return next(
            (i for i in self.installations.values() if i.account.casefold() == account.casefold()), None
        )

    def issue_installation_token(self, installation: Installation) -> tuple[str, float]:
        """A new ghs_ token for an installation and when it expires."""
        token = "ghs_" + secrets.token_hex(18)
        expires_at = self._clock() + self.installation_token_ttl
        self._installation_tokens[sha256(token)] = InstallationToken(installation.id, expires_at)
        return token, expires_at

    def installation_of(self, token: str) -> Installation | None:
        """The installation a live installation token acts for; None when unknown or expired."""
        entry = self._installation_tokens.get(sha256(token))
        if entry is None or entry.expires_at <= self._clock():
            return None
        return self.installations.get(entry.installation_id)

    def expire_installation_tokens(self) -> None:
        """Every installation token issued so far expires now: using one answers 401."""
        for entry in self._installation_tokens.values():
            entry.expires_at = min(entry.expires_at, self._clock())

    # -----------------------------------------------------------------------------------------------
    # The rate limit

    def exhaust_rate_limit(
        self,
        *,
        reset_in: float = 60.0,
        status: int = 403,
        retry_after: int | None = None,
        budgets: Collection[str] | None = None,
    ) -> None:
        """Until `reset_in` seconds have passed on the fake's clock, every authenticated API call (the
        OAuth Apps API's and the REST API's) is refused as GitHub refuses it: `status` (403 or 429)
        with X-RateLimit-Remaining: 0 and the reset time, or, with `retry_after`, a secondary limit
        with Retry-After. `budgets` limits it to some kinds of caller (BUDGETS: `oauth-app`, an app on
        the OAuth Apps API; `user`, `installation`, `app` on the REST API). A budget also runs out by
        itself after `rate_budget` calls in its hour."""
        _check(status, (403, 429), "status")
        for kind in budgets or ():
            _check(kind, BUDGETS, "budget")
        kinds = None if budgets is None else frozenset(budgets)
        self._limit = RateLimited(self._clock() + reset_in, status, retry_after, kinds)

    @property
    def rate_limited(self) -> int | None:
        """The status calls are refused with while `exhaust_rate_limit` is in force, else None."""
        return None if self._limit is None or self._clock() >= self._limit.until else self._limit.status

    def restore_rate_limit(self) -> None:
        """Undo `exhaust_rate_limit` and give every caller a full budget again."""
        self._limit, self._used, self._window_ends = None, {}, self._clock() + 3600

    def spend(
        self, who: str, *, free: bool = False, per_hour: int | None = None
    ) -> tuple[Budget, RateLimited | None]:
        """Count one call by `who` against its budget (`rate_budget` an hour unless `per_hour` says;
        not when `free`): what is left of it, and the limit in force when the call is refused."""
        now = self._clock()
        if (self._limit is not None and now >= self._limit.until) or now >= self._window_ends:
            self.restore_rate_limit()  # the window is over, or the exhausted budget was restored
        limit = self.rate_budget if per_hour is None else per_hour
        forced = self._limit if self._limit is not None and self._limit.applies(who) else None
        if forced is not None and forced.retry_after is None:  # the primary limit: nothing is left
            return Budget(limit, limit, math.ceil(forced.until)), forced
        used = self._used.get(who, 0)
        if not free and used >= limit:  # spent by itself: refused until the window ends
            spent = RateLimited(self._window_ends, 403, None)
            return Budget(limit, used, math.ceil(self._window_ends)), spent
        if not free:
            used = self._used[who] = used + 1
        return Budget(limit, used, math.ceil(self._window_ends)), forced

    # -----------------------------------------------------------------------------------------------
    # What GitHub decides

    def team_state(self, team: Team, user_id: int) -> Member | None:
        """A user's membership of a team: an active member of a child team (at any depth) is an active
        member of the parent, as GitHub's team-membership endpoint counts them."""
        own = team.members.get(user_id)
        if own is not None and own.state == "active":
            return own
        for child in self.teams.values():
            if child.parent is team:
                inherited = self.team_state(child, user_id)
                if inherited is not None and inherited.state == "active":
                    return Member("active", "member")
        return own

    def repo_role(self, repo: Repo, user_id: int | None) -> str | None:
        """The highest of: the user's role, admin for an owner of the owning organisation or the owning
        user, read for anyone on a public repository."""
        roles = [] if repo.private else ["read"]
        if user_id is not None:
            if user_id in repo.roles:
                roles.append(repo.roles[user_id])
            org = self.orgs.get(repo.owner.casefold())
            member = None if org is None else org.members.get(user_id)
            owner = member is not None and member.state == "active" and member.role == "admin"
            if owner or self.users.get(repo.owner.casefold()) == user_id:
                roles.append("admin")
        return max(roles, key=REPO_ROLES.index) if roles else None

    def sso_blocks(self, token: str, org: Org, user_id: int) -> bool:
        """Whether SAML SSO holds this member's token back from the organisation."""
        return (
            org.sso
            and user_id in org.members
            and (sha256(token), org.login.casefold()) not in self._sso_authorized
        )

    def sso_request(self, token: str, org: Org) -> str:
        """The authorization request GitHub names in X-GitHub-SSO for this token and organisation."""
        key = (sha256(token), org.login.casefold())
        return self._sso_requests.setdefault(key, secrets.token_hex(20))

    def now(self) -> float:
        """The fake's clock."""
        return self._clock()

    def _person(self, login: str) -> int:
        user_id = self.users.get(login.casefold())
        if user_id is None:
            raise ValueError(f"unknown user {login!r}: add_token or add_user first")
        return user_id

    def _org(self, login: str) -> Org:
        org = self.orgs.get(login.casefold())
        if org is None:
            raise ValueError(f"unknown organisation {login!r}")
        return org

    def _team(self, org: str, slug: str) -> Team:
        team = self.teams.get((org.casefold(), slug.casefold()))
        if team is None:
            raise ValueError(f"unknown team {org}/{slug}")
        return team


def _check(value: object, allowed: Sequence[object], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"{what}: expected one of {', '.join(map(str, allowed))}, got {value!r}")
