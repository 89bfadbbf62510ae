"""The fake GitHub's membership REST API (DESIGN §10): who belongs to which organisation and team, and
who holds which role on a repository, asked with a user's token, an installation token or the GitHub
App's JWT.

Who may ask what, as GitHub decides it:
- a user token (`Authorization: Bearer|token`): `gho_` (OAuth App) tokens need `read:org` (or
  `write:org`, `admin:org`) for organisation and team facts (403 naming the scope otherwise) and `repo`
  for private repositories (404 otherwise); `ghu_` (GitHub App user) tokens reach only organisations
  the GitHub App is installed on with the Members permission (403 "Resource not accessible by
  integration") and repositories an installation covers (404). Unknown, revoked or expired: 401.
- an installation token (`ghs_`): its own account (Members permission) and repositories; expired 401.
- the app's JWT (checked in `fake_github_callers`): GET /app, the installation endpoints and
  installation tokens.
- an organisation enforcing SAML SSO answers a member's token not authorized for it (`authorize_sso`)
  with 403 and `X-GitHub-SSO: required; url=…`; list endpoints leave it out and say
  `X-GitHub-SSO: partial-results; organizations=<ids>`.
- every authenticated answer carries `X-RateLimit-*` for its user, installation or app; past an
  exhausted budget (`exhaust_rate_limit`) calls get 403 or 429 with `X-RateLimit-Remaining: 0`;
  GET /rate_limit reports the budget without spending it, and answers even when it is spent.
- list endpoints page with `per_page` (default 30, at most 100) and `page`, and a `Link` header as
  GitHub writes it (prev, next, last, first: those that exist).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from . import fake_github_bodies as bodies
from .fake_github_callers import Caller, rate_key
from .fake_github_model import error, simple_user
from .fake_github_orgs import REPO_ROLES, Installation, Member, Org, Repo

if TYPE_CHECKING:
    from .fake_github import FakeGitHub

__all__ = ["ROUTES", "RestRoute"]

_READ_ORG = ("read:org", "write:org", "admin:org")  # GitHub's scope hierarchy: each implies read:org
_NOT_ACCESSIBLE = "Resource not accessible by integration"
_SSO_MESSAGE = (
    "Resource protected by organization SAML enforcement. "
    "You must grant your OAuth token access to this organization."
)


Answer = Callable[["FakeGitHub", web.Request, Caller], web.Response]


@dataclass(frozen=True, slots=True)
class RestRoute:
    op: str  # GitHub's operationId
    method: str
    path: str
    kinds: tuple[str, ...]  # who may call it
    answer: Answer
    spends: bool = True  # counts against the caller's rate budget (GET /rate_limit does not)


# ---------------------------------------------------------------------------------------------------
# Refusals the endpoints share


def _scope_refusal(caller: Caller, accepted: tuple[str, ...], op: str) -> web.Response | None:
    """An OAuth App token without any of the accepted scopes: 403 naming what GitHub wants."""
    if caller.entry is None or not caller.oauth or set(caller.entry.scopes) & set(accepted):
        return None
    have = ", ".join(caller.entry.scopes) or "none"
    answer = error(403, f"This request needs the '{accepted[0]}' scope; the token's scopes are: {have}.", op)
    answer.headers["X-Accepted-OAuth-Scopes"] = ", ".join(accepted)
    return answer


def _app_reaches(fake: FakeGitHub, caller: Caller, account: str) -> bool:
    """A GitHub App's token (installation, ghu_) reaches an organisation only where the app is installed
    with Members; an OAuth App token is not the app's to limit."""
    if caller.installation is not None:
        installation: Installation | None = caller.installation
        if caller.installation.account.casefold() != account.casefold():
            installation = None
    elif caller.kind == "user" and not caller.oauth:
        installation = fake.installation_for(account) if _of_the_app(fake, caller) else None
    else:
        return True
    return installation is not None and "members" in installation.permissions


def _of_the_app(fake: FakeGitHub, caller: Caller) -> bool:
    app, entry = fake.github_app, caller.entry
    return app is not None and entry is not None and entry.client_id == app.client_id


def _sso_refusal(fake: FakeGitHub, request: web.Request, caller: Caller, org: Org) -> web.Response | None:
    if caller.user_id is None or not fake.sso_blocks(caller.token, org, caller.user_id):
        return None
    answer = error(403, _SSO_MESSAGE, "sso")
    url = f"{_site(request)}/orgs/{org.login}/sso?authorization_request={fake.sso_request(caller.token, org)}"
    answer.headers["X-GitHub-SSO"] = f"required; url={url}"
    return answer


def _org_refusal(
    fake: FakeGitHub, request: web.Request, caller: Caller, org: Org, op: str
) -> web.Response | None:
    """What organisation and team facts share: the scope, the app's installation, SSO."""
    return (
        _scope_refusal(caller, _READ_ORG, op)
        or (None if _app_reaches(fake, caller, org.login) else error(403, _NOT_ACCESSIBLE, op))
        or _sso_refusal(fake, request, caller, org)
    )


def _visible_orgs(fake: FakeGitHub, caller: Caller) -> tuple[list[Org], list[Org]]:
    """The organisations a user's token may list (active membership), and those SSO holds back."""
    shown: list[Org] = []
    held: list[Org] = []
    user_id = caller.user_id
    for org in fake.orgs.values():
        if user_id is None or not _active(org.members, user_id) or not _app_reaches(fake, caller, org.login):
            continue
        (held if fake.sso_blocks(caller.token, org, user_id) else shown).append(org)
    return shown, held


def _site(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _api(request: web.Request) -> str:
    return _site(request) + ("/api/v3" if request.path.startswith("/api/v3/") else "")


def _page(request: web.Request, items: list[dict[str, object]], held: Iterable[Org] = ()) -> web.Response:
    """One page of a list as GitHub pages it, with its Link header; `held`: orgs SSO left out."""
    per_page = min(max(_query_int(request, "per_page", 30), 1), 100)
    page = max(_query_int(request, "page", 1), 1)
    last = max(1, math.ceil(len(items) / per_page))
    answer = web.json_response(items[(page - 1) * per_page : page * per_page])

    def link(number: int, rel: str) -> str:
        url = request.url.with_query({**request.query, "page": str(number)})  # the rest as asked
        return f'<{url}>; rel="{rel}"'

    links = [link(page - 1, "prev")] if page > 1 else []
    if page < last:
        links += [link(page + 1, "next"), link(last, "last")]
    if page > 1:
        links.append(link(1, "first"))
    if links:
        answer.headers["Link"] = ", ".join(links)
    held_ids = [str(org.id) for org in held]
    if held_ids:
        answer.headers["X-GitHub-SSO"] = "partial-results; organizations=" + ",".join(held_ids)
    return answer


def _query_int(request: web.Request, name: str, default: int) -> int:
    try:
        return int(request.query.get(name, default))
    except ValueError:
        return default


# ---------------------------------------------------------------------------------------------------
# The operations


def _org_membership(fake: FakeGitHub, request: web.Request, caller: Caller) -> web.Response:
    op = "orgs/get-membership-for-authenticated-user"
    org = fake.orgs.get(request.match_info["org"].casefold())
    if org is None or caller.user_id is None:
        return error(404, "Not Found", op)
    refused = _org_refusal(fake, request, caller, org, op)
    member = org.members.get(caller.user_id)
    if refused is not None or member is None:
        return refused or error(404, "Not Found", op)
    login = fake.logins[caller.user_id]
    return web.json_response(
        bodies.org_membership(_site(request), _api(request), org, member, login, caller.user_id)
    )


def _user_orgs(fake: FakeGitHub, request: web.Request, caller: Caller) -> web.Response:
    refused = _scope_refusal(caller, (*_READ_ORG, "user"), "orgs/list-for-authenticated-user")
    if refused is not None:
        return refused
    shown, held = _visible_orgs(fake, caller)
    site, api = _site(request), _api(request)
    return _page(request, [bodies.organization(site, api, org) for org in shown], held)


def _user_teams(fake: FakeGitHub, request: web.Request, caller: Caller) -> web.Response:
    """The teams the user is an active member of themselves (parents are named in `parent`)."""
    refused = _scope_refusal(caller, (*_READ_ORG, "user", "repo"), "teams/list-for-authenticated-user")
    if refused is not None:
        return refused
    shown, held = _visible_orgs(fake, caller)
    site, api, me = _site(request), _api(request), caller.user_id
    items = [
        bodies.team(site, api, org, team, sum(m.state == "active" for m in team.members.values()))
        for org in shown
        for team in fake.teams.values()
        if team.org == org.login and _active(team.members, me)
    ]
    return _page(request, items, held)


def _team_membership(fake: FakeGitHub, request: web.Request, caller: Caller) -> web.Response:
    op = "teams/get-membership-for-user-in-org"
    info = request.match_info
    org = fake.orgs.get(info["org"].casefold())
    team = fake.teams.get((info["org"].casefold(), info["team_slug"].casefold()))
    if org is None or team is None:
        return error(404, "Not Found", op)
    refused = _org_refusal(fake, request, caller, org, op)
    if refused is not None:
        return refused
    if caller.kind == "user" and not _active(org.members, caller.user_id):
        return error(404, "Not Found", op)  # the team is not visible to outsiders
    known = fake.user(info["username"])
    member = None if known is None else fake.team_state(team, known[1])
    if known is None or member is None:
        return error(404, "Not Found", op)
    owner = org.members.get(known[1])
    if owner is not None and owner.state == "active" and owner.role == "admin":
        member = Member(member.state, "maintainer")  # GitHub reports owners as maintainers
    return web.json_response(bodies.team_membership(_api(request), team, member, known[0]))


def _active(members: Mapping[int, Member], user_id: int | None) -> bool:
    member = None if user_id is None else members.get(user_id)
    return member is not None and member.state == "active"


def _org_member(fake: FakeGitHub, request: web.Request, caller: Caller) -> web.Response:
    """204 a member, 404 not (a pending invitation is not membership); a user who is not a member
    themselves is redirected to the public membership check, as GitHub does."""
    op = "orgs/check-membership-for-user"
    org = fake.orgs.get(request.match_info["org"].casefold())
    if org is None:
        return error(404, "Not Found", op)
    refused = _org_refusal(fake, request, caller, org, op)
    if refused is not None:
        return refused
    username = request.match_info["username"]
    if caller.kind == "user" and not _active(org.members, caller.user_id):
        where = f"{_api(request)}/orgs/{org.login}/public_members/{username}"
        return web.Response(status=302, headers={"Location": where})
    if not _active(org.members, fake.users.get(username.casefold())):
        return error(404, "User does not exist or is not a member of the organization", op)
    return web.Response(status=204)


def _visible_repo(fake: FakeGitHub, request: web.Request, caller: Caller, op: str) -> Repo | web.Response:
    """The repository in the path if this caller may see it; GitHub answers 404 otherwise."""
    info = request.match_info
    repo = fake.repos.get(f"{info['owner']}/{info['repo']}".casefold())
    if repo is None:
        return error(404, "Not Found", op)
    if caller.installation is not None:
        return repo if caller.installation.covers(repo) else error(404, "Not Found", op)
    if not repo.private:
        return repo
    if caller.entry is None or (caller.oauth and "repo" not in caller.entry.scopes):
        return error(404, "Not Found", op)
    if not caller.oauth and not (
        _of_the_app(fake, caller)
        and any(i.covers(repo) and "metadata" in i.permissions for i in fake.installations.values())
    ):
        return error(404, "Not Found", op)
    if fake.repo_role(repo, caller.user_id) is None:
        return error(404, "Not Found", op)
    org = fake.orgs.get(repo.owner.casefold())
    refused = None if org is None else _sso_refusal(fake, request, caller, org)
    return repo if refused is None else refused


def _account(fake: FakeGitHub, request: web.Request, login: str) -> dict[str, object]:
    """The simple-user of an organisation or a user owning a repository or an installation."""
    org = fake.orgs.get(login.casefold())
    site, api = _site(request), _api(request)
    if org is not None:
        return simple_user(site, api, org.login, org.id, "Organization")
    known, user_id = fake.user(login) or (login, 1)  # an owner nobody registered: id 1
    return simple_user(site, api, known, user_id)


def _repo(fake: FakeGitHub, request: web.Request, caller: Caller) -> web.Response:
    repo = _visible_repo(fake, request, caller, "repos/get")
    if isinstance(repo, web.Response):
        return repo
    role = fake.repo_role(repo, caller.user_id)
    owner = _account(fake, request, repo.owner)
    body = bodies.repository(_site(request), _api(request), repo, owner, role, for_user=caller.kind == "user")
    return web.json_response(body)


def _collaborator(fake: FakeGitHub, request: web.Request, caller: Caller) -> web.Response:
    op = "repos/get-collaborator-permission-level"
    repo = _visible_repo(fake, request, caller, op)
    if isinstance(repo, web.Response):
        return repo
    own = fake.repo_role(repo, caller.user_id) if caller.kind == "user" else None
    if caller.kind == "user" and REPO_ROLES.index(own or "read") < REPO_ROLES.index("write"):
        return error(403, "Must have push access to view collaborator permission.", op)
    known = fake.user(request.match_info["username"])
    if known is None:
        return error(404, "Not Found", op)
    login, user_id = known
    role = fake.repo_role(repo, user_id)
    return web.json_response(
        bodies.collaborator_permission(_site(request), _api(request), login, user_id, role)
    )


def _installation_answer(
    fake: FakeGitHub, request: web.Request, found: Installation | None, op: str
) -> web.Response:
    app = fake.github_app
    if found is None or app is None:
        return error(404, "Not Found", op)
    account = _account(fake, request, found.account)
    return web.json_response(bodies.installation(_site(request), _api(request), app, found, account))


def _org_installation(fake: FakeGitHub, request: web.Request, _caller: Caller) -> web.Response:
    org = fake.orgs.get(request.match_info["org"].casefold())
    found = None if org is None else fake.installation_for(org.login)
    return _installation_answer(fake, request, found, "apps/get-org-installation")


def _repo_installation(fake: FakeGitHub, request: web.Request, _caller: Caller) -> web.Response:
    info = request.match_info
    repo = fake.repos.get(f"{info['owner']}/{info['repo']}".casefold())
    found = next((i for i in fake.installations.values() if repo is not None and i.covers(repo)), None)
    return _installation_answer(fake, request, found, "apps/get-repo-installation")


def _installation_token(fake: FakeGitHub, request: web.Request, _caller: Caller) -> web.Response:
    """201 with a ghs_ token good for `installation_token_ttl` seconds (GitHub: an hour)."""
    number = request.match_info["installation_id"]
    found = fake.installations.get(int(number)) if number.isdigit() else None
    if found is None:
        return error(404, "Not Found", "apps/create-installation-access-token")
    token, expires_at = fake.issue_installation_token(found)
    return web.json_response(bodies.installation_token(token, expires_at, found), status=201)


def _rate_limit(fake: FakeGitHub, _request: web.Request, caller: Caller) -> web.Response:
    """The caller's budget; GitHub answers it even when the budget is spent, without spending it."""
    budget, _ = fake.spend(rate_key(caller, fake)[0], free=True)
    core = {"limit": budget.limit, "remaining": budget.remaining, "reset": budget.reset, "used": budget.used}
    search = {"limit": 30, "remaining": 30, "reset": budget.reset, "used": 0}
    return web.json_response({"resources": {"core": core, "search": search}, "rate": core})


def _app(fake: FakeGitHub, request: web.Request, _caller: Caller) -> web.Response:
    app = fake.github_app
    if app is None:  # a JWT is only good once there is an app
        return error(404, "Not Found", "apps/get-authenticated")
    site, api = _site(request), _api(request)
    return web.json_response(bodies.github_app(site, api, app, len(fake.installations)))


_USER, _INSTALLATION, _APP = ("user",), ("installation",), ("app",)
ROUTES = (
    RestRoute(
        "orgs/get-membership-for-authenticated-user",
        "GET",
        "/user/memberships/orgs/{org}",
        _USER,
        _org_membership,
    ),
    RestRoute("orgs/list-for-authenticated-user", "GET", "/user/orgs", _USER, _user_orgs),
    RestRoute("teams/list-for-authenticated-user", "GET", "/user/teams", _USER, _user_teams),
    RestRoute(
        "teams/get-membership-for-user-in-org",
        "GET",
        "/orgs/{org}/teams/{team_slug}/memberships/{username}",
        _USER + _INSTALLATION,
        _team_membership,
    ),
    RestRoute(
        "orgs/check-membership-for-user",
        "GET",
        "/orgs/{org}/members/{username}",
        _USER + _INSTALLATION,
        _org_member,
    ),
    RestRoute("repos/get", "GET", "/repos/{owner}/{repo}", _USER + _INSTALLATION, _repo),
    RestRoute(
        "repos/get-collaborator-permission-level",
        "GET",
        "/repos/{owner}/{repo}/collaborators/{username}/permission",
        _USER + _INSTALLATION,
        _collaborator,
    ),
    RestRoute("apps/get-org-installation", "GET", "/orgs/{org}/installation", _APP, _org_installation),
    RestRoute(
        "apps/get-repo-installation", "GET", "/repos/{owner}/{repo}/installation", _APP, _repo_installation
    ),
    RestRoute("apps/get-authenticated", "GET", "/app", _APP, _app),
    RestRoute(
        "rate-limit/get", "GET", "/rate_limit", _USER + _INSTALLATION + _APP, _rate_limit, spends=False
    ),
    RestRoute(
        "apps/create-installation-access-token",
        "POST",
        "/app/installations/{installation_id}/access_tokens",
        _APP,
        _installation_token,
    ),
)
